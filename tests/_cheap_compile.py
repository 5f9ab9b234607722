"""Cheap compilation, for the suite's own processes and the subprocesses that opt in.

Compilation, not execution, dominates the suite's time on a CPU. A process compiles cheaply
with

* most of XLA's optimizations disabled (``jax_disable_most_optimizations``; the numbers stay
  the same up to rounding), and
* :data:`XLA_FLAGS`: XLA:CPU generates its kernels with its element-wise emitters instead of
  its MLIR fusion emitters (``--xla_cpu_use_fusion_emitters=false``), which compile in about
  half the time and compute the same IEEE float32 operations.

A subprocess that checks what the app computes when optimized (bit-identical sums across
devices, the HLO of a data-parallel step) does not call :func:`environ`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from train.platform import xla_flags

# Set only where the installed jaxlib knows it: XLA ends the process on an unknown flag.
XLA_FLAGS: tuple[str, ...] = xla_flags.supported(
    since={"--xla_cpu_use_fusion_emitters=false": (0, 6, 0)}
)


def with_flags(xla_flags: str | None) -> str:
    """``xla_flags`` (an ``XLA_FLAGS`` value) with :data:`XLA_FLAGS` in front."""
    return " ".join([*XLA_FLAGS, xla_flags or ""]).strip()


def environ(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment of a CPU subprocess that compiles cheaply: ``base`` (default
    ``os.environ``) with ``extra`` and :data:`XLA_FLAGS` added to ``XLA_FLAGS``."""
    env = dict(os.environ if base is None else base, JAX_PLATFORMS="cpu")
    env.update(extra, JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    env["XLA_FLAGS"] = with_flags(env.get("XLA_FLAGS"))
    return env


def run_train(
    *args: str | os.PathLike, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m train ARGS`` from the repository root, in a subprocess that compiles
    cheaply (or runs under ``env``): its real exit status, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "train", *map(str, args)],
        cwd=Path(__file__).resolve().parents[1],
        env=environ() if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
