"""The measuring worker (issue 10 §1), the per-device latency store and `cuda:N` under Ray (§3).

One Ray cluster for the module with 4 logical CPUs and 2 *logical* GPUs (no CUDA here): Ray hands
them out and sets CUDA_VISIBLE_DEVICES as it would on a GPU node, which is what the device mapping
and the measuring worker's placement depend on.
"""

import json
import multiprocessing
import os
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import nas.engine
from nas.engine import SearchEngine, SearchError, open_storage
from nas.latency.store import cache_root, device_cache_dir, device_store
from nas.study import parse_study
from nas.worker import visible_cuda
from nas_testing import HERE, study_dict

LATENCY = {"repeats": 3, "warmup": 1}


@pytest.fixture(scope="module")
def gpu_ray(tmp_path_factory):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    log = tmp_path_factory.mktemp("latency-log") / "latency.jsonl"
    # workers inherit the environment Ray was started with: the fake measurement's log and length
    os.environ.update(FAKE_LATENCY_LOG=str(log), FAKE_LATENCY_S="1.0",
                      FAKE_LATENCY_DISTURB=str(tmp_path_factory.mktemp("latency-disturbed")),
                      RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    try:
        ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False,
                 log_to_driver=False, logging_level="ERROR")
    finally:
        os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    assert str(HERE) in sys.path
    yield log
    ray.shutdown()
    for key in ("FAKE_LATENCY_LOG", "FAKE_LATENCY_S"):
        os.environ.pop(key, None)


def load(run: Path) -> optuna.Study:
    spec = parse_study(study_dict(run.parent), label="t")
    return optuna.load_study(study_name="tiny", storage=open_storage(spec, run))


def intervals(path: Path, kind: str) -> list[dict]:
    if not path.exists():
        return []
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["kind"] == kind]


# ------------------------------------------------------------------------------ device mapping
def test_the_study_device_maps_to_the_gpu_the_worker_sees():
    assert visible_cuda("cuda:1", visible="1") == "cuda:0"       # Ray gave it GPU 1
    assert visible_cuda("cuda:1", visible="0,1") == "cuda:1"
    assert visible_cuda("cuda:3", visible="2,3") == "cuda:1"
    assert visible_cuda("cuda:1", visible="0") == "cuda:0"       # Ray gave it another GPU
    assert visible_cuda("cuda:1", visible=None) == "cuda:1"      # outside Ray: every GPU visible
    assert visible_cuda("cuda", visible="5") == "cuda"


def test_a_gpu_task_sees_its_own_gpu_as_cuda_0(gpu_ray):
    from nas.executor import Executor

    ex = Executor()
    ex.start()
    mapped = [ex.submit("nas.worker:visible_cuda", "cuda:1", gpus=1, cpus=0.5) for _ in range(2)]
    env = [ex.submit("os:getenv", "CUDA_VISIBLE_DEVICES", gpus=1, cpus=0.5) for _ in range(2)]
    assert [ex.result(h) for h in mapped] == ["cuda:0", "cuda:0"]     # result() waits
    assert all(ex.result(h) in ("0", "1") for h in env)    # one physical GPU each, renumbered 0


# --------------------------------------------------------------------------------- the store
def _write(args):
    device, worker, n = args
    store = device_store(device)
    for j in range(n):
        store.put(f"k{worker}-{j}", {"latency_ms": float(j), "writer": worker})


def test_the_device_store_outlives_a_study_and_is_safe_under_concurrent_processes(tmp_path):
    assert str(cache_root()).startswith(os.environ["OVERLOCK_NAS_CACHE"])
    device = "cpu: Test CPU x1 threads, torch 0, na2d_av pure PyTorch"
    other = device.replace("x1", "x2")
    assert device_cache_dir(device) != device_cache_dir(other)
    assert device_cache_dir(device).parent == cache_root() / "latency"
    ctx = multiprocessing.get_context("spawn")     # real processes, each with its own file handles
    with ctx.Pool(4) as pool:
        pool.map(_write, [(device, w, 15) for w in range(4)])
    entries = device_store(device).entries()
    assert len(entries) == 60 and {e["writer"] for e in entries.values()} == {0, 1, 2, 3}
    assert (device_cache_dir(device) / "device.txt").read_text().strip() == device
    assert device_store(other).entries() == {}
    assert not list(device_cache_dir(device).glob("*.tmp*"))


