"""Several processes, one run: ``jax.distributed`` plus the few checks a run needs.

``python -m train --coordinator-address HOST:PORT --num-processes P --process-id I`` (or,
with none of the three, JAX's own detection on SLURM and the other clusters it knows,
when the job has several tasks) calls ``jax.distributed.initialize`` before anything
touches a device; on CPU it selects the gloo collectives first (:func:`train.cli.main`
has put the process under ``SCHED_BATCH`` already: :mod:`train.platform.cpu_scheduling`).
Every process then runs the same :func:`train.run.run` over a mesh of all devices.

What plain ``jax.distributed`` does not give, built on its key-value store:

* :func:`initialize` compares every process's flags with process 0's (a process count
  that disagrees with the coordinator, for example) and fails in every process;
* :func:`report_failure` posts a process's one-line error, and :func:`check_peers`, which
  the training loop calls while it waits for an epoch, ends the others with that line;
* :func:`barrier` waits for all processes with a timeout, watching for posted failures,
  so that a process that died without a word (``kill -9``) ends the others after at
  most ``--barrier-timeout`` seconds instead of a hang.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from typing import Any

import jax

from train.config import Config

_PREFIX = "polyak_optax/train"
_FIELDS = ("coordinator_address", "num_processes", "process_id")
_state: dict[str, Any] = {"initialized": False, "timeout": 300.0, "barriers": 0}


class DistributedError(ValueError):
    """A process failed, disagrees, or cannot be reached (one line)."""


def requested(config: Config) -> bool:
    """Whether ``config`` (or the cluster's environment) asks for several processes."""
    if any(getattr(config, name) is not None for name in _FIELDS):
        return config.num_processes != 1
    return _cluster_tasks() > 1


def _cluster_tasks() -> int:
    """Tasks of a SLURM or Open MPI job (where JAX's cluster detection applies), else 1."""
    for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def initialize(config: Config) -> None:
    """Starts ``jax.distributed`` if ``config`` asks for several processes (else nothing).

    Raises:
      DistributedError: the coordinator cannot be reached within ``--barrier-timeout``
        seconds, or this process's flags differ from process 0's.
    """
    if _state["initialized"] or not requested(config):
        return
    timeout = config.barrier_timeout
    if config.coordinator_address is None and config.num_processes is not None:
        raise DistributedError("--num-processes: needs --coordinator-address HOST:PORT")
    if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    deadline = time.monotonic() + timeout
    if config.coordinator_address is not None and config.process_id not in (None, 0):
        _wait_for_coordinator(config.coordinator_address, timeout, deadline)
    where = config.coordinator_address or "the coordinator of the cluster"
    who = (
        "this process"
        if config.process_id is None
        else f"process {config.process_id} of {config.num_processes}"
    )
    joined = _watch_the_join(
        deadline,
        f"cannot join the run at {where} as {who}: the other process(es) did not join "
        f"within --barrier-timeout {timeout:g}s",
    )
    try:
        jax.distributed.initialize(
            coordinator_address=config.coordinator_address,
            num_processes=config.num_processes,
            process_id=config.process_id,
            # jaxlib's own deadline aborts the process with a stack trace (a LOG(FATAL) in
            # its connect): the watchdog above ends it first, with one line.
            initialization_timeout=int(timeout) + 60,
            heartbeat_timeout_seconds=max(10, int(timeout)),
            shutdown_timeout_seconds=max(10, int(timeout)),
        )
    except Exception as error:  # jaxlib raises XlaRuntimeError, ValueError, RuntimeError
        raise DistributedError(
            f"cannot join the run at {where} as {who} within {timeout:g}s: {_one_line(error)}"
        ) from None
    finally:
        joined()
    _state.update(initialized=True, timeout=timeout)
    _check_same_flags(config)


def _watch_the_join(deadline: float, message: str) -> Any:
    """Ends the process with ``message`` (one line, exit 1) at ``deadline`` unless the
    returned function is called first.

    ``jax.distributed.initialize`` blocks (with the GIL released) until every process
    has registered with the coordinator, and when its own deadline passes jaxlib aborts
    the process with a stack trace: no Python exception to catch, so a thread keeps the
    deadline instead.
    """
    lock, done = threading.Lock(), threading.Event()

    def watch() -> None:
        if done.wait(max(1.0, deadline - time.monotonic())):
            return
        with lock:
            if done.is_set():
                return
            sys.stdout.flush()
            print(f"python -m train: error: {message}", file=sys.stderr, flush=True)
            # The main thread is blocked inside jaxlib, where no exception reaches it, and a
            # normal exit would wait for it: only _exit ends the process.
            os._exit(1)

    def joined() -> None:
        with lock:
            done.set()

    threading.Thread(target=watch, name="join-watchdog", daemon=True).start()
    return joined


def _wait_for_coordinator(address: str, timeout: float, deadline: float) -> None:
    """Waits until the coordinator accepts connections: jaxlib's own connect aborts the
    process with a stack trace when it cannot reach it."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"--coordinator-address: expected HOST:PORT, got {address!r}")
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"cannot join the run at {address}: the coordinator (process 0) did not "
                    f"answer within --barrier-timeout {timeout:g}s ({error})"
                ) from None
            time.sleep(0.2)


def active() -> bool:
    """Whether this process is one of several under ``jax.distributed``."""
    return _state["initialized"]


def process_index() -> int:
    """This process's index (0 in a single-process run)."""
    return jax.process_index() if active() else 0


def _client() -> Any:
    from jax._src import distributed

    return distributed.global_state.client


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:500]


