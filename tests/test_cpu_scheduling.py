"""train.platform.cpu_scheduling: a multi-process CPU run puts all its threads under SCHED_BATCH.

Each check runs in fresh processes, so that the test process keeps its own scheduling.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_scaling import _free_port
from train.platform import cpu_scheduling

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")

THREADS = """
import json, os, threading
from tests.test_scaling import _free_port
from train.platform import cpu_scheduling
os.nice(3)
stop = threading.Event()
before = threading.Thread(target=stop.wait)
before.start()
moved = cpu_scheduling.apply()
after = threading.Thread(target=stop.wait)
after.start()
print(json.dumps([moved, sorted(cpu_scheduling.policies()), os.nice(0)]))
stop.set()
"""


def _env(**env: str) -> dict[str, str]:
    """This environment without the opt-out, on the CPU, with ``env`` on top."""
    full = {k: v for k, v in os.environ.items() if k != cpu_scheduling.OPT_OUT}
    full.update({"JAX_PLATFORMS": "cpu", **env}, PYTHONPATH=str(REPO))
    return full


def _run(script: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_every_thread_started_before_or_after_is_batch_and_keeps_its_nice_value():
    out = _run(THREADS)
    assert out.returncode == 0, out.stderr[-2000:]
    moved, policies, nice = json.loads(out.stdout)
    assert moved >= 2  # the main thread and the one started before
    assert policies == [os.SCHED_BATCH]
    assert nice == min(19, os.nice(0) + 3)


def test_opting_out_changes_nothing():
    assert cpu_scheduling.apply({cpu_scheduling.OPT_OUT: "0"}) == 0
    assert cpu_scheduling.policies() == {os.SCHED_OTHER}


JOIN = """
import sys, jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from train import distributed
from train.platform import cpu_scheduling
from train.config import Config
port, process_id = sys.argv[1:3]
cpu_scheduling.apply()  # as train.cli.main does, before jax starts its threads
distributed.initialize(Config(
    coordinator_address=f"localhost:{port}", num_processes=2, process_id=int(process_id)))
mesh = Mesh(np.array(jax.devices()), ("data",))
x = jax.make_array_from_process_local_data(
    NamedSharding(mesh, P("data")), np.full((1, 4), int(process_id) + 1, np.float32))
total = jax.jit(jax.shard_map(
    lambda v: jax.lax.psum(v, "data"), mesh=mesh, in_specs=P("data"), out_specs=P("data")))(x)
print(float(total.addressable_shards[0].data[0, 0]), sorted(cpu_scheduling.policies()))
"""


@pytest.mark.slow
def test_the_processes_of_a_cpu_run_and_all_their_threads_are_batch_scheduled():
    port = _free_port()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(JOIN), str(port), str(i)],
            cwd=REPO,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [child.communicate(timeout=300) for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err[-2000:]
        # the all-reduce went through gloo's threads, started after the switch
        assert out.splitlines()[-1].split() == ["3.0", f"[{os.SCHED_BATCH}]"]


@pytest.mark.parametrize(
    ("platforms", "cpu_only"), [("cpu", True), ("cpu,cuda", False), ("tpu", False)]
)
def test_only_a_run_on_the_cpu_alone_changes_its_scheduling(monkeypatch, platforms, cpu_only):
    """Decided from the platforms named, before any backend starts (a GPU run is left
    alone)."""
    assert cpu_scheduling.cpu_only(platforms) == cpu_only
    if not cpu_only:  # (on the CPU it would switch this test process)
        monkeypatch.setattr(cpu_scheduling, "cpu_only", lambda: False)
        assert cpu_scheduling.apply() == 0
        assert cpu_scheduling.policies() == {os.SCHED_OTHER}


def test_the_cli_applies_it_to_a_multi_process_run_alone(monkeypatch):
    """``main`` switches before the run (and so before jax starts its threads), and only
    for a run of several processes."""
    from train import cli

    calls = []
    monkeypatch.setattr(cpu_scheduling, "apply", lambda: calls.append("apply") or 0)
    monkeypatch.setattr(cli, "_main", lambda *args: calls.append("run") or 0)
    assert cli.main(["--num-processes", "2", "--coordinator-address", "localhost:1"]) == 0
    assert calls == ["apply", "run"]
    calls.clear()
    assert cli.main(["--epochs", "1"]) == 0
    assert calls == ["run"]
