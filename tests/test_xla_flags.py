"""train.xla_flags: the training app's XLA:CPU flags reach XLA and yield to the user's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from train import xla_flags

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import os, re, jax, jax.numpy as jnp
import train
f = jax.jit(lambda a, b: jnp.tanh(a @ b) + 1.0)
hlo = f.lower(jnp.ones((64, 64)), jnp.ones((64, 64))).compile().as_text()
print(os.environ.get("XLA_FLAGS", ""))
print("custom-fusions", len(re.findall(r"kind=kCustom", hlo)))
"""


def _run(**env: str) -> list[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_flags.OPT_OUT)}
    full.update(env, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=full, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.splitlines()


def test_importing_train_sets_the_flags_and_xla_uses_them():
    flags, fusions = _run()
    assert flags.split() == list(xla_flags.CPU_FLAGS)
    assert fusions == "custom-fusions 0"  # no XNNPACK/YNNPACK library fusion was formed


def test_a_users_own_flag_wins_and_others_are_kept():
    flags, _ = _run(XLA_FLAGS="--xla_cpu_experimental_xnn_fusion_type=dot --xla_cpu_ftz=false")
    assert flags.split() == [
        "--xla_cpu_experimental_ynn_fusion_type=",
        "--xla_cpu_experimental_xnn_fusion_type=dot",
        "--xla_cpu_ftz=false",
    ]


def test_opting_out_sets_nothing():
    flags, _ = _run(**{xla_flags.OPT_OUT: "0"})
    assert flags == ""
