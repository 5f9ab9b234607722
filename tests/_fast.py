"""Which cases of a parametrized sweep `make test-fast` runs.

The full suite runs every case; the fast edit loop keeps a representative of the test
(the first cases, or those named) and leaves the others, marked ``slow``, to ``make test``.
Ids and order stay those of the plain values. ``several=True``: each value is the tuple
of several argnames' values, as ``pytest.mark.parametrize`` takes them.
"""

from collections.abc import Iterable
from typing import Any

import pytest


def slow(value: Any, several: bool = False) -> Any:
    """One parametrize value marked slow."""
    return pytest.param(*(value if several else (value,)), marks=pytest.mark.slow)


def slow_after(values: Iterable[Any], keep: int = 1, several: bool = False) -> list[Any]:
    """``values`` with all but the first ``keep`` marked slow."""
    return [v if i < keep else slow(v, several) for i, v in enumerate(values)]


def slow_unless(values: Iterable[Any], fast: Iterable[Any], several: bool = False) -> list[Any]:
    """``values`` with those not in ``fast`` marked slow."""
    fast = list(fast)
    return [v if v in fast else slow(v, several) for v in values]


def slow_without_jit(cls: type) -> type:
    """A ``chex.TestCase`` whose ``__without_jit`` variants are marked slow: `make test-fast`
    runs the jitted variant of each test."""
    for name in list(vars(cls)):
        if name.endswith("__without_jit"):
            setattr(cls, name, pytest.mark.slow(getattr(cls, name)))
    return cls
