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


def pytest_collection_modifyitems(items):
    """The training app's doctests (train/) run its steps and epochs, which tests/test_loop.py
    and tests/test_cli.py cover: `make test-fast` leaves them to `make test`."""
    import pytest

    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.nodeid.startswith("train/"):
            item.add_marker(pytest.mark.slow)
