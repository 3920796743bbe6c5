"""A study on a two-node Ray cluster started by the test on loopback (head 127.0.0.2, worker
127.0.0.3, token auth), driven by `overlock-nas search --address`, torn down afterwards."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from nas_testing import REPO, session_pids, subprocess_env, write_study

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_sessions(sids: list[int]) -> None:
    """SIGTERM every process of our `ray start` sessions, SIGKILL survivors after 3 s. Only
    processes this test started are touched (never a machine-wide `ray stop`)."""
    deadline = time.monotonic() + 20
    sig, term_until = signal.SIGTERM, time.monotonic() + 3
    while time.monotonic() < deadline:
        pids = [p for sid in sids for p in session_pids(sid)]
        if not pids:
            return
        if time.monotonic() > term_until:
            sig = signal.SIGKILL
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(0.3)


@pytest.fixture
def two_node_cluster():
    base = tempfile.mkdtemp(prefix="rc", dir="/tmp")   # short: Ray's socket paths are length-limited
    env = subprocess_env()
    env["RAY_AUTH_MODE"] = "token"          # ray 2.60 default; the CLI and the worker must know it
    env.pop("RAY_ADDRESS", None)
    port = free_port("127.0.0.2")
    address = f"127.0.0.2:{port}"
    sessions = []

    def ray_start(*args, ip, tmp):
        ports = ["--dashboard-agent-listen-port", str(free_port(ip)),
                 "--metrics-export-port", str(free_port(ip))]
        proc = subprocess.Popen(["ray", "start", *args, f"--node-ip-address={ip}", "--num-cpus=1",
                                 "--disable-usage-stats", f"--temp-dir={base}/{tmp}", *ports],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        sessions.append(proc.pid)
        out = proc.communicate(timeout=120)[0]
        assert proc.returncode == 0, out

    try:
        ray_start("--head", f"--port={port}", "--include-dashboard=false", ip="127.0.0.2", tmp="h")
        ray_start(f"--address={address}", ip="127.0.0.3", tmp="w")
        yield address, env
    finally:
        stop_sessions(sessions)
        shutil.rmtree(base, ignore_errors=True)
    assert not [p for sid in sessions for p in session_pids(sid)], "cluster processes left"


def test_study_runs_on_a_two_node_cluster(tmp_path, two_node_cluster):
    address, env = two_node_cluster
    study = write_study(tmp_path, trials=6, parallel=2, constraints={"flops": "2M"},
                        evaluator={"sleep_s": 1.0})
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(study), "--address", address],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Feasible Pareto front" in proc.stdout
    evals = [json.loads(line) for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
    nodes = {e["node"] for e in evals}
    assert len(nodes) == 2, nodes      # both nodes trained trials

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "run" / "study.log")))
    trials = optuna.load_study(study_name="tiny", storage=storage).get_trials()
    assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
    # weights came back to the driver's run directory from whichever node trained them
    for t in trials:
        if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("reused_from") is None:
            assert (tmp_path / "run" / t.user_attrs["weights"]).exists()