# ------------------------------------------------------------------------- the measuring worker
def test_evaluations_never_wait_for_another_trials_latency(tmp_path, gpu_ray, monkeypatch):
    """2 slots priced 1 trial ahead, evaluations of 1.5-3 s, measurements of 1 s each on the
    measuring worker, a latency budget: every evaluation starts after its own trial's measurement,
    measurements run while other trials train (the old engine measured only when no evaluation
    ran, so never), one at a time, and the slots stay busy."""
    monkeypatch.setattr(nas.engine, "LATENCY_TARGET", "fake_evaluators:sleeping_latencies")
    evals = tmp_path / "evals.jsonl"
    gpu_ray.write_text("")
    spec = parse_study(study_dict(
        tmp_path, trials=10, parallel=2, constraints={"latency_ms": 1000.0},
        latency={**LATENCY, "ahead": 1},
        evaluator={"name": "fake_evaluators:Sleeping", "min_s": 1.5, "max_s": 3.0, "log": str(evals)}),
        label="t")
    SearchEngine(spec).run()
    trials = load(tmp_path / "run").get_trials()
    assert len(trials) >= 10 and all(t.state == TrialState.COMPLETE for t in trials)
    assert all(t.user_attrs["latency_source"] == "measured" for t in trials)
    ev, lat = intervals(evals, "eval"), intervals(gpu_ray, "latency")
    originals = {t.user_attrs["config_hash"] for t in trials if "reused_from" not in t.user_attrs}
    assert len(ev) == len(lat) == len(originals) >= 6     # duplicates reuse, never re-measure
    measured = {e["hash"]: e for e in lat}
    for e in ev:    # a trial waits only for its own latency
        assert e["start"] >= measured[e["hash"]]["end"]
    during = [m for m in lat if any(e["start"] < m["start"] < e["end"] for e in ev)]
    assert len(during) >= 2, (lat, ev)     # measured while others trained
    sets = sorted({(m["start"], m["end"]) for m in lat})   # one set at a time: the worker
    assert all(a[1] <= b[0] + 1e-3 for a, b in zip(sets, sets[1:]))   # holds its device alone
    span = max(e["end"] for e in ev) - min(e["start"] for e in ev)
    utilisation = sum(e["end"] - e["start"] for e in ev) / (2 * span)
    assert utilisation > 0.6, utilisation     # draining the cluster per measurement gave ~0.3


def test_the_measuring_worker_holds_its_cores_and_training_gets_the_rest(tmp_path, gpu_ray, monkeypatch):
    monkeypatch.setattr(nas.engine, "LATENCY_TARGET", "fake_evaluators:sleeping_latencies")
    lines = []
    spec = parse_study(study_dict(tmp_path, trials=2, objectives=["accuracy", "latency_ms"],
                                  latency={**LATENCY, "cpus": 2}), label="t")
    SearchEngine(spec, on_progress=lambda p, line: lines.append(line)).run()
    assert any("up to 2 trial(s) at a time" in (line or "") for line in lines)    # 4 CPUs - 2
    trials = load(tmp_path / "run").get_trials()
    assert all(t.user_attrs["latency_device"].endswith("na2d_av pure PyTorch") for t in trials)
    assert all("x2 threads" in t.user_attrs["latency_device"] for t in trials)   # threads = cpus


