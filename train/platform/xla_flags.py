"""XLA:CPU flags of the training app, set in ``XLA_FLAGS`` before jax starts its backends.

:func:`apply` is called by :func:`train.cli.main` and by each benchmark's entry point,
before anything runs jax code. XLA reads ``XLA_FLAGS`` once, when jax creates its first
backend (the first ``jax.devices()`` or computation), not when ``jax`` is imported; in a
process that has already run jax code :func:`apply` changes nothing and returns ``()``.

The flags (the timings are in ``benchmarks/results/vs_pytorch-cpu.md``):

* ``--xla_cpu_experimental_ynn_fusion_type=`` and ``--xla_cpu_experimental_xnn_fusion_type=``
  (empty: no fusion kinds) stop XLA:CPU from handing fusions of the training step to its
  YNNPACK/XNNPACK library fusions, which on these small convolutional networks run several
  times slower than XLA's own code and Eigen's convolutions. Numerics stay float32 IEEE:
  nothing here enables fast math.

Only XLA:CPU reads ``xla_cpu_*`` flags, so GPU and TPU compilations are unaffected; with
``JAX_PLATFORMS`` naming no ``cpu`` the flags are not set at all.

Only the flags the installed jaxlib knows are set (:data:`SINCE`): XLA ends the process on
a flag it does not know, and an XLA that lacks a flag also lacks the library fusion it
turns off.

Overriding: a flag the user already names in their own ``XLA_FLAGS`` (with any value) is
left as the user set it; ``POLYAK_OPTAX_XLA_CPU_FLAGS=0`` sets none of them.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import sys
from collections.abc import Mapping, MutableMapping

from train.platform._opt_out import opted_out

__all__ = ["CPU_FLAGS", "OPT_OUT", "SINCE", "apply", "in_effect", "jaxlib_version", "supported"]

# Each flag with the first jaxlib whose XLA knows it.
SINCE: dict[str, tuple[int, ...]] = {
    "--xla_cpu_experimental_ynn_fusion_type=": (0, 8, 1),
    "--xla_cpu_experimental_xnn_fusion_type=": (0, 7, 0),
}
CPU_FLAGS: tuple[str, ...] = tuple(SINCE)
OPT_OUT = "POLYAK_OPTAX_XLA_CPU_FLAGS"


def jaxlib_version() -> tuple[int, ...]:
    """The installed jaxlib's release as numbers, e.g. ``(0, 8, 1)`` (``(0,)`` without
    jaxlib); read from its metadata, without importing it."""
    try:
        text = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return (0,)
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def supported(
    jaxlib: tuple[int, ...] | None = None, since: Mapping[str, tuple[int, ...]] = SINCE
) -> tuple[str, ...]:
    """The flags of ``since`` (default :data:`SINCE`, the app's) that jaxlib ``jaxlib``
    (default: the installed one) knows; ``since`` maps each flag to its first jaxlib.

    Example:
      >>> supported((0, 7, 2))
      ('--xla_cpu_experimental_xnn_fusion_type=',)
      >>> supported((0, 6, 2))
      ()
    """
    version = jaxlib_version() if jaxlib is None else tuple(jaxlib)
    return tuple(flag for flag, first in since.items() if version >= first)


def _flag_name(token: str) -> str:
    return token.split("=", 1)[0].lstrip("-")


def _backends_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bridge is not None and bridge.backends_are_initialized()


def apply(
    environ: MutableMapping[str, str] | None = None, jaxlib: tuple[int, ...] | None = None
) -> tuple[str, ...]:
    """Adds the :func:`supported` flags the user has not set to ``XLA_FLAGS``; returns those
    added.

    Args:
      environ: the environment to change (default ``os.environ``).
      jaxlib: the jaxlib version whose flags to set (default: the installed one's).

    Returns:
      The flags added (empty when opted out, when the platforms exclude the CPU, when the
      user sets them all, or when jax's backends already started).

    Example:
      >>> env = {"XLA_FLAGS": "--xla_cpu_experimental_xnn_fusion_type=dot --xla_dump_to=/d"}
      >>> apply(env, jaxlib=(0, 9, 0))
      ('--xla_cpu_experimental_ynn_fusion_type=',)
      >>> for flag in env["XLA_FLAGS"].split():  # the user's own flags come after ours
      ...     print(flag)
      --xla_cpu_experimental_ynn_fusion_type=
      --xla_cpu_experimental_xnn_fusion_type=dot
      --xla_dump_to=/d
      >>> apply({"JAX_PLATFORMS": "cuda"}), apply({OPT_OUT: "0"}), apply({}, jaxlib=(0, 6, 2))
      ((), (), ())
    """
    env = os.environ if environ is None else environ
    if opted_out(env, OPT_OUT):
        return ()
    platforms = [p.strip() for p in env.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms and "cpu" not in platforms:
        return ()
    if environ is None and _backends_started():
        return ()
    user = env.get("XLA_FLAGS", "").split()
    named = {_flag_name(t) for t in user}
    added = tuple(f for f in supported(jaxlib) if _flag_name(f) not in named)
    if added:
        env["XLA_FLAGS"] = " ".join((*added, *user))
    return added


def in_effect(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The flags of :data:`CPU_FLAGS` that ``XLA_FLAGS`` names, as it sets them (for reports).

    Example:
      >>> in_effect({"XLA_FLAGS": "--xla_dump_to=/d --xla_cpu_experimental_xnn_fusion_type=dot"})
      ('--xla_cpu_experimental_xnn_fusion_type=dot',)
    """
    env = os.environ if environ is None else environ
    ours = {_flag_name(f) for f in CPU_FLAGS}
    return tuple(t for t in env.get("XLA_FLAGS", "").split() if _flag_name(t) in ours)
