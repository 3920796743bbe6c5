"""Latency: the result's keys and statistics, per-stage breakdown, the cache and its key."""

import json
import platform
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from nas.latency.device import device_string
from nas.latency.measure import measure_latency
from nas.latency.store import LatencyCache, latency_key
from overlock import OverLoCK, OverLoCKConfig
from support.benchmarks import load_benchmark

REPO = Path(__file__).resolve().parents[2]
KEYS = {"latency_ms", "latency_p90_ms", "latency_spread_ms", "latency_min_ms", "latency_device",
        "latency_batch", "latency_dtype", "latency_channels_last", "latency_repeats",
        "latency_resolution", "latency_remeasured"}


@pytest.fixture
def small(tiny_config) -> OverLoCKConfig:
    return tiny_config.replace(resolution=(32, 32))


def test_latency_result_keys_and_statistics(small):
    r = measure_latency(small, batch=2, warmup=1, repeats=5, threads=1)
    assert KEYS <= set(r) and "latency_stages_ms" not in r
    assert 0 < r["latency_min_ms"] <= r["latency_ms"] <= r["latency_p90_ms"]
    assert r["latency_spread_ms"] >= 0
    assert (r["latency_batch"], r["latency_dtype"], r["latency_channels_last"], r["latency_repeats"]) == \
        (2, "fp32", False, 5)
    assert r["latency_resolution"] == [32, 32]
    assert r["latency_device"].startswith("cpu: ") and "x1 threads" in r["latency_device"]
    assert f"torch {torch.__version__.split('+')[0]}" in r["latency_device"]
    assert r["latency_device"] == device_string("cpu", 1)
    json.dumps(r)   # storable as trial user_attrs


def test_threads_are_pinned_only_while_measuring(small):
    before = torch.get_num_threads()
    measure_latency(small, warmup=0, repeats=2, threads=1)
    assert torch.get_num_threads() == before


def test_stage_breakdown_names_every_stage(small):
    r = measure_latency(small, warmup=1, repeats=3, threads=1, profile_stages=True,
                        channels_last=True, resolution=(32, 48), dtype="bf16")
    model_stages = set(OverLoCK(small).stage_modules())
    stages = r["latency_stages_ms"]
    assert set(stages) == model_stages | {"other"}
    assert all(v >= 0 for v in stages.values()) and stages["focus3"] > 0
    assert r["latency_channels_last"] is True and r["latency_resolution"] == [32, 48]
    assert r["latency_dtype"] == "bf16"


def test_a_trained_model_is_measured_reparameterised_without_changing_it(small):
    model = OverLoCK(small)
    assert not model.deployed
    r = measure_latency(model, warmup=0, repeats=2, threads=1)
    assert r["latency_ms"] > 0 and not model.deployed and model.training


def test_bad_arguments():
    with pytest.raises(ValueError, match="dtype='int8'"):
        measure_latency(OverLoCKConfig(), dtype="int8")
    with pytest.raises(ValueError, match="repeats >= 2"):
        measure_latency(OverLoCKConfig(), repeats=1)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            measure_latency(OverLoCKConfig(), device="cuda")


def test_latency_key_separates_every_field(small):
    dev = device_string("cpu", 2)
    base = latency_key(small, dev, 1, None, "fp32", False)
    variants = [latency_key(small.replace(region_count=2), dev, 1, None, "fp32", False),
                latency_key(small, device_string("cpu", 1), 1, None, "fp32", False),
                latency_key(small, dev, 2, None, "fp32", False),
                latency_key(small, dev, 1, (32, 64), "fp32", False),
                latency_key(small, dev, 1, None, "bf16", False),
                latency_key(small, dev, 1, None, "fp32", True)]
    assert len({base, *variants}) == 7
    # the resolution is the measured one: a config priced elsewhere but measured at 32 shares the key
    assert latency_key(small.replace(resolution=(64, 64)), dev, 1, 32, "fp32", False) == base
    assert latency_key(small.architecture_hash(), dev, 1, (32, 32), "fp32", False) == base


