"""`overlock-nas latency fit` without --out keeps the device's previous model (issue 18, part 3).

Before: a second fit at the same settings silently replaced the stored model file."""

import json

from click.testing import CliRunner

from nas.cli import main
from nas.latency import model as lm

FAST = ["--resolution", "32", "--threads", "1", "--warmup", "1", "--repeats", "3"]
QUICKSTART = "studies/spaces/quickstart.yaml"


def _fit(*args):
    return CliRunner().invoke(main, ["latency", "fit", QUICKSTART, "--json", *FAST,
                                                     *args], catch_exceptions=False)


def test_a_second_fit_keeps_the_first_model_and_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("OVERLOCK_NAS_CACHE", str(tmp_path / "cache"))
    first = _fit("--measurements", "4")
    assert first.exit_code == 0, first.output + first.stderr
    path = json.loads(first.stdout[first.stdout.index("{"):])["path"]
    assert "kept as" not in first.stderr            # nothing to keep the first time
    first_text = open(path).read()

    second = _fit("--measurements", "5")
    assert second.exit_code == 0, second.output + second.stderr
    assert json.loads(second.stdout[second.stdout.index("{"):])["path"] == path
    kept_lines = [line for line in second.stderr.splitlines() if "kept as" in line]
    assert len(kept_lines) == 1, second.stderr
    kept = kept_lines[0].split("kept as ", 1)[1].strip()
    assert open(kept).read() == first_text           # the first model, untouched
    assert lm.load(kept).cv["n"] == 4 and lm.load(path).cv["n"] == 5
