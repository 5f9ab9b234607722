"""pytest plugin of `make test-min-deps`: newer jax names the tests use, on older jax.

The library itself needs none of this; only the tests call these names, which jax added
after the library's lowest supported version.
"""

import jax

if not hasattr(jax, "enable_x64"):  # top-level since jax 0.8.0
    from jax.experimental import enable_x64

    jax.enable_x64 = enable_x64

if not hasattr(jax.monitoring, "unregister_event_duration_listener"):  # public since jax 0.4.36
    from jax._src import monitoring

    jax.monitoring.unregister_event_duration_listener = (
        monitoring._unregister_event_duration_listener_by_callback
    )

# The tests' random data: jax 0.5.0 made the partitionable threefry the default.
if tuple(int(part) for part in jax.__version__.split(".")[:2]) < (0, 5):
    jax.config.update("jax_threefry_partitionable", True)
