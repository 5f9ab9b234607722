"""pytest plugin of `make test-min-deps`: newer jax names the tests use, on older jax.

The library itself needs none of this; only the tests call these names, which jax added
after the library's lowest supported version.
"""

import jax

if not hasattr(jax, "enable_x64"):  # top-level since jax 0.8.0
    from jax.experimental import enable_x64

    jax.enable_x64 = enable_x64