def test_latencies_outlive_a_study_through_the_device_store(tmp_path, gpu_ray):
    first, second = tmp_path / "a", tmp_path / "b"
    for run in (first, second):
        run.mkdir()
        spec = parse_study(study_dict(run, trials=3, objectives=["accuracy", "latency_ms"],
                                      latency=LATENCY), label="t")
        SearchEngine(spec).run()
    a = {t.user_attrs["config_hash"]: t for t in load(first / "run").get_trials()}
    b = load(second / "run").get_trials()
    assert all(t.user_attrs["latency_source"] == "measured" for t in a.values())
    # same seed, same configs: the second study reads every latency from the device's store
    assert len(b) >= 3 and all(t.user_attrs["latency_source"] == "store" for t in b)
    for t in b:
        assert t.user_attrs["latency_ms"] == a[t.user_attrs["config_hash"]].user_attrs["latency_ms"]
    device = b[0].user_attrs["latency_device"]
    assert len(device_store(device).entries()) == len(a)


def test_a_measurement_past_its_timeout_fails_with_a_one_line_reason(tmp_path, gpu_ray, monkeypatch):
    monkeypatch.setattr(nas.engine, "LATENCY_TARGET", "fake_evaluators:sleeping_latencies")
    monkeypatch.setattr(nas.engine, "_LATENCY_GRACE_S", 0.0)
    spec = parse_study(study_dict(tmp_path, trials=2, parallel=1, constraints={"latency_ms": 1000.0},
                                  latency={**LATENCY, "timeout_s": 0.2}), label="t")
    SearchEngine(spec).run()
    trials = load(tmp_path / "run").get_trials()
    assert len(trials) >= 2 and all(t.state == TrialState.FAIL for t in trials)
    for t in trials:
        assert t.user_attrs["reason"].startswith("latency: timeout: ")
        assert "\n" not in t.user_attrs["reason"]
    assert not (tmp_path / "evals.jsonl").exists()     # never trained


def test_the_worker_stops_a_measurement_at_its_timeout(tiny_config):
    from nas.study import LatencySettings
    from nas.worker import run_latency

    settings = LatencySettings(repeats=1000, warmup=0, timeout_s=0.3).model_dump()
    result = run_latency(tiny_config.to_dict(), device="cpu", latency=settings, num_threads=1)
    assert result["ok"] is False and result["reason"] == "timeout: measurement ran longer than 0.3 s"


def test_a_missing_measuring_node_is_a_one_line_error(tmp_path, gpu_ray):
    spec = parse_study(study_dict(tmp_path, objectives=["accuracy", "latency_ms"],
                                  latency={"resource": "t4_box"}), label="study.yaml")
    with pytest.raises(SearchError, match=r"^study.yaml: latency: the measuring worker needs 1 CPU, "
                                          r"resource t4_box, but no Ray node offers the custom "
                                          r"resource 't4_box'"):
        SearchEngine(spec).run()
    assert load(tmp_path / "run").get_trials() == []


def test_the_driver_never_initialises_cuda(tmp_path, gpu_ray, monkeypatch):
    """`device: cuda:1` on a cluster whose GPUs (logical here) have no CUDA: only the measuring
    worker touches CUDA and says so in one line; the driver never calls into torch.cuda."""
    import torch

    calls = []

    def forbidden(name):
        def f(*a, **k):
            calls.append(name)
            raise AssertionError(f"the driver called torch.cuda.{name}")
        return f

    for name in ("init", "_lazy_init", "current_device", "get_device_name", "set_device",
                 "synchronize", "device_count"):
        monkeypatch.setattr(torch.cuda, name, forbidden(name))
    spec = parse_study(study_dict(tmp_path, device="cuda:1", resources={"cpus": 1},
                                  objectives=["accuracy", "latency_ms"], latency=LATENCY),
                       label="study.yaml")
    with pytest.raises(SearchError, match=r"^study.yaml: latency: the measuring worker \(1 CPU, 1 GPU, "
                                          r"device cuda:1\) failed: ValueError: device='cuda:1' but "
                                          r"CUDA is not available on "):
        SearchEngine(spec).run()
    assert calls == []
    # a CPU study runs to the end without the driver touching CUDA either
    other = tmp_path / "cpu"
    other.mkdir()
    SearchEngine(parse_study(study_dict(other, trials=2, objectives=["accuracy", "latency_ms"],
                                        latency=LATENCY), label="t")).run()
    assert calls == [] and len(load(other / "run").get_trials()) >= 2


