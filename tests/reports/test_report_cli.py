"""`overlock-nas report` and the study-index server."""

from __future__ import annotations

import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest
from click.testing import CliRunner

from nas.cli import main
from reports import ReportError
from reports.serve import make_server


def _run(*args):
    result = CliRunner().invoke(main, ["report", *map(str, args)])
    return result.exit_code, result.output


def test_report_command_writes_the_page(study_dir, tmp_path):
    code, out = _run(study_dir, "--out", tmp_path / "r.html")
    assert code == 0, out
    assert f"wrote {tmp_path / 'r.html'}" in out and "MiB" in out
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    code, out = _run("--storage", study_dir / "study.log", "--study", "synthetic", "--out", tmp_path / "s.html")
    assert code == 0, out


@pytest.mark.parametrize("args, message", [
    (["{tmp}/nope"], "no such run directory"),
    (["{tmp}"], "is a folder of 1 run directories, not one"),
    (["{run}", "--study", "zzz"], "no study named 'zzz'"),
    (["--storage", "sqlite:///{tmp}/none.db"], "no such SQLite file"),
    ([], "give a RUN_DIR or --storage URL"),
    (["--serve"], "--serve needs the folder"),
])
def test_report_command_errors_are_one_line(make_study, tmp_path, args, message):
    run = make_study("run", n_trials=3, presets=())
    args = [a.format(tmp=tmp_path, run=run) for a in args]
    code, out = _run(*args)
    assert code == 1
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], out
    assert "Traceback" not in out


def test_server_indexes_and_builds_reports_on_demand(make_study, tmp_path):
    make_study("a", n_trials=25)
    make_study("group/b", n_trials=4, failed_only=True, presets=(), study_name="failing")
    (tmp_path / "notes").mkdir()
    server = make_server(tmp_path, port=0)
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://{host}:{port}"
    try:
        index = urllib.request.urlopen(base + "/", timeout=60).read().decode()
        assert "2 studies under" in index
        assert "/report?run=a&amp;study=synthetic" in index and "/report?run=group%2Fb&amp;study=failing" in index
        page = urllib.request.urlopen(base + "/report?run=a&study=synthetic", timeout=120).read().decode()
        assert "Pareto fronts" in page and "Plotly" in page
        page = urllib.request.urlopen(base + "/report?" + urllib.parse.urlencode(
            {"run": "group/b", "study": "failing"}), timeout=120).read().decode()
        assert "All 4 trials failed" in page
        for bad in ("/report?run=../..&study=synthetic", "/report?run=a&study=nope", "/etc/passwd"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(base + bad, timeout=30)
            assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_server_binds_loopback_only(tmp_path):
    with pytest.raises(ReportError, match="loopback"):
        make_server(tmp_path, host="0.0.0.0")
