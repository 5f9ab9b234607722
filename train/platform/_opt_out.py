"""The environment switches that turn off one of the training app's automatic settings.

``POLYAK_OPTAX_XLA_CPU_FLAGS`` (:mod:`train.platform.xla_flags`) and ``POLYAK_OPTAX_SCHED_BATCH``
(:mod:`train.platform.cpu_scheduling`) read alike: unset or any other value keeps the setting on;
``0``, ``false``, ``no`` or ``off`` (any case, surrounding spaces ignored) turns it off.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["opted_out"]

_OFF = ("0", "false", "no", "off")


def opted_out(environ: Mapping[str, str], name: str) -> bool:
    """Whether ``environ[name]`` turns the setting off.

    Example:
      >>> opted_out({"X": " Off"}, "X"), opted_out({"X": "1"}, "X"), opted_out({}, "X")
      (True, False, False)
    """
    return environ.get(name, "1").strip().lower() in _OFF