def test_a_latency_model_spares_measuring_configs_far_over_budget(tmp_path, gpu_ray, monkeypatch):
    """`latency: {model: PATH}` fitted on the device (here the stand-in measurement's own formula,
    sum(widths) / 10 ms): widths[3] = 128 (24 ms) is far over a 20 ms budget, so the proposer
    rejects such a draw on the prediction (rejected_draws: latency_predicted): it never becomes a
    trial and is never measured; the others are measured, their prediction recorded."""
    import space
    from nas.latency import model as latency_model
    from nas.latency.device import device_string
    from nas_testing import TINY_SPACE

    monkeypatch.setattr(nas.engine, "LATENCY_TARGET", "fake_evaluators:sleeping_latencies")
    gpu_ray.write_text("")
    archs = list(space.load_space(TINY_SPACE).enumerate()) * 2      # 24 points: a finite margin
    settings = {"device": device_string("cpu", 1), "resolution": None, "batch": 1, "dtype": "fp32",
                "channels_last": False, "threads": 1, "protocol": 2}
    model = latency_model.fit(archs, [sum(c.widths) / 10 for c in archs], settings)
    assert model.margin < 0.1
    model.save(tmp_path / "model.json")
    spec = parse_study(study_dict(tmp_path, trials=8, constraints={"latency_ms": 20.0},
                                  latency={**LATENCY, "model": str(tmp_path / "model.json")}),
                       label="t")
    SearchEngine(spec).run()
    trials = load(tmp_path / "run").get_trials()
    measured = {e["hash"] for e in intervals(gpu_ray, "latency")}
    assert measured and not [t for t in trials if t.user_attrs["config"]["widths"][3] == 128]
    rejected = sum(t.user_attrs.get("rejected_draws", {}).get("latency_predicted", 0) for t in trials)
    assert rejected > 0           # 1 in 3 of the tiny space's draws has widths[3] = 128
    for t in trials:
        if "reused_from" not in t.user_attrs:
            ua = t.user_attrs
            assert ua["latency_source"] == "measured" and ua["config_hash"] in measured
            assert abs(ua["latency_predicted_ms"] - ua["latency_ms"]) < 1.0
    # the report shows predicted against measured, and counts what was never measured
    from reports import load_study_data
    from reports.figures import latency_model_figure

    figure = latency_model_figure(load_study_data(tmp_path / "run"))
    assert figure is not None and f"{rejected} config(s) were predicted over" in figure.caption
    assert len(figure.figure.data[-1].x) == len(measured)


@pytest.mark.parametrize("sampler", ["random", "default"])
def test_with_a_latency_model_a_draw_is_measured_before_it_can_be_a_trial_over_the_budget(
        tmp_path, gpu_ray, monkeypatch, sampler):
    """`latency: {model: auto}` from an empty store (no model for the first 10 measurements) and a
    16 ms budget over which 8 of the tiny space's 12 architectures lie (17.6 and 24 ms): every
    draw the model cannot place within the budget is measured before it becomes a trial, so no
    trial is over the budget; the draws measured over it are `latency_measured` rejections,
    each measured once (a later draw of one is rejected from the store without measuring)."""
    monkeypatch.setattr(nas.engine, "LATENCY_TARGET", "fake_evaluators:sleeping_latencies")
    monkeypatch.setenv("OVERLOCK_NAS_CACHE", str(tmp_path / "cache"))      # an empty store
    gpu_ray.write_text("")
    data = study_dict(tmp_path, trials=4, constraints={"latency_ms": 16.0},
                      latency={**LATENCY, "model": "auto"})
    if sampler == "default":
        data.pop("sampler")
    SearchEngine(parse_study(data, label="t")).run()
    trials = load(tmp_path / "run").get_trials()
    assert len(trials) == 4
    for t in trials:
        ua = t.user_attrs
        assert ua["latency_source"] == "measured" and ua["latency_ms"] <= 16.0, (t.number, ua)
        assert t.state == TrialState.COMPLETE
    rejected = Counter()
    for t in trials:
        rejected.update(t.user_attrs.get("rejected_draws", {}))
    assert rejected["latency_measured"] > 0, rejected
    times = Counter(e["hash"] for e in intervals(gpu_ray, "latency"))
    archs = {t.user_attrs["config_hash"] for t in trials}     # a repeated draw reuses a trial
    assert max(times.values()) == 1 and len(times) == len(archs) + rejected["latency_measured"]