def _check_same_flags(config: Config) -> None:
    """Every process must run process 0's config (all but ``--process-id``)."""
    client, me = _client(), jax.process_index()
    mine = json.dumps({**config.to_json(), "process_id": None}, sort_keys=True)
    client.key_value_set(f"{_PREFIX}/flags/{me}", mine)
    timeout_ms = int(1000 * _state["timeout"])
    try:
        theirs = (
            mine if me == 0 else client.blocking_key_value_get(f"{_PREFIX}/flags/0", timeout_ms)
        )
    except Exception as error:
        raise DistributedError(f"process 0's flags did not arrive: {_one_line(error)}") from None
    if theirs != mine:
        raise DistributedError(f"process {me}: {_difference(mine, theirs)}")
    if me == 0:
        count = config.num_processes or jax.process_count()
        for other in range(1, count):
            try:
                flags = client.blocking_key_value_get(f"{_PREFIX}/flags/{other}", timeout_ms)
            except Exception as error:
                raise DistributedError(
                    f"process {other} did not report within {_state['timeout']:g}s: "
                    f"{_one_line(error)}"
                ) from None
            if flags != mine:
                raise DistributedError(f"process {other}: {_difference(flags, mine)}")


def _difference(mine: str, theirs: str) -> str:
    a, b = json.loads(mine), json.loads(theirs)
    names = [k for k in sorted(a) if a.get(k) != b.get(k)]
    shown = ", ".join(f"--{k.replace('_', '-')} {a.get(k)} (process 0: {b.get(k)})" for k in names)
    return f"its flags differ from process 0's: {shown}"


def broadcast(name: str, make: Any, *args: Any) -> str:
    """Process 0's ``make(*args)`` (a string) in every process."""
    if not active():
        return make(*args)
    key = f"{_PREFIX}/broadcast/{name}"
    if jax.process_index() == 0:
        value = make(*args)
        _client().key_value_set(key, value)
        return value
    return _client().blocking_key_value_get(key, int(1000 * _state["timeout"]))


def report_failure(message: str) -> None:
    """Posts this process's one-line error for the others (:func:`check_peers`)."""
    if not active():
        return
    with contextlib.suppress(Exception):  # the coordinator may be gone already
        _client().key_value_set(
            f"{_PREFIX}/failed/{jax.process_index()}", message, allow_overwrite=True
        )


def check_peers() -> None:
    """Raises :class:`DistributedError` with another process's posted failure, if any."""
    if not active():
        return
    try:
        posted = _client().key_value_dir_get(f"{_PREFIX}/failed/")
    except Exception as error:
        raise DistributedError(f"lost the coordinator (process 0): {_one_line(error)}") from None
    me = str(jax.process_index())
    for key, message in sorted(posted):
        who = key.rsplit("/", 1)[-1]
        if who != me:
            raise DistributedError(f"process {who} failed: {message}")


def barrier(name: str, value: str = "") -> list[str]:
    """Waits until every process reaches ``name``; returns their ``value``s in order.

    Raises:
      DistributedError: a process posted a failure, or not all arrived within
        ``--barrier-timeout`` seconds (a process died or hangs).
    """
    if not active():
        return [value]
    _state["barriers"] += 1
    client, count = _client(), jax.process_count()
    key = f"{_PREFIX}/barrier/{_state['barriers']}-{name}/"
    client.key_value_set(f"{key}{jax.process_index()}", value)
    deadline = time.monotonic() + _state["timeout"]
    while True:
        check_peers()
        arrived = dict(client.key_value_dir_get(key))
        if len(arrived) >= count:
            return [arrived[f"{key}{i}"] for i in range(count)]
        if time.monotonic() > deadline:
            missing = [i for i in range(count) if f"{key}{i}" not in arrived]
            raise DistributedError(
                f"process(es) {', '.join(map(str, missing))} did not reach {name} within "
                f"--barrier-timeout {_state['timeout']:g}s (dead or hung); stopping all"
            )
        time.sleep(0.05)


def exit_now(code: int) -> None:
    """Ends this process at once (no shutdown barrier that a dead peer would hold up)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if process_index() == 0:
        time.sleep(1.0)  # the coordinator: let the others read the failure first
    # A normal exit runs jax.distributed's shutdown, a barrier that a dead or failed peer
    # never reaches (it would wait --barrier-timeout seconds, then abort with a trace).
    os._exit(code)
