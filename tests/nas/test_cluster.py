"""A study on a two-node Ray cluster, run by following docs/how-to/cluster.md step by step.

The fenced blocks marked `<!-- cluster-step: NAME -->` in docs/how-to/cluster.md are run in order, each
in its own `bash` session that starts with the variables the previous blocks exported (as a user
typing them in one terminal would have). What the test changes, and why:

- `settings`: its variables get loopback values (head 127.0.0.2, worker 127.0.0.3, a free port, a
  tiny study using the scripted test evaluator); the test checks the block still names them.
- `ray start` gets `--num-cpus=1`, a private `--temp-dir`, free agent/metrics ports (and no
  dashboard on the head): two clusters of parallel tests on one machine must not collide.
- `ray stop` ends every Ray process of the user on the machine (other tests' clusters too), so it
  is replaced by stopping exactly the processes of this test's two `ray start` sessions.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from nas_testing import REPO, session_pids, subprocess_env, write_study

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DOC = REPO / "docs" / "how-to" / "cluster.md"
STEPS = ("token", "settings", "head", "worker", "status", "search", "stop")
SETTINGS = ("HEAD_IP", "RAY_PORT", "WORKER_IP", "STUDY")
# a shell function in front of every block: test-only flags for `ray start`, no machine-wide stop
RAY_WRAPPER = """
ray() {
  case "$1" in
    start) command ray "$@" $TEST_RAY_START_FLAGS ;;
    stop) echo "test: 'ray stop' replaced by stopping this test's own ray sessions" ;;
    *) command ray "$@" ;;
  esac
}
"""


def doc_steps() -> dict[str, str]:
    """{step name: bash text} of docs/how-to/cluster.md's `cluster-step` blocks."""
    text = DOC.read_text()
    found = re.findall(r"<!-- cluster-step: (\w+) -->\s*```bash\n(.*?)```", text, flags=re.S)
    return dict(found)


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


class Shell:
    """Runs doc blocks one after another, carrying exported variables between them."""

    def __init__(self, env: dict, base: str):
        self.env = env
        self.base = base
        self.sessions: list[int] = []
        self.outputs: dict[str, str] = {}

    def run(self, name: str, block: str, *, extra_env: dict | None = None, timeout: float = 180) -> str:
        env_file = os.path.join(self.base, f"env-{name}")
        script = f"set -euo pipefail\n{RAY_WRAPPER}\n{block}\nenv -0 > {env_file}\n"
        proc = subprocess.Popen(["bash", "-c", script], env={**self.env, **(extra_env or {})},
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        self.sessions.append(proc.pid)     # `ray start` daemons stay in this session
        out = proc.communicate(timeout=timeout)[0]
        assert proc.returncode == 0, f"docs/how-to/cluster.md step {name!r} failed:\n{block}\n{out}"
        with open(env_file) as f:
            carried = dict(item.split("=", 1) for item in f.read().split("\0") if "=" in item)
        self.env = {k: v for k, v in carried.items() if k != "TEST_RAY_START_FLAGS"}
        self.outputs[name] = out
        return out


def test_doc_steps_are_complete():
    steps = doc_steps()
    assert tuple(steps) == STEPS, f"docs/how-to/cluster.md cluster-step blocks: {tuple(steps)}"
    for name in SETTINGS:
        assert f"export {name}=" in steps["settings"], f"settings block no longer sets {name}"


def test_study_runs_on_a_two_node_cluster_as_documented(tmp_path):
    steps = doc_steps()
    study = write_study(tmp_path, trials=6, parallel=2, constraints={"flops": "2M"},
                        evaluator={"sleep_s": 1.0})
    base = tempfile.mkdtemp(prefix="rc", dir="/tmp")   # short: Ray's socket paths are length-limited
    env = subprocess_env()
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(var, None)
    shell = Shell(env, base)
    head_ip, worker_ip = "127.0.0.2", "127.0.0.3"
    loopback = {"HEAD_IP": head_ip, "RAY_PORT": str(free_port(head_ip)), "WORKER_IP": worker_ip,
                "STUDY": str(study)}

    def start_flags(ip: str, tmp: str, head: bool) -> str:
        flags = ["--num-cpus=1", f"--temp-dir={base}/{tmp}",
                 f"--dashboard-agent-listen-port={free_port(ip)}", f"--metrics-export-port={free_port(ip)}"]
        return " ".join(flags + (["--include-dashboard=false"] if head else []))

    try:
        token = shell.run("token", steps["token"]).strip().splitlines()[-1]
        assert shell.env["RAY_AUTH_MODE"] == "token" and shell.env["RAY_AUTH_TOKEN"] == token
        settings = "\n".join(f"export {k}={v}" for k, v in loopback.items())
        shell.run("settings", settings)
        shell.run("head", steps["head"], extra_env={"TEST_RAY_START_FLAGS": start_flags(head_ip, "h", True)})
        worker_env = {"TEST_RAY_START_FLAGS": start_flags(worker_ip, "w", False)}
        shell.run("worker", steps["worker"], extra_env=worker_env)
        # `ray start` returns before the worker has registered with the head: like a user, run
        # `ray status` again until both nodes are listed (the doc says so)
        deadline = time.monotonic() + 90
        while True:
            status = shell.run("status", steps["status"])
            joined = len(re.findall(r"^\s*1 node_\w+$", status, flags=re.M))
            if joined == 2 or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert joined == 2, status   # both joined
        out = shell.run("search", steps["search"], timeout=300)
        assert "Feasible Pareto front" in out, out

        evals = [json.loads(line) for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
        assert len({e["node"] for e in evals}) == 2, evals      # both nodes trained trials
        trials = _stored_trials(tmp_path / "run")
        assert len(trials) == 6 and all(t.state.is_finished() for t in trials)
        import optuna

        # weights came back to the driver's run directory from whichever node trained them
        for t in trials:
            if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("reused_from") is None:
                assert (tmp_path / "run" / t.user_attrs["weights"]).exists()

        # section 8: continue the study from a copy of the run directory ("another machine")
        moved = tmp_path / "moved-run"
        shutil.copytree(tmp_path / "run", moved, ignore=shutil.ignore_patterns("driver.lock"))
        shutil.rmtree(tmp_path / "run")
        before = len(evals)
        resume = subprocess.run(["bash", "-c", f"{steps['search'].strip()} --run-dir {moved} --trials 8"],
                                cwd=REPO, env=shell.env, capture_output=True, text=True, timeout=300)
        assert resume.returncode == 0, resume.stdout + resume.stderr
        assert len(_stored_trials(moved)) == 8
        seen = [json.loads(line) for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
        assert len(seen) - before <= 2, "a resumed study re-evaluated finished trials"
        assert not (tmp_path / "run").exists(), "the copy, not the old run dir, was continued"

        shell.run("stop", steps["stop"])
    finally:
        stop_sessions(shell.sessions)
        shutil.rmtree(base, ignore_errors=True)
    assert not [p for sid in shell.sessions for p in session_pids(sid)], "cluster processes left"


def _stored_trials(run_dir):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(run_dir / "study.log")))
    return optuna.load_study(study_name="tiny", storage=storage).get_trials()