def test_a_measurement_the_model_contradicts_is_measured_again_and_the_faster_kept(
        tmp_path, gpu_ray, monkeypatch):
    """The first measurement of each config reads 1.5x (interference), enough to put every one
    over a 20 ms budget; the model (margin < 10 %) contradicts it, so the config is measured once
    more and the faster reading kept: no config within budget is lost to one disturbed reading."""
    import space
    from nas.latency import model as latency_model
    from nas.latency.device import device_string
    from nas_testing import TINY_SPACE

    monkeypatch.setattr(nas.engine, "LATENCY_TARGET", "fake_evaluators:disturbed_latencies")
    for marker in Path(os.environ["FAKE_LATENCY_DISTURB"]).iterdir():
        marker.unlink()                       # every config's first reading is disturbed again
    gpu_ray.write_text("")
    archs = list(space.load_space(TINY_SPACE).enumerate()) * 2
    settings = {"device": device_string("cpu", 1), "resolution": None, "batch": 1, "dtype": "fp32",
                "channels_last": False, "threads": 1, "protocol": 2}
    latency_model.fit(archs, [sum(c.widths) / 10 for c in archs], settings).save(tmp_path / "model.json")
    spec = parse_study(study_dict(tmp_path, trials=6, constraints={"latency_ms": 20.0},
                                  latency={**LATENCY, "model": str(tmp_path / "model.json")}),
                       label="t")
    SearchEngine(spec).run()
    measured = [t for t in load(tmp_path / "run").get_trials()
                if t.user_attrs.get("latency_source") == "measured" and "reused_from" not in t.user_attrs]
    times = Counter(e["hash"] for e in intervals(gpu_ray, "latency"))
    assert measured
    for t in measured:
        ua, true = t.user_attrs, sum(t.user_attrs["config"]["widths"]) / 10
        assert t.state == TrialState.COMPLETE, ua.get("reason")
        assert times[ua["config_hash"]] == 2
        assert ua["latency_ms"] == pytest.approx(true) and ua["latency_first_ms"] == pytest.approx(1.5 * true)
        assert ua["latency_recheck"].startswith("+50% off the model's")


def test_a_reading_near_the_budget_is_measured_again_without_a_model(tmp_path, gpu_ray, monkeypatch):
    """No latency model, `recheck_near: 0.05`: first readings read 1.5x. 14.4 ms reads 21.6, 2.9 %
    over a 21 ms budget, inside the 5 %: measured again, 14.4 kept, trained. 17.6 reads 26.4, 26 % over:
    no second reading, recorded infeasible as measured."""
    monkeypatch.setattr(nas.engine, "LATENCY_TARGET", "fake_evaluators:disturbed_latencies")
    for marker in Path(os.environ["FAKE_LATENCY_DISTURB"]).iterdir():
        marker.unlink()                       # every config's first reading is disturbed again
    gpu_ray.write_text("")
    spec = parse_study(study_dict(tmp_path, trials=8, constraints={"latency_ms": 21.0},
                                  latency={**LATENCY, "recheck_near": 0.05}), label="t")
    SearchEngine(spec).run()
    own = [t for t in load(tmp_path / "run").get_trials()
           if t.user_attrs.get("latency_source") == "measured" and "reused_from" not in t.user_attrs]
    times = Counter(e["hash"] for e in intervals(gpu_ray, "latency"))
    by_true = {}
    for t in own:
        by_true.setdefault(sum(t.user_attrs["config"]["widths"]) / 10, []).append(t)
    assert by_true.get(14.4) and by_true.get(17.6), sorted(by_true)
    for t in by_true[14.4]:
        ua = t.user_attrs
        assert t.state == TrialState.COMPLETE and times[ua["config_hash"]] == 2
        assert ua["latency_ms"] == pytest.approx(14.4) and ua["latency_first_ms"] == pytest.approx(21.6)
        assert ua["latency_recheck"] == "within 5% of the 21 ms budget"
    for t in by_true[17.6]:
        ua = t.user_attrs
        assert t.state == TrialState.PRUNED and ua["infeasible"] and times[ua["config_hash"]] == 1
        assert ua["latency_ms"] == pytest.approx(26.4) and "latency_first_ms" not in ua


