"""benchmarks/fidelity_seeds.py (issue 19): a signal is compared only with the finals of the seeds
it did not use, the target's repeatability is the split-half agreement, and the paired bootstrap
credits a signal that ranks the true order over one that is noise."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from scipy.stats import spearmanr

from support.benchmarks import load_benchmark

ROOT = pathlib.Path(__file__).parents[2]


def _tool():
    return load_benchmark("fidelity_seeds")


def _finals(n=30, seeds=(0, 1, 2, 3), seed=0):
    """Each seed's final: a shared true order plus seed noise, so the seeds agree in part."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=n)
    return truth, {s: truth + 1.5 * rng.normal(size=n) for s in seeds}


def test_a_per_seed_signal_gets_no_credit_from_its_own_seed():
    tool = _tool()
    _, finals = _finals()
    own = tool.Signal("own final", {s: f.copy() for s, f in finals.items()})
    expected = np.mean([spearmanr(finals[s], np.mean([finals[t] for t in finals if t != s], axis=0)).statistic
                        for s in finals])
    assert tool.left_out_score(own, finals) == pytest.approx(expected, abs=1e-12)
    # compared with a target that holds its own seed it would reach far more
    with_own = np.mean([spearmanr(finals[s], np.mean(list(finals.values()), axis=0)).statistic for s in finals])
    assert with_own > expected + 0.1
    pairs = [spearmanr(finals[s], finals[t]).statistic for s in finals for t in finals if t != s]
    assert tool.one_other_score(own, finals) == pytest.approx(np.mean(pairs), abs=1e-12)


def test_a_seed_free_signal_faces_every_k_minus_1_mean():
    tool = _tool()
    _, finals = _finals()
    x = finals[0].copy()   # seed-free, but equal to seed 0's final
    expected = np.mean([spearmanr(x, np.mean([finals[t] for t in finals if t != s], axis=0)).statistic
                         for s in finals])
    assert tool.left_out_score(tool.Signal("x", x), finals) == pytest.approx(expected, abs=1e-12)
    rows = tool.reliability(finals, count=50, seed=0)
    half = [r for r in rows if r[0].startswith("mean of seeds [0, 1] vs mean of [2, 3]")]
    assert half and half[0][1] == pytest.approx(
        spearmanr(finals[0] + finals[1], finals[2] + finals[3]).statistic, abs=1e-12)


def _write_results(path: pathlib.Path, hashes, truth, finals, extra_seed_rows=0):
    rng = np.random.default_rng(1)
    lines = []
    for i, h in enumerate(hashes):
        for s, f in finals.items():
            lines.append({"hash": h, "job": f"train/{s}", "history": [0.5, 0.6, 0.7, float(f[i])],
                          "val_loss": [float(rng.normal()), 1.0, 0.9, 0.8], "train_loss": [2.0, 1.5, 1.2, 1.0]})
        lines.append({"hash": h, "job": "supernet:sn-e4:bn4x32", "accuracy": float(truth[i]),
                      "val_loss": float(-truth[i]), "inherited_accuracy": 0.1, "inherited_val_loss": 2.0})
        lines.append({"hash": h, "job": "cost", "params": int(rng.integers(1, 1000)), "flops": 5})
        lines.append({"hash": h, "job": "synflow", "score": float(rng.normal())})
    for h in hashes[:extra_seed_rows]:
        lines.append({"hash": h, "job": "train/7", "history": [0.1, 0.2, 0.3, 0.4]})
    path.write_text("\n".join(json.dumps(row) for row in lines) + "\n")


def test_the_report_of_a_work_folder(tmp_path):
    tool = _tool()
    truth, finals = _finals()
    hashes = [f"h{i:02d}" for i in range(len(truth))]
    _write_results(tmp_path / "results.jsonl", hashes, truth, finals, extra_seed_rows=3)
    text = tool.analyse(tmp_path, hashes, count=200)
    assert "seeds [0, 1, 2, 3] (k = 4)" in text
    assert "seed 7: 3 of 30 architectures trained; left out" in text
    assert "| minus supernet validation loss, BN re-estimated (`supernet:sn-e4:bn4x32`) | seed-free |" in text
    assert "| multiply-adds (fvcore convention) | seed-free | nan |" in text   # constant: undefined, not 0
    # the supernet's loss is the true order, the rung-1 validation loss is noise: the bootstrap says so
    row = next(l for l in text.splitlines() if l.startswith("| minus supernet validation loss")
               and "| minus validation loss at rung 1 |" in l)
    cells = [c.strip() for c in row.strip("|").split("|")]
    low = float(cells[3].split(" to ")[0])
    assert low > 0 and float(cells[4]) > 0.95
    _write_results(tmp_path / "results.jsonl", hashes, truth, finals)
    with (tmp_path / "results.jsonl").open("a") as f:   # a second supernet job, left out by a pattern
        f.writelines(json.dumps({"hash": h, "job": "supernet:other:val90", "accuracy": 0.5, "val_loss": 1.0,
                                 "inherited_accuracy": 0.1, "inherited_val_loss": 2.0}) + "\n" for h in hashes)
    assert "supernet:other:val90" in tool.analyse(tmp_path, hashes, count=20)
    assert "supernet:other:val90" not in tool.analyse(tmp_path, hashes, count=20, jobs=["supernet:*:bn4x32"])


def test_bad_input_is_one_line(tmp_path):
    tool = _tool()
    (tmp_path / "results.jsonl").write_text('{"hash": "a", "job": "cost", "params": 1}\nnot json\n')
    with pytest.raises(SystemExit, match=r"results.jsonl:2: not a results record"):
        tool.analyse(tmp_path, ["a"])
    (tmp_path / "results.jsonl").write_text('{"hash": "a", "job": "train/0", "history": [0.5]}\n')
    with pytest.raises(SystemExit, match="1 seed\\(s\\) with every architecture trained; at least 2 needed"):
        tool.analyse(tmp_path, ["a"])
    with pytest.raises(SystemExit, match=r"--seeds \[1\]: not trained for every architecture"):
        tool.analyse(tmp_path, ["a"], seeds=[0, 1])
