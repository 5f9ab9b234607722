"""train.platform.xla_flags: the app's XLA:CPU flags reach XLA and yield to the user's own;
importing ``train`` changes no process-wide setting (the CLI's ``main`` applies them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.platform import xla_flags

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import os, re, jax, jax.numpy as jnp
import pytest

from train.platform import xla_flags
xla_flags.apply()
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


@pytest.mark.slow
def test_apply_sets_the_flags_and_xla_uses_them():
    flags, fusions = _run()
    assert flags.split() == list(xla_flags.supported())
    assert fusions == "custom-fusions 0"  # no XNNPACK/YNNPACK library fusion was formed


def test_a_users_own_flag_wins_and_others_are_kept():
    env = {"XLA_FLAGS": "--xla_cpu_experimental_xnn_fusion_type=dot --xla_cpu_ftz=false"}
    assert xla_flags.apply(env, jaxlib=(0, 8, 1)) == ("--xla_cpu_experimental_ynn_fusion_type=",)
    assert env["XLA_FLAGS"].split() == [
        "--xla_cpu_experimental_ynn_fusion_type=",
        "--xla_cpu_experimental_xnn_fusion_type=dot",
        "--xla_cpu_ftz=false",
    ]


@pytest.mark.parametrize(
    "env", [{xla_flags.OPT_OUT: "0"}, {xla_flags.OPT_OUT: " Off"}, {"JAX_PLATFORMS": "cuda"}]
)
def test_opting_out_or_another_platform_sets_nothing(env):
    assert xla_flags.apply(env) == ()
    assert "XLA_FLAGS" not in env


IMPORT_ALL = """
import importlib, logging, os, pkgutil, sys
hook = sys.unraisablehook
import train, models
for package in (train, models):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module.name not in ("train.__main__", "train.cli"):
            importlib.import_module(module.name)
import train.cli
import jax.numpy as jnp
jnp.ones(2).block_until_ready()
print(repr(os.environ.get("XLA_FLAGS")), os.sched_getscheduler(0))
print([n for n in ("absl", "asyncio") if logging.getLogger(n).filters])
print(sys.unraisablehook is hook)
"""


@pytest.mark.slow
def test_importing_train_and_models_changes_no_process_wide_setting():
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL],
        env={**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "JAX_PLATFORMS": "cpu",
             "PYTHONPATH": str(ROOT)},
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == [f"None {os.SCHED_OTHER}", "[]", "True"]


def test_in_effect_reports_the_flags_xla_flags_names():
    env = {"XLA_FLAGS": "--xla_dump_to=/d"}
    assert xla_flags.in_effect(env) == ()
    assert xla_flags.apply(env) == xla_flags.CPU_FLAGS
    assert xla_flags.in_effect(env) == xla_flags.CPU_FLAGS


def test_subprocesses_of_the_suite_inherit_the_app_flags_and_not_the_test_only_ones():
    from tests import _cheap_compile

    inherited = os.environ.get("XLA_FLAGS", "").split()
    assert set(xla_flags.supported()) <= set(inherited)
    assert not set(_cheap_compile.XLA_FLAGS) & set(inherited)


@pytest.mark.parametrize(
    ("jaxlib", "flags"),
    [
        ((0, 4, 33), ()),
        ((0, 7, 0), ("--xla_cpu_experimental_xnn_fusion_type=",)),
        ((0, 8, 0), ("--xla_cpu_experimental_xnn_fusion_type=",)),
        ((0, 8, 1), xla_flags.CPU_FLAGS),
        ((0, 10, 2), xla_flags.CPU_FLAGS),
    ],
)
def test_only_the_flags_of_the_installed_jaxlib_are_set(jaxlib, flags):
    """XLA ends the process on an unknown flag: jaxlib 0.8.0 rejects the YNNPACK one and
    0.6.2 both (each tried in a venv of its own)."""
    env: dict[str, str] = {}
    assert xla_flags.apply(env, jaxlib=jaxlib) == flags
    assert env.get("XLA_FLAGS", "").split() == list(flags)


def test_the_installed_jaxlib_is_read_from_its_metadata():
    import jaxlib.version

    assert xla_flags.jaxlib_version() == jaxlib.version.__version_info__[:3]