def test_a_stop_requeues_trials_waiting_for_or_in_latency_and_the_next_run_finishes_them(
        tmp_path, gpu_ray, monkeypatch):
    monkeypatch.setattr(nas.engine, "LATENCY_TARGET", "fake_evaluators:sleeping_latencies")
    spec = parse_study(study_dict(tmp_path, trials=6, parallel=2, constraints={"latency_ms": 1000.0},
                                  latency=LATENCY), label="t")
    engine = SearchEngine(spec)

    def stop_after_first_result(progress, line):
        if line and line.startswith("#") and "COMPLETE" in line:
            engine.request_stop()

    engine.on_progress = stop_after_first_result
    assert engine.run().interrupted
    first = load(tmp_path / "run").get_trials()
    requeued = [t for t in first if t.user_attrs.get("superseded")]
    assert requeued, "trials priced ahead or in measurement were held when the stop came"
    assert all(t.user_attrs["reason"] == "interrupted" for t in requeued)
    assert sum(t.state == TrialState.WAITING for t in first) == len(requeued)
    SearchEngine(spec).run()
    trials = load(tmp_path / "run").get_trials()
    done = [t for t in trials if not t.user_attrs.get("superseded")]
    assert all(t.state == TrialState.COMPLETE for t in done) and len(done) >= 6
    assert all(t.params in [d.params for d in done] for t in requeued)    # nothing lost
    assert not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)


# ------------------------------------------------------------- configs measured together (issue 26)
def _configs(tiny_config, resolutions):
    return [{**tiny_config.to_dict(), "resolution": [r, r]} for r in resolutions]


def test_configs_measured_together_each_get_their_own_reading(tiny_config, monkeypatch):
    """Three configs of different sizes measured in one interleaved set (one `measure_latencies`
    call): each reading is its own config's (its resolution, and the biggest reads slowest)."""
    import nas.latency.measure as measure
    from nas.study import LatencySettings
    from nas.worker import run_latencies

    calls, real = [], measure.measure_latencies
    monkeypatch.setattr(measure, "measure_latencies", lambda cs, **kw: calls.append(len(cs)) or real(cs, **kw))
    settings = LatencySettings(repeats=4, warmup=1).model_dump()
    out = run_latencies(_configs(tiny_config, [192, 32, 96]), device="cpu", latency=settings, num_threads=1)
    assert calls == [3] and [r["ok"] for r in out] == [True] * 3
    assert [r["latency_resolution"] for r in out] == [[192, 192], [32, 32], [96, 96]]
    assert out[0]["latency_ms"] > out[1]["latency_ms"]        # 36x the pixels (12 and 9 ms here)
    assert all("interleaved over 3 configs" in r["latency_protocol"] for r in out)


