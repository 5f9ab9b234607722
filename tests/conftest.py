"""Shared pytest configuration.

Compilation, not execution, dominates the suite's time on a CPU: every test process runs
with XLA's optimizations mostly disabled (the numbers stay the same up to rounding).
Subprocesses started by tests (the CLI, the 8-device run) compile normally. The test
processes run under the training app's XLA:CPU flags, as ``python -m train`` does.
"""

import jax

from train.platform import xla_flags

jax.config.update("jax_disable_most_optimizations", True)
xla_flags.apply()
