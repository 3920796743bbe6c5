"""Claiming a run directory: `search` writes only into a directory it made (`claim_run_dir`).

A run directory receives `study.yaml` (the resolved study, replacing any file of that name),
`study.log`, `driver.lock`, `weights/`, ... . Writing those into a folder the user keeps other
things in would replace their files, above all their own hand-written `study.yaml` (with
`--run-dir .`, or an `output_dir` equal to the study file's folder). So a run directory must be
new, empty, or one this tool made; anything else is refused with one line before anything is
written.

"One this tool made" is told by the marker file `.overlock-nas-run` (written by `claim_run_dir`
itself), or - for run directories from before the marker, such as the pinned runs in
tests/data/runs/ - by what only this tool writes: a journal `study.log` whose study records
`overlock_nas_version`, or the driver's `driver.lock`. A folder holding nothing but a study's
files (an Optuna journal begun elsewhere, say) is a study to resume, not the user's folder: the
engine checks the stored study against the study file and refuses a mismatch with one line.

    >>> from nas.rundir import claim_run_dir, RunDirError
    >>> run_dir = claim_run_dir("runs/demo", study_file="studies/demo.yaml")   # creates and marks it
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

__all__ = ["RunDirError", "MARKER_NAME", "claim_run_dir", "made_by_tool"]

from .util import folded
from .storage import JOURNAL_NAME, LOCK_NAME, RUN_DIR_MARKERS, RUN_MARKER_NAME as MARKER_NAME, \
    STUDY_FILE_COPY as STUDY_COPY_NAME
_JOURNAL_HEAD_BYTES = 64 * 1024     # the engine stores its version among the study's first records
_SHOWN_NAMES = 5                    # how many foreign entries a refusal names


class RunDirError(ValueError):
    """A directory `search` must not write into; the message is one line."""


def claim_run_dir(path: str | os.PathLike, study_file: str | os.PathLike | None = None) -> Path:
    """Check that `path` may receive a study's files, then create it and mark it as the tool's.

    Args:
        path: the run directory (`--run-dir`, else the study file's `output_dir`, else runs/<name>).
        study_file: the user's study file; refused when the run would replace it with its resolved
            copy (`RUN_DIR/study.yaml` is that file and the directory is not the tool's).

    Returns:
        `path` as a Path (now existing, with the marker file inside).

    Raises:
        RunDirError: one line naming the directory and why (not a directory; the user's study
            file; files this tool did not write, the first few named).
    """
    run_dir = Path(path)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir}: exists and is not a directory; choose another "
                          "(--run-dir or output_dir)")
    if run_dir.is_dir() and not made_by_tool(run_dir):
        _refuse_foreign(run_dir, study_file)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_marker(run_dir)
    except OSError as e:
        raise RunDirError(f"run directory {run_dir}: cannot write there "
                          f"({folded(e)})") from None
    return run_dir


def made_by_tool(path: str | os.PathLike) -> bool:
    """True when `path` is a run directory this tool made (see the module docstring)."""
    run_dir = Path(path)
    if (run_dir / MARKER_NAME).is_file() or (run_dir / LOCK_NAME).is_file():
        return True
    return _journal_written_by_tool(run_dir / JOURNAL_NAME)


def _refuse_foreign(run_dir: Path, study_file) -> None:
    """Raise for an existing directory that is not the tool's, unless it is empty."""
    entries = sorted(p.name for p in run_dir.iterdir())
    if not entries:
        return
    if study_file is not None and _same_file(run_dir / STUDY_COPY_NAME, Path(study_file)):
        raise RunDirError(f"run directory {run_dir} holds your study file {study_file}, which the "
                          f"run would replace with its resolved copy ({STUDY_COPY_NAME}): choose a "
                          "new or empty run directory (--run-dir or output_dir)")
    if JOURNAL_NAME in entries and set(entries) <= set(RUN_DIR_MARKERS):
        return       # a study's files only: the engine checks the stored study itself
    shown = ", ".join(entries[:_SHOWN_NAMES]) + (f", ... ({len(entries)} in all)"
                                                 if len(entries) > _SHOWN_NAMES else "")
    raise RunDirError(f"run directory {run_dir} holds files overlock-nas did not write ({shown}): "
                      "choose a new or empty run directory (--run-dir or output_dir)")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _journal_written_by_tool(journal: Path) -> bool:
    """An Optuna journal whose study carries the engine's `overlock_nas_version` attribute."""
    try:
        with open(journal, "rb") as fh:
            head = fh.read(_JOURNAL_HEAD_BYTES)
    except OSError:
        return False
    for line in head.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "overlock_nas_version" in (record.get("user_attr") or {}):
            return True
    return False


def _write_marker(run_dir: Path) -> None:
    marker = run_dir / MARKER_NAME
    if marker.is_file():
        return
    try:
        from importlib.metadata import version

        tool_version = version("overlock-nas")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        tool_version = "0+unknown"
    marker.write_text(json.dumps({
        "written_by": "overlock-nas search",
        "version": tool_version,
        "claimed_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "why": "this directory is an overlock-nas run directory; search writes only into such"}) + "\n")