def test_a_config_that_fails_in_a_set_fails_alone_and_the_others_keep_their_readings(tiny_config, monkeypatch):
    """A set of 8 with one config that runs out of memory: the set is halved until that config is
    measured alone; it fails with a one-line reason, the seven others are measured."""
    import nas.latency.measure as measure
    from nas.study import LatencySettings
    from nas.worker import run_latencies

    calls = []

    def fake(configs, **kw):
        calls.append([c.resolution[0] for c in configs])
        if any(c.resolution[0] == 40 for c in configs):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return [{"latency_ms": float(c.resolution[0]), "latency_resolution": list(c.resolution)} for c in configs]

    monkeypatch.setattr(measure, "measure_latencies", fake)
    resolutions = [32, 36, 40, 44, 48, 52, 56, 60]
    out = run_latencies(_configs(tiny_config, resolutions), device="cpu",
                        latency=LatencySettings().model_dump(), num_threads=1)
    assert [r["ok"] for r in out] == [r != 40 for r in resolutions]
    assert [r["latency_ms"] for r in out if r["ok"]] == [float(r) for r in resolutions if r != 40]
    assert out[2]["reason"].startswith("out of memory: ") and "\n" not in out[2]["reason"]
    assert calls == [resolutions, resolutions[:4], [32, 36], [40, 44], [40], [44], resolutions[4:]]


def test_the_driver_measures_a_set_at_most_as_large_as_the_protocols_group():
    from nas.latency.measure import GROUP
    from nas.search.pricing import MEASURE_SET

    assert MEASURE_SET == GROUP


def test_readings_of_a_set_go_to_their_own_trials_and_a_failing_config_fails_only_its_trial(
        tmp_path, gpu_ray, monkeypatch):
    """Every config reads its own latency (`labelled_latencies`: no two architectures alike), the
    measuring worker measures sets of several (2 slots priced 6 ahead), and the configs with
    region_count 3, which fail in the worker, fail their own trials with a one-line reason."""
    monkeypatch.setattr(nas.engine, "LATENCY_TARGET", "fake_evaluators:labelled_latencies")
    gpu_ray.write_text("")
    spec = parse_study(study_dict(tmp_path, trials=10, parallel=2, constraints={"latency_ms": 1000.0},
                                  latency={**LATENCY, "ahead": 6}), label="t")
    SearchEngine(spec).run()
    trials = [t for t in load(tmp_path / "run").get_trials() if "reused_from" not in t.user_attrs]
    sets = Counter(e["set"] for e in intervals(gpu_ray, "latency"))
    assert max(sets) > 1, sets
    failed = [t for t in trials if t.user_attrs["config"]["region_count"] == 3]
    assert failed and len(failed) < len(trials)
    for t in trials:
        ua = t.user_attrs
        if ua["config"]["region_count"] == 3:
            assert t.state == TrialState.FAIL
            assert ua["reason"] == "latency: out of memory: scripted (region_count 3)"
        else:
            assert t.state == TrialState.COMPLETE, ua.get("reason")
            assert ua["latency_ms"] == pytest.approx(sum(ua["config"]["widths"]) / 10
                                                     + ua["config"]["region_count"] / 100)


def test_a_set_lost_whole_is_measured_again_one_config_at_a_time(tmp_path, gpu_ray, monkeypatch):
    """A config that kills the measuring worker (a set holding region_count 3 dies): its set is
    measured again one config at a time, so only that config's trial fails; it is said once."""
    monkeypatch.setattr(nas.engine, "LATENCY_TARGET", "fake_evaluators:set_killing_latencies")
    gpu_ray.write_text("")
    lines = []
    spec = parse_study(study_dict(tmp_path, trials=6, parallel=2, constraints={"latency_ms": 1000.0},
                                  latency={**LATENCY, "ahead": 4}), label="t")
    SearchEngine(spec, on_progress=lambda p, line: lines.append(line)).run()
    trials = [t for t in load(tmp_path / "run").get_trials() if "reused_from" not in t.user_attrs]
    killers = [t for t in trials if t.user_attrs["config"]["region_count"] == 3]
    assert killers and len(killers) < len(trials)
    for t in trials:
        if t in killers:
            assert t.state == TrialState.FAIL and t.user_attrs["reason"].startswith("latency: worker "), \
                t.user_attrs["reason"]           # worker died / unavailable (Ray says which)
        else:
            assert t.state == TrialState.COMPLETE, t.user_attrs.get("reason")
    said = [line for line in lines if line and "measured together" in line]
    assert said and all(line.endswith("measuring each alone") for line in said)