def test_a_reading_is_stored_under_one_key_that_fit_the_pricer_and_the_model_share(
        monkeypatch, tmp_path, small):
    """`latency fit`, a study's pricer and its latency model build the key and the settings with
    `measurement_settings` / `store_key`: what one stores the others find. The key's text is
    pinned, so readings stored by earlier versions stay found."""
    from types import SimpleNamespace

    from click.testing import CliRunner

    import nas.latency.measure
    from nas.cli import main
    from nas.latency.predictor import LatencyPredictor
    from nas.latency.store import device_store, measurement_settings, store_key
    from nas.search.pricing import LatencyPricer
    from nas.study import LatencySettings

    dev = device_string("cpu", 1)
    settings = measurement_settings(dev, batch=1, dtype="fp32", channels_last=False, threads=1)
    assert settings == {"device": dev, "resolution": None, "batch": 1, "dtype": "fp32",
                        "channels_last": False, "threads": 1}
    assert store_key(small, settings) == (f"{small.architecture_hash()}|{dev}|batch=1|res=32x32"
                                          "|dtype=fp32|channels_last=0")

    def fake_group(items, **kwargs):
        return [{"latency_ms": 1.0 + i, "latency_device": dev, "config": c.to_dict()}
                for i, c in enumerate(items)]

    monkeypatch.setattr(nas.latency.measure, "_measure_group", fake_group)
    out = CliRunner().invoke(main, ["latency", "fit", "studies/spaces/quickstart.yaml", "--measurements",
                                    "3", "--resolution", "32", "--threads", "1", "--out", str(tmp_path / "m.json")])
    assert out.exit_code == 0, out.output
    stored = device_store(dev).entries()
    spec = SimpleNamespace(latency=LatencySettings(threads=1), constraints={}, label="study")
    pricer = LatencyPricer(spec, executor=None, run_dir=tmp_path / "run", target="", grace_s=0.0)
    pricer.device, pricer.threads, pricer.store = dev, 1, device_store(dev)
    pricer.record = LatencyCache(tmp_path / "run" / "latencies.json")
    for key, entry in stored.items():
        config = OverLoCKConfig.from_dict(entry["config"])
        assert key == store_key(config, settings) == pricer._key(config)
        assert pricer.lookup(config)["latency_ms"] == entry["latency_ms"]
    predictor = LatencyPredictor("auto", pricer._settings(), pricer.store, None, background=False)
    assert len(predictor.latencies) == len(stored) == 3
    assert pricer.lookup(small) is None


