"""A context manager that counts XLA compilations, shared by the recompilation tests."""

from __future__ import annotations

import jax

#: jax.monitoring's event for one backend (XLA) compilation.
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class BackendCompiles:
    """Counts XLA compilations (jax.monitoring's backend-compile events) in a block.

    Example:
      >>> import numpy as np
      >>> x = np.ones(7, np.float32)
      >>> with BackendCompiles() as compiles:
      ...     _ = jax.jit(lambda x: x * 3.0)(x)
      >>> compiles.count
      1
    """

    def __enter__(self) -> BackendCompiles:
        self.count = 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        del duration, kwargs
        self.count += event == BACKEND_COMPILE_EVENT

    def __exit__(self, *exc: object) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)
