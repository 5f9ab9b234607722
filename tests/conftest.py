"""Shared pytest configuration.

Every test process compiles cheaply (``tests/_cheap_compile.py``: most of XLA's
optimizations off, XLA:CPU's element-wise emitters) and runs under the training app's
XLA:CPU flags, as ``python -m train`` does. Subprocesses started by tests inherit only the
app's flags: the test-only XLA flags are in ``XLA_FLAGS`` while this process starts its
backend, which is when XLA reads them, and are taken out again afterwards. The subprocesses
that need no optimized code opt in to cheap compilation with ``_cheap_compile.environ``.
"""

import os

import jax

from tests import _cheap_compile
from train.platform import xla_flags


def _start_backend_with_test_only_flags() -> None:
    app_flags = os.environ.get("XLA_FLAGS")
    os.environ["XLA_FLAGS"] = _cheap_compile.with_flags(app_flags)
    try:
        jax.devices()
    finally:
        if app_flags is None:
            del os.environ["XLA_FLAGS"]
        else:
            os.environ["XLA_FLAGS"] = app_flags


jax.config.update("jax_disable_most_optimizations", True)
xla_flags.apply()
_start_backend_with_test_only_flags()


def pytest_collection_modifyitems(items):
    """The training app's doctests (train/) run its steps and epochs, which tests/test_loop.py
    and tests/test_cli.py cover: `make test-fast` leaves them to `make test`."""
    import pytest

    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.nodeid.startswith("train/"):
            item.add_marker(pytest.mark.slow)
