"""`nas.rundir.claim_run_dir`: search writes only into a new, empty or tool-made run directory.

Before it, `overlock-nas search study.yaml --run-dir DIR` wrote study.yaml, study.log, driver.lock
and weights/ into any existing directory, and with `--run-dir .` (or output_dir equal to the study
file's folder) replaced the user's hand-written study.yaml with its resolved form."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nas.rundir import MARKER_NAME, RunDirError, claim_run_dir, made_by_tool
from nas_testing import REPO, subprocess_env, write_study

PINNED_RUNS = sorted((REPO / "tests" / "data" / "runs").iterdir())
USER_STUDY = "# my study: comments and all\nname: mine\n"


def test_a_new_directory_is_created_and_marked(tmp_path):
    run = claim_run_dir(tmp_path / "runs" / "new")
    assert run.is_dir() and made_by_tool(run)
    marker = json.loads((run / MARKER_NAME).read_text())
    assert marker["written_by"] == "overlock-nas search"
    assert claim_run_dir(run) == run          # a second claim (a resume) is accepted


def test_an_empty_directory_is_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    assert made_by_tool(claim_run_dir(tmp_path / "empty"))


def test_a_folder_of_the_users_files_is_refused_with_one_line_and_left_alone(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt", "f.txt"):
        (folder / name).write_text(name)
    with pytest.raises(RunDirError) as err:
        claim_run_dir(folder)
    message = str(err.value)
    assert "\n" not in message and str(folder) in message and "did not write" in message
    assert "a.txt, b.txt, c.txt, d.txt, e.txt, ... (6 in all)" in message
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", "b.txt", "c.txt", "d.txt", "e.txt",
                                                        "f.txt"]


def test_the_users_study_file_is_never_the_run_directorys_copy(tmp_path):
    """`--run-dir .` or output_dir = the study file's folder: the copy would replace it."""
    study = tmp_path / "study.yaml"
    study.write_text(USER_STUDY)
    with pytest.raises(RunDirError) as err:
        claim_run_dir(tmp_path, study_file=study)
    assert "your study file" in str(err.value) and "\n" not in str(err.value)
    assert study.read_text() == USER_STUDY and not (tmp_path / MARKER_NAME).exists()


def test_a_lone_study_yaml_does_not_make_a_run_directory(tmp_path):
    (tmp_path / "study.yaml").write_text(USER_STUDY)
    with pytest.raises(RunDirError, match="did not write"):
        claim_run_dir(tmp_path, study_file=tmp_path / "other.yaml")


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(RunDirError, match="not a directory"):
        claim_run_dir(tmp_path / "run")


def test_a_journal_the_tool_did_not_write_is_not_enough(tmp_path):
    """An Optuna journal of some other program beside the user's own files is refused; alone, it
    is a study the engine opens and checks against the study file (resume or a one-line refusal)."""
    (tmp_path / "study.log").write_text(json.dumps({"op_code": 0, "study_name": "x",
                                                    "directions": [1]}) + "\n")
    assert not made_by_tool(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="notes.txt"):
        claim_run_dir(tmp_path)
    (tmp_path / "notes.txt").unlink()
    claim_run_dir(tmp_path)
    assert made_by_tool(tmp_path)


@pytest.mark.parametrize("pinned", PINNED_RUNS, ids=[p.name for p in PINNED_RUNS])
def test_pinned_runs_from_before_the_marker_are_recognised_and_resume(tmp_path, pinned):
    run = tmp_path / pinned.name
    shutil.copytree(pinned, run)
    assert not (run / MARKER_NAME).exists() and made_by_tool(run)
    claim_run_dir(run, study_file=run / "study.yaml")   # resuming from its own resolved copy
    assert (run / MARKER_NAME).is_file()
    assert (run / "study.log").read_bytes() == (pinned / "study.log").read_bytes()


def test_a_run_directory_held_by_a_driver_is_the_tools(tmp_path):
    """A driver that stopped before its journal leaves driver.lock; the engine's lock says busy."""
    (tmp_path / "driver.lock").write_text("pid 1 on host since now\n")
    assert made_by_tool(tmp_path)


# ------------------------------------------------------------------ the CLI, once it is wired
@pytest.mark.parametrize("case", ["output_dir is the study file's folder", "--run-dir a user folder"])
def test_search_refuses_a_directory_it_did_not_make(tmp_path, case):
    study = write_study(tmp_path, trials=1, output_dir=str(tmp_path))
    before = study.read_text()
    extra = []
    if case.startswith("--run-dir"):
        folder = tmp_path / "mine"
        folder.mkdir()
        (folder / "notes.txt").write_text("keep me")
        extra = ["--run-dir", str(folder)]
    proc = subprocess.run([sys.executable, "-m", "nas.cli", "search", str(study), *extra], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=300)
    out = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 1, out
    assert len(out.splitlines()) == 1 and out.startswith("Error: run directory ") \
        and "Traceback" not in out, out
    assert study.read_text() == before
    written = {"study.log", "driver.lock", "weights", MARKER_NAME}
    where = Path(extra[1]) if extra else tmp_path
    assert not written & {p.name for p in where.iterdir()}