def test_device_auto_is_resolved_in_one_place(monkeypatch):
    """`device: auto` means CUDA when the measuring (or training) process sees it, else the CPU:
    `resolve_device` decides it for the worker, `profile` and `latency fit` alike."""
    from nas import worker
    from nas.latency.device import resolve_device

    for cuda in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        assert resolve_device("auto") == worker._resolve_device("auto") == ("cuda" if cuda else "cpu")
    assert [resolve_device(d) for d in ("cpu", "cuda", "cuda:1")] == ["cpu", "cuda", "cuda:1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert worker._resolve_device("cuda:3") == "cuda:1"       # Ray's numbering stays the worker's


def test_cache_round_trip_across_instances(tmp_path, small):
    path = tmp_path / "run" / "latency_cache.json"
    cache = LatencyCache(path)
    key = latency_key(small, "cpu: test", 1, None, "fp32", False)
    assert cache.get(key) is None
    result = {"latency_ms": 1.5, "latency_device": "cpu: test", "latency_stages_ms": {"stem": 0.1}}
    cache.put(key, result)
    again = LatencyCache(path)
    assert again.get(key) == result and key in again and len(again) == 1
    # the positional form builds the same key
    assert again.get(small, "cpu: test", 1, None, "fp32", False) == result
    again.put(small, "cpu: test", 2, None, "fp32", False, {"latency_ms": 2.5})
    assert cache.get(latency_key(small, "cpu: test", 2, None, "fp32", False)) == {"latency_ms": 2.5}
    cache.put_many({"a": {"latency_ms": 3.0}, "b": {"latency_ms": 4.0}})     # one write, merged
    assert len(LatencyCache(path)) == 4 and LatencyCache(path).get("b") == {"latency_ms": 4.0}
    assert not list(path.parent.glob("*.tmp*"))


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "latency_cache.json"

    def writer(i):
        for j in range(10):
            LatencyCache(path).put(f"k{i}-{j}", {"latency_ms": float(j)})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(LatencyCache(path)) == 40


def test_corrupt_cache_reads_as_empty_and_is_rewritten(tmp_path):
    path = tmp_path / "latency_cache.json"
    path.write_text("{not json")
    cache = LatencyCache(path)
    assert cache.get("k") is None
    cache.put("k", {"latency_ms": 1.0})
    assert json.loads(path.read_text()) == {"k": {"latency_ms": 1.0}}


_FAULTS = """
import resource, sys
import nas.latency.measure
from space import load_space
if sys.argv[1] == "not settled":
    nas.latency.measure.settle_large_blocks = lambda: False
timed, faults = nas.latency.measure._time_rounds, []
def forward_faults(model):
    def forward(x):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        out = model(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return out
    return forward
def counted(pairs, *args, **kwargs):
    return timed([(forward_faults(model), x) for model, x in pairs], *args, **kwargs)
nas.latency.measure._time_rounds = counted
space = load_space("studies/spaces/xt_t.yaml")
nas.latency.measure.measure_latencies([space.sample(seed=s) for s in (1, 2)], warmup=1, repeats=4,
                                      threads=1, resolution=64)
print(sum(faults[2:8]))   # the first group's timed forwards, past one warm-up forward each
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator")
def test_a_process_times_its_first_configs_in_the_steady_state_of_later_ones():
    """Left adaptive, a young process's allocator maps and unmaps large activations, so the first
    group of configs a process measured read up to 1.6x their later figure, whatever the warm-up.
    measure_latency fixes the thresholds first: the first group's timed forwards take (almost)
    no page faults, against tens of thousands with the thresholds left adaptive."""
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True,
                             check=True, cwd=REPO)
        return int(out.stdout.split()[-1])

    adaptive, settled = faults("not settled"), faults("settled")
    assert adaptive > 1000, adaptive          # the condition exists on this machine
    assert settled < 0.05 * adaptive, (settled, adaptive)


def test_the_latency_store_is_read_without_importing_torch():
    """The driver, the reports and the latency model read the store; only measuring needs torch
    (importing it costs seconds and hundreds of MiB in a process that never measures)."""
    code = ("import sys, nas.latency, nas.latency.store, nas.latency.model, nas.latency.predictor\n"
            "import nas.latency.device, nas.latency_store, nas.latency_model, nas.latency_predictor\n"
            "nas.latency.model.model_path('cpu: x1 threads', {'threads': 1})\n"
            "nas.latency.store.latency_key('abc', 'cpu: x1 threads', 1, 64)\n"
            "nas.latency.device.resolve_device('cpu')\n"
            "print(sorted(m for m in ('torch', 'nas.latency.measure') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split("\n")[0] == "[]", out.stdout


# what each old module offered (its __all__ and the private names tests and benchmarks used)
_OLD_PATHS = {
    "nas.measure": ("measure_latency", "measure_latencies", "device_string", "latency_key",
                    "LatencyCache", "DTYPES", "SPREAD_REMEASURE", "cache_root", "device_cache_dir",
                    "device_store", "CACHE_ENV", "STORE_FILE", "WARMUP", "REPEATS", "ROUNDS", "GROUP",
                    "PACE_MAX_S", "PROTOCOL", "STAGE_REPEATS", "settle_large_blocks", "_stats",
                    "_time_rounds", "_measure_group", "_cudnn_autotune", "_cuda_driver"),
    "nas.latency_store": ("latency_key", "LatencyCache", "cache_root", "device_cache_dir",
                          "device_store", "CACHE_ENV", "STORE_FILE"),
    "nas.latency_model": ("LatencyModel", "fit", "load", "model_path", "features", "FEATURES",
                          "SETTINGS_KEYS", "cv_statistics", "LatencyModelError", "_flops_features",
                          "_solve"),
    "nas.latency_predictor": ("LatencyPredictor", "LatencyPredictorError", "MIN_AUTO"),
    "nas._malloc": ("release_large_blocks", "settle_large_blocks"),
}


_MISSING = object()


def test_the_old_module_paths_re_export_the_new_ones():
    """nas.measure, nas.latency_store, nas.latency_model, nas.latency_predictor and nas._malloc
    moved into nas.latency; their old paths give the very same objects for one release."""
    import importlib

    new = [importlib.import_module(f"nas.latency.{m}")
           for m in ("device", "measure", "store", "model", "predictor", "_malloc")]
    for old_path, names in _OLD_PATHS.items():
        old = importlib.import_module(old_path)
        for name in names:
            assert any(vars(m).get(name, _MISSING) is getattr(old, name) for m in new), (old_path, name)


def _protocol_defaults() -> dict:
    import inspect

    import nas.latency.measure

    return {k: p.default for k, p in inspect.signature(nas.latency.measure._measure_group).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _effective_protocol(kwargs: dict, defaults: dict) -> dict:
    """The protocol settings a `_measure_group` call ran with (its defaults filled in)."""
    return {k: kwargs.get(k, defaults[k]) for k in ("warmup", "repeats", "rounds", "pin", "threads")}


def test_profile_the_worker_latency_fit_and_the_benchmark_measure_with_one_protocol(
        monkeypatch, tmp_path, tiny_config):
    """A `profile` reading is comparable with a study's, `latency fit`'s and the benchmark's only
    when all four measure with the same settings. Before: profile timed 50 forwards, a study 30,
    the benchmark 20 after 3 warm-up forwards (a round's minimum of 10 forwards is not one of 6)."""
    from click.testing import CliRunner

    import nas.latency.measure
    from nas import worker
    from nas.cli import main
    from nas.study import LatencySettings

    calls, defaults = {}, _protocol_defaults()

    def fake_group(items, **kwargs):
        calls.setdefault(caller, []).append(_effective_protocol(kwargs, defaults))
        return [{"latency_ms": 10.0 + len(calls[caller]) + i, "latency_device": "cpu: fake"}
                for i, _ in enumerate(items)]

    monkeypatch.setattr(nas.latency.measure, "_measure_group", fake_group)
    monkeypatch.setenv("OVERLOCK_NAS_CACHE", str(tmp_path / "cache"))
    config_file = tmp_path / "c.yaml"
    config_file.write_text(tiny_config.replace(resolution=(32, 32)).to_yaml())

    caller = "profile"
    out = CliRunner().invoke(main, ["profile", "--config", str(config_file), "--threads", "1",
                                    "--device", "cpu", "--no-fvcore", "--json"])
    assert out.exit_code == 0, out.output
    caller = "worker"
    assert worker.run_latency(tiny_config.to_dict(), device="cpu", latency=LatencySettings().model_dump(),
                              num_threads=1)["ok"]
    caller = "latency fit"
    out = CliRunner().invoke(main, ["latency", "fit", "studies/spaces/quickstart.yaml", "--measurements", "3",
                                    "--resolution", "32", "--threads", "1", "--out", str(tmp_path / "m.json")])
    assert out.exit_code == 0, out.output
    bench = load_benchmark("bench_latency_model")
    args = bench.parser().parse_args([])
    calls["benchmark"] = [_effective_protocol({"warmup": args.warmup, "repeats": args.repeats,
                                               "threads": args.threads}, defaults)]

    protocols = {name: p for name, ps in calls.items() for p in ps}
    assert set(protocols) == {"profile", "worker", "latency fit", "benchmark"}
    assert len({tuple(sorted(p.items())) for p in protocols.values()}) == 1, protocols
    assert protocols["profile"]["repeats"] == nas.latency.measure.REPEATS == LatencySettings().repeats
    assert protocols["profile"]["warmup"] == nas.latency.measure.WARMUP == LatencySettings().warmup


def test_a_lone_config_is_paced_to_a_groups_time_span(monkeypatch):
    """In a group of GROUP configs, one config's rounds are spread over GROUP configs' time; a
    lone config (profile, the measuring worker) idles between its rounds for the others' share,
    so its rounds sample the machine at as many moments. Before: its rounds ran back to back."""
    import nas.latency.measure

    pauses = []
    monkeypatch.setattr(nas.latency.measure.time, "sleep", pauses.append)

    def model(x):     # 20 ms of this thread's CPU per forward
        end = time_cpu() + 0.02
        while time_cpu() < end:
            pass

    from time import thread_time as time_cpu

    [(timed, walls)] = nas.latency.measure._time_rounds([(model, None)], repeats=6, warmup=0, rounds=3,
                                                 clock="thread_cpu")
    assert len(pauses) == 2                              # between rounds, not after the last
    for r, pause in enumerate(pauses):                   # a round: 2 forwards, by the wall clock
        round_s = sum(walls[2 * r:2 * r + 2]) / 1e3
        assert pause == pytest.approx((nas.latency.measure.GROUP - 1) * round_s, rel=0.2)
    pauses.clear()
    nas.latency.measure._time_rounds([(model, None)] * nas.latency.measure.GROUP, repeats=2, warmup=0, rounds=2,
                             clock="thread_cpu")
    assert pauses == [0]                                 # a full group: its own rounds spread it
    pauses.clear()
    monkeypatch.setattr(nas.latency.measure, "PACE_MAX_S", 0.05)
    nas.latency.measure._time_rounds([(model, None)], repeats=4, warmup=0, rounds=2, clock="thread_cpu")
    assert pauses == [0.05]                              # a long round is not paced for minutes


def test_progress_is_told_between_rounds_with_the_time_left(monkeypatch):
    """After the warm-up and after each round (its pause included), `progress` hears how far the
    set is and how long it has left: the rounds left at the forward time seen so far, with the
    pauses between them. A fake clock: each forward takes 10 ms, each pause what it asks."""
    import nas.latency.measure

    now = [0.0]
    monkeypatch.setattr(nas.latency.measure.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(nas.latency.measure.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))

    def model(x):
        now[0] += 0.01

    events = []
    nas.latency.measure._time_rounds([(model, None)], repeats=6, warmup=2, rounds=3, clock="wall",
                                     progress=events.append)
    assert [(e.done, e.rounds, e.configs, e.remeasure) for e in events] == [(d, 3, 1, False) for d in range(4)]
    # after the warm-up (0.02 s): 3 rounds of 2 forwards, 2 pauses of GROUP - 1 rounds' time
    assert events[0].left_s == pytest.approx(3 * 0.02 + 2 * (nas.latency.measure.GROUP - 1) * 0.02)
    for e in events:
        assert e.elapsed_s + e.left_s == pytest.approx(now[0])          # exact for steady forwards
    assert events[-1].left_s == 0
