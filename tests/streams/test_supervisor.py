"""The supervisor with real (small) child processes: restarts, give-ups, stopping in
waves, the state file and what `cluster down` does when the supervisor is gone.

The cluster itself (broker, workers, stations) under supervision is tested end to end in
``tests/cli/test_cluster.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from convergence.settings import load_settings
from convergence.streams.supervisor import (
    STATE_VERSION,
    Child,
    Cluster,
    ClusterError,
    ClusterPlan,
    ProcessRef,
    RestartPolicy,
    Supervisor,
    read_state,
    read_worker_infos,
    state_path,
    stop_recorded,
    write_worker_info,
)

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]
STUBBORN = [sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)"]


def _child(tmp_path: Path, argv: list[str], name: str = "worker 1", **kw: object) -> Child:
    return Child(name, "worker", argv, dict(os.environ), tmp_path / f"{name.replace(' ', '-')}.log",
                 **kw)  # type: ignore[arg-type]


def _until(cond: Callable[[], bool], timeout_s: float = 10.0,
           step: Callable[[], object] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        if step is not None:
            step()
        time.sleep(0.05)


def _log_has(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text()


def test_a_killed_worker_is_restarted_after_its_backoff_and_it_is_said_in_words(tmp_path: Path) -> None:
    said: list[str] = []
    sup = Supervisor(say=said.append, policy=RestartPolicy(first_delay_s=0.2))
    child = sup.add(_child(tmp_path, SLEEPER))
    _until(lambda: _log_has(child.log_path, "up"))
    old = child.ref
    assert old is not None and old.alive()
    os.kill(old.pid, signal.SIGKILL)
    _until(lambda: child.restarts == 1 and child.running, step=sup.poll)
    assert child.ref is not None and child.ref.pid != old.pid and child.ref.alive()
    assert not old.alive()
    assert said[0].startswith(f"worker 1 (pid {old.pid}) was killed by signal 9 (SIGKILL) after running")
    assert "restarting it in 0.2 s (restart 1)" in said[0]
    assert "other workers take over its partitions" in said[0]
    assert f"Last lines of its log ({child.log_path})" in said[0] and "| up" in said[0]
    assert said[1] == f"worker 1 restarted as pid {child.ref.pid} (restart 1; was pid {old.pid})"
    sup.stop([child], timeout_s=5.0)
    assert not child.running and child.exit_codes == [-9, -15]


def test_a_worker_that_keeps_failing_at_start_is_left_down(tmp_path: Path) -> None:
    said: list[str] = []
    sup = Supervisor(say=said.append, policy=RestartPolicy(first_delay_s=0.05, max_quick_failures=2))
    failing = [sys.executable, "-c", "import sys; print('bad config', flush=True); sys.exit(3)"]
    child = sup.add(_child(tmp_path, failing))
    _until(lambda: child.given_up, step=sup.poll)
    assert child.restarts == 2 and child.exit_codes == [3, 3, 3]
    assert "exited with code 3" in said[-1] and "failed 3 times in a row" in said[-1]
    assert "not restarting it again" in said[-1] and "| bad config" in said[-1]
    time.sleep(0.2)
    sup.poll()
    assert child.restarts == 2  # left down


def test_backoff_doubles_and_resets_after_a_stable_run() -> None:
    policy = RestartPolicy(first_delay_s=1.0, max_delay_s=30.0, stable_after_s=60.0)
    assert [policy.delay(n) for n in (1, 2, 3, 6, 9)] == [1.0, 2.0, 4.0, 30.0, 30.0]
    with pytest.raises(ValueError, match="max_quick_failures"):
        RestartPolicy(max_quick_failures=0)
    with pytest.raises(ValueError, match="first_delay_s"):
        RestartPolicy(first_delay_s=5.0, max_delay_s=1.0)
    now = [0.0]
    sup = Supervisor(say=lambda _t: None, policy=policy, clock=lambda: now[0])
    child = Child("x", "worker", [], {}, Path("/nonexistent"))
    child.proc = subprocess.Popen([sys.executable, "-c", "pass"])
    child.proc.wait()
    child.quick_failures = 4
    now[0] = 61.0  # ran longer than stable_after_s: a fresh streak
    sup.children.append(child)
    sup.poll()
    assert child.quick_failures == 1 and child.restart_at == 62.0


def test_stopping_kills_a_child_that_ignores_sigterm_and_says_so(tmp_path: Path) -> None:
    said: list[str] = []
    sup = Supervisor(say=said.append)
    child = sup.add(_child(tmp_path, STUBBORN))
    _until(lambda: _log_has(child.log_path, "ready"))
    started = time.monotonic()
    sup.stop([child], timeout_s=0.5)
    assert time.monotonic() - started < 5.0
    assert child.exit_codes == [-9]
    assert said == [f"worker 1 (pid {child.proc.pid if child.proc else '?'}) did not stop within "
                    f"0.5 s of SIGTERM; killing it (SIGKILL). Log {child.log_path}"]


def test_a_child_ending_at_its_deadline_is_finished_not_restarted(tmp_path: Path) -> None:
    said: list[str] = []
    sup = Supervisor(say=said.append, policy=RestartPolicy(first_delay_s=0.01))
    child = sup.add(_child(tmp_path, [sys.executable, "-c", "pass"], name="the station fleet",
                           deadline=time.monotonic()))
    _until(lambda: child.finished, step=sup.poll)
    sup.poll()
    assert child.restarts == 0 and said == []


def test_a_recycled_pid_is_not_our_process() -> None:
    me = ProcessRef.of(os.getpid())
    assert me.alive()
    if me.start_ticks is not None:  # Linux: the start time tells a recycled pid apart
        assert not ProcessRef(os.getpid(), me.start_ticks + 1).alive()
        assert not ProcessRef(os.getpid(), me.start_ticks + 1).signal(signal.SIGTERM)
    assert ProcessRef.from_dict(me.as_dict()) == me


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_down_stops_what_a_killed_supervisor_left_behind_and_is_idempotent(tmp_path: Path) -> None:
    log = (tmp_path / "w.log").open("wb")
    worker = subprocess.Popen(STUBBORN, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _until(lambda: _log_has(tmp_path / "w.log", "ready"))
    path = tmp_path / "state.json"
    path.write_text(json.dumps({
        "version": STATE_VERSION, "phase": "running",
        "supervisor": {"pid": _dead_pid(), "start_ticks": None},
        "workers": [{"name": "worker 0", "store": True, **ProcessRef.of(worker.pid).as_dict()}],
        "stations": None, "broker": {"bootstrap": "127.0.0.1:1", "local": False}}))
    said: list[str] = []
    state = stop_recorded(path, timeout_s=1.0, child_timeout_s=0.5, say=said.append)
    worker.wait(timeout=10)  # reaped here: it was this test's child
    assert state is not None and state["phase"] == "running"
    assert worker.returncode == -signal.SIGKILL
    assert said == [f"stopping worker 0 (pid {worker.pid})",
                    f"worker 0 (pid {worker.pid}) did not stop within 0.5 s of SIGTERM; killing it "
                    "(SIGKILL)"]
    assert not path.exists()
    assert stop_recorded(path, say=said.append) is None  # nothing left: a no-op


def test_a_second_cluster_on_the_same_data_dir_is_refused_and_the_first_keeps_its_record(
        tmp_path: Path) -> None:
    s = load_settings(env={"CONVERGENCE_DATA_DIR": str(tmp_path)}, config_path=None)
    sleeper = subprocess.Popen(SLEEPER, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        path = state_path(s)
        path.parent.mkdir(parents=True)
        record = {"version": STATE_VERSION, "phase": "running",
                  "supervisor": ProcessRef.of(sleeper.pid).as_dict(), "workers": []}
        path.write_text(json.dumps(record))
        cluster = Cluster(s, ClusterPlan(workers=1), say=lambda _t: None)
        with pytest.raises(ClusterError, match=f"a cluster already runs from {path.parent}"):
            cluster.prepare()
        cluster.shutdown(drain=False)
        assert read_state(path) == record  # untouched
    finally:
        sleeper.kill()
        sleeper.wait()


def test_worker_info_files_say_where_metrics_are_and_vanish_with_their_worker(tmp_path: Path) -> None:
    s = load_settings(env={"CONVERGENCE_DATA_DIR": str(tmp_path)}, config_path=None)
    mine = write_worker_info(s, metrics_port=9123, client_id="convergence-box-1")
    dead = mine.with_name("999999999.json")
    dead.write_text(json.dumps({"pid": _dead_pid(), "metrics_url": "http://x"}))
    infos = read_worker_infos(s)
    assert list(infos) == [os.getpid()]
    assert infos[os.getpid()]["metrics_url"] == "http://127.0.0.1:9123/metrics"
    assert not dead.exists()  # a killed worker's file is cleaned up by the reader


def test_cluster_plan_is_checked() -> None:
    with pytest.raises(ValueError, match="workers"):
        ClusterPlan(workers=0)
