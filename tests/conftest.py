"""Shared pytest configuration."""

import os

# Keep XLA from grabbing every core's worth of threads per pytest-xdist worker.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
