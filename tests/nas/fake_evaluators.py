"""Test-only evaluators, loaded by a study file as `evaluator: {name: "fake_evaluators:Scripted"}`.

`Scripted` scores a config with a deterministic formula (no training), and misbehaves on cue
to exercise the engine's failure handling: which config does what is keyed on `region_count`.
Every call appends a JSON line to `log` (when set), so tests can count what was evaluated.
"""

from __future__ import annotations

import json
import os
import time


class Scripted:
    name = "scripted"
    metric = "accuracy"

    def __init__(self, settings: dict):
        self.settings = dict(settings)
        self.rungs = list(self.settings.get("rungs", []))
        self.sleep_s = float(self.settings.get("sleep_s", 0.0))
        self.log = self.settings.get("log")
        # region_count -> behaviour: "raise", "nan", "hang", "die_once", "trial_error"
        self.script = {int(k): v for k, v in (self.settings.get("script") or {}).items()}

    def _log(self, **entry):
        try:
            import ray

            entry["node"] = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        except ImportError:
            pass
        if self.log:
            with open(self.log, "a") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "t": time.time(), **entry}) + "\n")

    def evaluate(self, config, *, budget_epochs, device, seed, workdir, resume_from, weights_name=None):
        full = self.rungs[-1] if self.rungs else 1
        epochs = budget_epochs or full
        start = 0
        if resume_from:
            with open(resume_from) as fh:
                start = json.load(fh)["epochs"]
        behaviour = self.script.get(config.region_count)
        self._log(hash=config.config_hash(), budget=epochs, resume=bool(resume_from),
                  behaviour=behaviour)
        if behaviour == "die_once":
            marker = os.path.join(os.path.dirname(self.log), f"died-{config.config_hash()}")
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)          # the worker process dies: Ray must retry the task
        if behaviour == "raise":
            raise RuntimeError("scripted failure")
        if behaviour == "trial_error":
            from nas.evaluators import TrialError

            raise TrialError("out of memory on cpu (scripted)")
        if behaviour == "hang":
            time.sleep(3600)
        time.sleep(self.sleep_s * (epochs - start))
        # a bigger last stage and more regions score higher; more epochs score higher
        score = (config.widths[3] / 64 + config.region_count / 10) / 2 * (0.5 + 0.5 * epochs / full)
        if behaviour == "nan":
            score = float("nan")
        history = [score * (e + 1) / epochs for e in range(epochs)]
        weights = os.path.join(workdir, f"{weights_name}.safetensors")
        with open(weights, "w") as fh:
            json.dump({"epochs": epochs, "hash": config.config_hash()}, fh)
        out = {"score": score, "epochs": epochs, "history": history, "weights": weights,
               "fidelity": epochs / full}
        if self.settings.get("val_loss") == "against_accuracy":   # ranks the other way round
            out["val_loss"] = [h for h in history]
        return out


class Sleeping:
    """Sleeps instead of training, for a time set by the config (so evaluations differ in length):
    `min_s + (max_s - min_s) * u`, u in [0, 1] from the config's MACs placed in `flops_range`
    [low, high] (training time grows with them), or from the config hash without a range. Logs
    {hash, start, end} per evaluation to `log`, so a test or benchmark can compute utilisation."""

    name = "sleeping"
    metric = "accuracy"

    def __init__(self, settings: dict):
        self.settings = dict(settings)
        self.rungs = []
        self.min_s = float(self.settings.get("min_s", 2.0))
        self.max_s = float(self.settings.get("max_s", 8.0))
        self.log = self.settings.get("log")

    def duration(self, config) -> float:
        span = self.settings.get("flops_range")
        if span:
            import space

            low, high = (float(x) for x in span)
            u = (space.complexity(config).flops - low) / max(high - low, 1.0)
        else:
            u = int(config.config_hash()[:8], 16) / 16 ** 8
        return self.min_s + (self.max_s - self.min_s) * min(max(u, 0.0), 1.0)

    def evaluate(self, config, *, budget_epochs, device, seed, workdir, resume_from, weights_name=None):
        start = time.time()
        time.sleep(self.duration(config))
        end = time.time()
        if self.log:
            with open(self.log, "a") as fh:
                fh.write(json.dumps({"kind": "eval", "hash": config.config_hash(), "start": start,
                                     "end": end}) + "\n")
        return {"score": config.widths[3] / 256 + config.region_count / 100, "epochs": 1,
                "fidelity": 1.0}


def sleeping_latencies(configs: list[dict], *, device: str, latency: dict, num_threads,
                       limit_s=None) -> list[dict]:
    """A stand-in for `nas.worker:run_latencies`: the configs measured together take
    `FAKE_LATENCY_S` seconds in all (one call, whatever the set's size), each
    logged with the set's start and end and its size (`set`); each latency is its widths' sum / 10."""
    from overlock import OverLoCKConfig

    cfgs = [OverLoCKConfig.from_dict(c) for c in configs]
    start = time.time()
    time.sleep(float(os.environ.get("FAKE_LATENCY_S", "1")))
    end = time.time()
    log = os.environ.get("FAKE_LATENCY_LOG")
    if log:
        with open(log, "a") as fh:
            for cfg in cfgs:
                fh.write(json.dumps({"kind": "latency", "hash": cfg.config_hash(), "start": start,
                                     "end": end, "set": len(cfgs)}) + "\n")
    from nas.measure import device_string

    return [{"ok": True, "latency_ms": float(sum(cfg.widths)) / 10.0,
             "latency_device": device_string("cpu", num_threads),
             "latency_batch": latency["batch"], "latency_dtype": latency["dtype"],
             "latency_channels_last": latency["channels_last"],
             "latency_protocol": f"sleeping stand-in, rounds interleaved over {len(cfgs)} configs"}
            for cfg in cfgs]


def labelled_latencies(configs: list[dict], **kwargs) -> list[dict]:
    """`sleeping_latencies` + region_count / 100 ms: every architecture of the tiny space reads
    its own latency, so a reading handed to a neighbour in its set shows. A config with
    region_count 3 fails alone, as the real worker reports a config that broke its set."""
    from overlock import OverLoCKConfig

    out = sleeping_latencies(configs, **kwargs)
    for config, reading in zip(configs, out):
        regions = OverLoCKConfig.from_dict(config).region_count
        reading["latency_ms"] += regions / 100.0
        if regions == 3:
            reading.clear()
            reading.update(ok=False, reason="out of memory: scripted (region_count 3)", error="")
    return out


def set_killing_latencies(configs: list[dict], **kwargs) -> list[dict]:
    """`sleeping_latencies`, except that a set holding a config with region_count 3 kills the
    measuring worker (a native crash or the OOM killer): no reading comes back for any of it."""
    from overlock import OverLoCKConfig

    if any(OverLoCKConfig.from_dict(c).region_count == 3 for c in configs):
        os._exit(1)
    return sleeping_latencies(configs, **kwargs)


def disturbed_latencies(configs: list[dict], **kwargs) -> list[dict]:
    """`sleeping_latencies`, except that the first measurement of each config reads 1.5x (a burst
    of interference); a marker file per config in `$FAKE_LATENCY_DISTURB` remembers it."""
    from overlock import OverLoCKConfig

    out = sleeping_latencies(configs, **kwargs)
    for config, reading in zip(configs, out):
        marker = os.path.join(os.environ["FAKE_LATENCY_DISTURB"], OverLoCKConfig.from_dict(config).config_hash())
        if not os.path.exists(marker):
            open(marker, "w").close()
            reading["latency_ms"] *= 1.5
    return out
