"""`overlock-nas search` end to end in subprocesses: a full run, Ctrl-C, `kill -9` and resume."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from nas.cli import main
from nas.engine import DriverLock
from nas_testing import REPO, session_pids, subprocess_env, write_study

SEARCH = [sys.executable, "-m", "nas.cli", "search"]


def start(study: Path, *extra: str) -> subprocess.Popen:
    # own session: like a terminal's foreground job, and every process it starts is findable
    return subprocess.Popen([*SEARCH, str(study), *extra], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def kill_session(sid: int) -> int:
    """SIGKILL every process left in session `sid` (the Ray processes of a killed driver);
    returns how many there were at first."""
    first = None
    for _ in range(20):
        pids = session_pids(sid)
        first = len(pids) if first is None else first
        if not pids:
            return first
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return first


def trials(run: Path) -> list:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not (run / "study.log").exists():
        return []
    storage = JournalStorage(JournalFileBackend(str(run / "study.log")))
    if not optuna.get_all_study_summaries(storage):
        return []
    return optuna.load_study(study_name="tiny", storage=storage).get_trials()


def wait_complete(proc, run: Path, n: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if sum(t.state == TrialState.COMPLETE for t in trials(run)) >= n:
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.3)
    raise AssertionError(f"fewer than {n} complete trials after {timeout} s")


def test_search_runs_a_study_and_says_what_next(tmp_path):
    study = write_study(tmp_path, trials=5, parallel=2, constraints={"flops": "2M"})
    proc = subprocess.run([*SEARCH, str(study)], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Feasible Pareto front" in out and "Traceback" not in out + proc.stderr
    run = tmp_path / "run"
    assert f"overlock-nas report {run}" in out
    assert f"overlock-nas export {run} --trial " in out
    assert "GMACs (fvcore; the paper's FLOPs), 1x3x32x32" in out
    assert (run / "study.yaml").exists() and (run / "study.log").exists()
    assert len(trials(run)) == 5 and all(t.state != TrialState.RUNNING for t in trials(run))


def test_bad_study_file_and_busy_run_dir_are_one_line_errors(tmp_path):
    runner = CliRunner()
    bad = write_study(tmp_path, constraints={"flops": -1})
    res = runner.invoke(main, ["search", str(bad)])
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {bad}: constraints.flops: must be a number > 0, got -1"
    good = write_study(tmp_path)
    with DriverLock(tmp_path / "run"):
        res = runner.invoke(main, ["search", str(good)])
    last = res.output.strip().splitlines()[-1]     # after the study's header line
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert last.startswith(f"Error: {tmp_path / 'run'}: another overlock-nas search is running "
                           "on this run directory (pid ")


@pytest.mark.parametrize("sampler, words", [
    ({"name": "nsga2", "population_size": 1}, "sampler.population_size: must be an integer >= 2, got 1"),
    ({"name": "tpe", "n_startup": 3}, "sampler.n_startup"),
])
def test_bad_sampler_options_are_one_line(tmp_path, sampler, words):
    """Before: validated only by name; Optuna raised from inside the engine (a traceback)."""
    study = write_study(tmp_path, sampler=sampler)
    res = CliRunner().invoke(main, ["search", str(study)])
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {study}: ") and words in lines[0], res.output
    assert not (tmp_path / "run" / "study.log").exists()


def test_search_refuses_a_damaged_journal_and_leaves_it_alone(tmp_path):
    """Before: a truncated journal was resumed - Optuna skipped the cut record and the driver
    appended after the broken line; a corrupt one gave a JSONDecodeError traceback."""
    import shutil

    study = write_study(tmp_path, trials=2)
    proc = subprocess.run([*SEARCH, str(study)], cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for damage in ("truncated", "corrupt"):
        run = tmp_path / damage
        shutil.copytree(tmp_path / "run", run)
        journal = run / "study.log"
        data = journal.read_bytes()
        data = data[:-7] if damage == "truncated" else data.replace(b"\n", b"\n}{oops\n", 1)
        journal.write_bytes(data)
        res = CliRunner().invoke(main, ["search", str(study), "--run-dir", str(run), "--trials", "3"])
        assert res.exit_code == 1, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {journal} is {damage}"), res.output
        assert journal.read_bytes() == data


@pytest.mark.slow
def test_ctrl_c_then_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path):
    target = 8
    study = write_study(tmp_path, trials=target, parallel=2, evaluator={"sleep_s": 1.2})
    run = tmp_path / "run"

    # 1. Ctrl-C (SIGINT to the foreground process group, as a terminal sends it)
    proc = start(study)
    wait_complete(proc, run, 2)
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    left = kill_session(proc.pid)
    assert proc.returncode == 130, out
    print("processes left after Ctrl-C:", left)
    assert out.strip().splitlines()[-1].startswith("interrupted after"), out
    stored = trials(run)
    assert not [t for t in stored if t.state == TrialState.RUNNING]
    interrupted = [t for t in stored if t.user_attrs.get("reason") == "interrupted"]
    assert interrupted and all(t.state == TrialState.FAIL and t.user_attrs["superseded"]
                               for t in interrupted)
    queued = [t for t in stored if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs["requeued_from"] for t in queued) == sorted(t.number for t in interrupted)
    complete_before = {t.number: t.values for t in stored if t.state == TrialState.COMPLETE}

    # 2. kill -9 of the driver in the middle of the study
    proc = start(study)
    wait_complete(proc, run, len(complete_before) + 2)
    proc.kill()
    proc.communicate(timeout=30)
    kill_session(proc.pid)
    stored = trials(run)
    complete_before = {t.number: t.values for t in stored if t.state == TrialState.COMPLETE}
    left_running = [t.number for t in stored if t.state == TrialState.RUNNING]
    assert left_running      # killed while trials ran (each takes 1.2 s, two at a time)
    sampled = {t.number for t in stored if t.state == TrialState.RUNNING and "config" in t.user_attrs}

    # 3. the same command resumes and finishes the budget
    proc = start(study)
    out = proc.communicate(timeout=300)[0]
    left = kill_session(proc.pid)
    assert proc.returncode == 0, out
    print("processes left after a finished run:", left)
    print(out)
    final = trials(run)
    by_number = {t.number: t for t in final}
    assert len(by_number) == len(final)
    counted = [t for t in final if not t.user_attrs.get("superseded")]
    assert len(counted) == target
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in counted)
    assert not [t for t in final if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for number, values in complete_before.items():        # nothing completed was lost or redone
        assert by_number[number].state == TrialState.COMPLETE and by_number[number].values == values
    for number in left_running:
        t = by_number[number]
        if number in sampled:                              # adopted: re-run under its number
            assert t.state == TrialState.COMPLETE, t.user_attrs
        else:     # killed between ask and sampling: failed, and its params queued again
            assert t.state == TrialState.FAIL and t.user_attrs["superseded"], t.user_attrs
            assert [u for u in final if u.user_attrs.get("requeued_from") == number]
    assert "left running" in out and ("adopted" in out or not sampled)
    evaluated = Counter(t.user_attrs["config_hash"] for t in counted
                        if t.state == TrialState.COMPLETE and t.user_attrs.get("reused_from") is None)
    assert max(evaluated.values()) == 1                    # no architecture counted twice


def test_the_engine_itself_refuses_a_truncated_journal(tmp_path):
    """The API path (SearchEngine without the CLI) checks the journal too, under its own lock."""
    from nas.engine import SearchEngine, SearchError
    from nas.study import load_study_file

    study = write_study(tmp_path, trials=1)
    run = tmp_path / "run"
    run.mkdir()
    journal = run / "study.log"
    journal.write_bytes(b'{"op_code": 0, "worker_id": "w", "study_name": "x", "directions": [1]}\n{"op_')
    before = journal.read_bytes()
    with pytest.raises(SearchError, match="truncated"):
        SearchEngine(load_study_file(study), run).run()
    assert journal.read_bytes() == before
