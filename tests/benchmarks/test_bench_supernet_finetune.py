"""bench_supernet_finetune (issue 19): the inherited start is the supernet's sub-network (with
re-estimated batch norm), the scratch start is not, and a rerun skips what is stored."""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

from support.benchmarks import load_benchmark

DATA = "{kind: procedural, train_size: 16, val_size: 16}"


def _bench():
    return load_benchmark("bench_supernet_finetune")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "nas"))
    from nas.supernet.train import train_supernet
    from test_supernet_train import TINY_SPACE

    tmp = tmp_path_factory.mktemp("ft")
    (tmp / "tiny.yaml").write_text(TINY_SPACE)
    train_supernet(tmp / "tiny.yaml", {"kind": "procedural", "train_size": 16, "val_size": 16}, tmp / "sn",
                   epochs=1, threads=1, train_settings={"batch_size": 16, "eval_batch_size": 16})
    return tmp


def test_inherited_and_scratch_trainings(tiny, capsys):
    bench = _bench()
    argv = ["--space", str(tiny / "tiny.yaml"), "--dataset", DATA, "--n", "2", "--epochs", "1",
            "--seeds", "0", "--train-settings", "{batch_size: 8, eval_batch_size: 16}",
            "--supernet", str(tiny / "sn"), "--work", str(tiny / "work")]
    bench.main(argv)
    rows = [json.loads(line) for line in (tiny / "work" / "finetune.jsonl").read_text().splitlines()]
    assert sorted(r["job"] for r in rows) == ["inherited/1/0"] * 2 + ["scratch/1/0"] * 2
    by = {(r["hash"], r["job"]): r for r in rows}
    for chash in {r["hash"] for r in rows}:   # the same seed, another start: another training
        assert by[(chash, "inherited/1/0")]["val_loss"] != by[(chash, "scratch/1/0")]["val_loss"]
    assert "| inherited | 1 |" in capsys.readouterr().out
    bench.main(argv)    # a rerun trains nothing more
    assert len((tiny / "work" / "finetune.jsonl").read_text().splitlines()) == 4


def test_the_inherited_state_is_the_sub_network(tiny):
    """What the inherited training starts from loads strictly into create_model(config) and
    holds the supernet's weights for that architecture."""
    import torch

    import overlock
    import space as space_pkg
    from nas.data import load_dataset
    from nas.evaluators import fit_to_data
    from nas.supernet.train import WEIGHTS_FILE
    from overlock.supernet import Supernet

    bench = _bench()
    supernet = Supernet.load(tiny / "sn" / WEIGHTS_FILE).eval()
    data = load_dataset({"kind": "procedural", "train_size": 16, "val_size": 16}, (32, 32))
    config = space_pkg.load_space(tiny / "tiny.yaml").sample(__import__("random").Random(1))
    state = bench.inherited_state(supernet, config, data, seed=0)
    model = overlock.create_model(fit_to_data(config, data))
    model.load_state_dict(state, strict=True)
    extracted = supernet.extract(supernet.fit(fit_to_data(config, data))).state_dict()
    weights = [k for k in state if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert weights and all(torch.equal(state[k], extracted[k]) for k in weights)
