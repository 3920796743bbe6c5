"""bench_proxy_fidelity's supernet cost bookkeeping (issue 19): the default scoring settings keep
the results key earlier runs wrote, other settings get their own, and the CPU it compares counts
the loader workers' decoding."""

from __future__ import annotations

import argparse
import multiprocessing
import pathlib
import time

from support.benchmarks import load_benchmark


def _bench():
    return load_benchmark("bench_proxy_fidelity")


def _args(**changes):
    base = dict(supernet_bn_batches=4, supernet_bn_batch=64, supernet_val_images=None,
                supernet_keep_data_mb=None, seeds=[0, 1])
    return argparse.Namespace(**{**base, **changes})


def test_results_keys_of_the_scoring_settings():
    bench, sn = _bench(), pathlib.Path("/w/supernet-sandwich-e4")
    assert bench.supernet_job(sn) == bench.supernet_job(sn, _args()) == "supernet:supernet-sandwich-e4"
    assert bench.epoch1_job(sn, _args()) == "epoch1/0"
    assert bench.supernet_job(sn, _args(supernet_bn_batches=2)) == "supernet:supernet-sandwich-e4:bn2x64"
    assert bench.supernet_job(sn, _args(supernet_bn_batch=32, supernet_val_images=180)) == \
        "supernet:supernet-sandwich-e4:bn4x32:val180"
    assert bench.epoch1_job(sn, _args(supernet_val_images=180)) == "epoch1/0:val180"
    assert bench.epoch1_job(sn, _args(supernet_keep_data_mb=0)) == "epoch1/0:streamed"


def test_the_validation_images_default_to_the_evaluators(tmp_path):
    """Without --supernet-val-images the bench scores as the evaluator would (at most 300 images
    of a folder data set; every image of a generated one: 0)."""
    bench = _bench()
    assert bench.default_val_images({"kind": "imagefolder", "path": str(tmp_path)}) == 300
    assert bench.default_val_images({"kind": "imagefolder", "path": str(tmp_path), "val_size": 200}) == 0
    assert bench.default_val_images({"kind": "procedural"}) == 0


def _burn(seconds: float, done=None, leave=None) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    if done is not None:   # stay alive (like a persistent loader worker) until told to leave
        done.set()
        leave.wait(30)


def test_tree_cpu_counts_the_children():
    """A child burning 0.4 CPU-s: process_time does not see it, tree_cpu_s does (live and ended)."""
    bench = _bench()
    ctx = multiprocessing.get_context("fork")
    c0, k0 = time.process_time(), bench.tree_cpu_s()
    child = ctx.Process(target=_burn, args=(0.4,))
    child.start()
    child.join()
    c1, k1 = time.process_time(), bench.tree_cpu_s()
    assert c1 - c0 < 0.2 and (k1 - k0) - (c1 - c0) >= 0.35   # an ended child

    done, leave = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_burn, args=(0.4, done, leave))
    child.start()
    try:
        assert done.wait(60)
        c2, k2 = time.process_time(), bench.tree_cpu_s()
        assert (k2 - k1) - (c2 - c1) >= 0.35   # a live child
    finally:
        leave.set()
        child.join()


def test_imported_trainings_give_no_training_equivalent():
    """With the finals imported (--finals-from) there is no training time to compare the
    supernet's with: the line says so instead of printing nan."""
    bench, nan = _bench(), float("nan")
    sn = {"card": {"rule": "sandwich", "random_subnets": 2, "sessions": [{"load_start": 1.0, "load_end": 2.0}],
                   "cpu_s": 60.0},
          "supernet_epochs": 4, "supernet_wall_s": 120.0, "full_s": nan, "training_equivalent": nan,
          "training_equivalent_cpu": nan, "epochs": 4, "score_s": 0.5, "score_cpu_s": 0.4, "epoch_cpu_s": 2.0,
          "inherited_score_s": 0.3, "epoch_s": 2.5, "speedup_vs_epoch": 5.0, "cpu_speedup_vs_epoch": 5.0,
          "paired": 3, "n": 20, "rank_error": {}}
    imported = "\n".join(bench.supernet_lines(sn))
    assert "nan" not in imported and "imported with --finals-from" in imported
    sn.update(full_s=40.0, training_equivalent=3.0, training_equivalent_cpu=7.5)
    assert "= 3.0 stand-alone trainings of 40.0 s by wall time, 7.5 by CPU time" in "\n".join(bench.supernet_lines(sn))
