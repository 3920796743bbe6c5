"""The report reads a study through the stored-study contract (`nas.storage`): the same feasible
set, front and picks as `overlock-nas export`; damaged journals are one-line errors; accuracy is
labelled with its data set."""

from __future__ import annotations

import fcntl
import re
import urllib.request
from pathlib import Path
from html import escape

import pytest
from click.testing import CliRunner

from nas import selection, storage
from nas.cli import main
from reports import build_report
from reports.data import TOP_K, load_study_data
from reports.serve import make_server


def _damage(run, kind: str):
    journal = run / "study.log"
    data = journal.read_bytes()
    if kind == "truncated":
        journal.write_bytes(data[:-25])          # the last record cut off, as by a full disk
    else:
        lines = data.split(b"\n")
        lines[2] = lines[2][: len(lines[2]) // 2]  # half a record in the middle of the file
        journal.write_bytes(b"\n".join(lines))
    return journal


def test_picks_and_front_are_exports(study_dir):
    """The table's `pick` column holds what `export --top 5` and `--knee` choose; the `pareto`
    column is `nas.storage.pareto_front`. Before: no picks; the front was the report's own."""
    study, _ = storage.open_study(study_dir)
    df = load_study_data(study_dir).trials.set_index("number")
    top = [t.number for t, _ in selection.top_trials(study, TOP_K)]
    knee = selection.select_trial(study, knee=True)[0].number
    assert df.loc[top[0], "pick"].startswith("best")
    for place, number in enumerate(top[1:], start=2):
        assert f"top {place}" in df.loc[number, "pick"]
    assert "knee" in df.loc[knee, "pick"]
    assert set(df.index[df["pick"] != ""]) == set(top) | {knee}
    assert sorted(df.index[df["pareto"]]) == [t.number for t in storage.pareto_front(study)]


def test_page_marks_knee_and_top(study_dir, tmp_path):
    html = build_report(study_dir, out=tmp_path / "r.html").read_text()
    table = html[html.index('id="pareto-table"'):]
    table = table[:table.index("</table>")]
    assert re.search(r"<td>([^<]*, )?knee</td>", table) and "<td>top 2" in table
    assert "Column <b>pick</b>" in html and "Das 1999" in html


def test_accuracy_is_labelled_with_its_data_set(study_dir):
    """Before: "top-1 accuracy (%, proxy training)", whatever the data. The engine records the data
    set of every trained trial (`dataset`), so the label is that record's."""
    sd = load_study_data(study_dir)
    study, _ = storage.open_study(study_dir)
    record = next(t.user_attrs["dataset"] for t in study.get_trials() if "dataset" in t.user_attrs)
    label = storage.dataset_text(record)
    assert label and sd.dataset == label
    html = build_report(study_dir, out=study_dir.parent / "labelled.html").read_text()
    assert f"top-1 accuracy (%, proxy training on {escape(label)}" in html


def test_supernet_scores_are_labelled_as_inherited_weights(make_study):
    """A study scored by the `supernet` evaluator trained nothing: its accuracies are labelled as
    inherited-weight accuracies, not proxy training."""
    run = make_study("sn", n_trials=12, presets=())
    study, _ = storage.open_study(run)
    study.set_user_attr("evaluator", {"name": "supernet", "weights": "/sn", "val_images": 300})
    assert load_study_data(run).accuracy_from == "weights inherited from a supernet, no training"
    html = build_report(run, out=run.parent / "sn.html").read_text()
    assert "top-1 accuracy (%, weights inherited from a supernet, no training on " in html
    assert "proxy training on" not in html


@pytest.mark.parametrize("kind", ["truncated", "corrupt"])
def test_damaged_journal_is_a_one_line_error(make_study, tmp_path, kind):
    """Before: a truncated journal was read silently without its last record (exit 0); a corrupt
    one gave Optuna's JSONDecodeError."""
    run = make_study("run", n_trials=6, presets=())
    journal = _damage(run, kind)
    result = CliRunner().invoke(main, ["report", str(run), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {journal} is {kind}"), result.output
    if kind == "truncated":
        assert "truncate -s" in lines[0]
    assert not (tmp_path / "r.html").exists()


def test_half_written_record_under_a_live_driver_is_skipped(make_study):
    """While a search holds driver.lock, a last line without its newline is an append in
    progress: the report reads the records before it, as Optuna does."""
    run = make_study("run", n_trials=6, presets=())
    whole = len(load_study_data(run).trials)
    with open(run / "study.log", "ab") as fh:
        fh.write(b'{"op_code": 4, "worker_id": "x", "trial_id"')
    with open(run / "driver.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert len(load_study_data(run).trials) == whole
    with pytest.raises(Exception, match="is truncated"):
        load_study_data(run)


def test_unwritable_out_is_one_line(study_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(main, ["report", str(study_dir), "--out", str(blocker / "r.html")])
    assert result.exit_code == 1 and result.output.startswith("Error: --out ") and \
        "cannot write there" in result.output and len(result.output.strip().splitlines()) == 1


def test_out_never_replaces_what_is_not_a_report(study_dir, tmp_path):
    """Before: `report RUN -o RUN/study.log` wrote the page over the study's journal."""
    import shutil

    study_dir = Path(shutil.copytree(study_dir, tmp_path / "copy"))
    (study_dir / "notes.txt").write_text("kept\n")
    for name in ("study.log", "notes.txt"):
        kept = study_dir / name
        before = kept.read_bytes()
        result = CliRunner().invoke(main, ["report", str(study_dir), "-o", str(kept)])
        assert result.exit_code == 1 and "is not an overlock-nas report" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and kept.read_bytes() == before
    page = study_dir / "again.html"
    for _ in range(2):       # an earlier report is replaced
        result = CliRunner().invoke(main, ["report", str(study_dir), "-o", str(page)])
        assert result.exit_code == 0, result.output


def test_server_lists_a_damaged_journal_with_the_reason(make_study, tmp_path):
    make_study("good", n_trials=4, presets=())
    _damage(make_study("bad", n_trials=4, presets=()), "corrupt")
    server = make_server(tmp_path)
    import threading

    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert "(unreadable)" in page and "is corrupt: line 3" in page
