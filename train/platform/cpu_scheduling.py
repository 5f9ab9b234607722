"""Batch scheduling (Linux ``SCHED_BATCH``) for the CPU processes of a multi-process run.

Between processes, XLA:CPU's collectives go through gloo over TCP. Gloo's loop thread
handles a socket only when it can take its connection's lock (``try_lock``) and otherwise
asks epoll again at once, and epoll keeps reporting the socket ready. When data arrives,
the kernel wakes the loop thread and, by wakeup preemption, lets it displace the running
thread of the same process, which may be the one holding that lock; on a busy core the
loop thread then spins until the scheduler's next tick (``CONFIG_HZ=250``: every 4 ms).
Under ``SCHED_BATCH`` a woken thread never preempts: the lock holder finishes, and the loop
thread runs when a core is free. An all-reduce between 2 CPU processes (431,082
float32 between 2 processes) is several times faster under ``SCHED_BATCH``
(``benchmarks/NOTES.md``, scaling).

:func:`apply` switches every thread of this process, and so every thread it starts later,
to ``SCHED_BATCH`` (allowed without privileges; the nice value is kept), when the process
runs on the CPU alone. :func:`train.cli.main` calls it for a multi-process run, before
jax starts its threads; ``POLYAK_OPTAX_SCHED_BATCH=0`` leaves the scheduling alone.
Elsewhere (not Linux) it does nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pkgutil
from collections.abc import Mapping

from train.platform._opt_out import opted_out

__all__ = ["OPT_OUT", "apply", "cpu_only", "policies"]

OPT_OUT = "POLYAK_OPTAX_SCHED_BATCH"


def _thread_ids() -> list[int]:
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:  # no procfs: the calling thread alone
        return [0]


def policies() -> set[int]:
    """The scheduling policies of this process's threads (``os.SCHED_*`` values).

    Example:
      >>> import os
      >>> policies() <= {os.SCHED_OTHER, os.SCHED_BATCH, os.SCHED_IDLE, os.SCHED_FIFO,
      ...                os.SCHED_RR}
      True
    """
    found = set()
    for tid in _thread_ids():
        with contextlib.suppress(OSError):  # the thread has exited
            found.add(os.sched_getscheduler(tid))
    return found


def cpu_only(platforms: str | None = None) -> bool:
    """Whether this process will run on the CPU alone: ``platforms`` (default: jax's
    ``jax_platforms``, from ``JAX_PLATFORMS``) names the CPU alone, or it is empty and no
    GPU or TPU plugin is installed (decided without starting a backend).

    Example:
      >>> cpu_only("cpu"), cpu_only("cpu,cuda"), cpu_only("tpu")
      (True, False, False)
    """
    if platforms is None:
        import jax

        platforms = jax.config.jax_platforms
    named = [p.strip() for p in str(platforms or "").split(",") if p.strip()]
    if named:
        return named == ["cpu"]
    try:
        import jax_plugins  # the namespace of the CUDA and ROCm plugins
    except ImportError:
        plugins = False
    else:
        plugins = any(True for _ in pkgutil.iter_modules(jax_plugins.__path__))
    return not plugins and importlib.util.find_spec("libtpu") is None


def apply(environ: Mapping[str, str] | None = None) -> int:
    """Puts every thread of this process under ``SCHED_BATCH``; returns how many it moved.

    Threads under a real-time or idle policy, and threads that exit meanwhile, are left
    alone. Returns 0 when opted out (``POLYAK_OPTAX_SCHED_BATCH=0``), when the process
    may use a GPU or TPU (:func:`cpu_only`), or where the platform has no ``SCHED_BATCH``.

    Example:
      >>> apply({OPT_OUT: "0"})
      0
    """
    env = os.environ if environ is None else environ
    if opted_out(env, OPT_OUT):
        return 0
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None or not hasattr(os, "sched_setscheduler") or not cpu_only():
        return 0
    moved = 0
    for tid in _thread_ids():
        try:
            if os.sched_getscheduler(tid) != os.SCHED_OTHER:
                continue
            os.sched_setscheduler(tid, batch, os.sched_param(0))
            moved += 1
        except OSError:  # exited, or a policy this process may not change
            pass
    return moved
