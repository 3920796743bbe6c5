"""A study's latency model at work: skip measuring configs predicted far over the latency budget.

`latency: {model: auto | PATH}` in a study file (issue 13). The engine asks `judge(config)` before
queueing a config for the measuring worker:

- a config whose *optimistic* latency, the prediction less the model's stated margin
  (`LatencyModel.interval(config)[0]`), is still over the budget is recorded infeasible without
  being measured (`latency_source: predicted`);
- every other config is measured (those near the boundary, and those under it: their latency is
  recorded, and it is an objective or trains anyway), and every new measurement goes into the next
  refit of the model (in a background thread: the driver never waits for a fit).

`auto` fits from the device store's measurements at exactly the study's settings (device string,
batch, dtype, memory format; each config at its own resolution) once there are `MIN_AUTO` of
them, and saves the model beside the store (`nas.latency.model.model_path`). `PATH` starts from a
model file fitted at the same settings (`overlock-nas latency fit`), refitted in memory as the
study measures more.

    >>> p = LatencyPredictor("auto", settings, store, budget_ms=3.0)
    >>> p.judge(config)   # {"predicted_ms", "low_ms", "high_ms", "margin", "n", "mape", "skip"} or None
    >>> p.learn(config, 2.7)     # a measurement of this study
"""

from __future__ import annotations

import threading
from pathlib import Path

from . import model as latency_model
from .store import store_key

MIN_AUTO = 10          # measurements before `auto` fits a first model


class LatencyPredictorError(ValueError):
    """The model cannot be used for this study (one line: the file, the field, the rule)."""


class LatencyPredictor:
    """Predictions for one study's latency settings, refitted as measurements arrive.

    Args:
        source: "auto", or the path of a model file.
        settings: the latency model's settings (`nas.latency.store.measurement_settings`:
            device string, resolution None, batch, dtype, channels_last, threads).
        store: the device's `LatencyCache` (entries carry their `config` when the engine wrote them).
        budget_ms: the latency budget, or None (then nothing is skipped; predictions are recorded).
        background: refit in a thread (the driver's case); False refits before `learn` returns.
    """

    def __init__(self, source: str, settings: dict, store, budget_ms: float | None,
                 background: bool = True):
        self.source, self.settings, self.budget_ms = source, dict(settings), budget_ms
        self.background = background
        self.configs: list = []
        self.latencies: list[float] = []
        self.model = None
        self.fits = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._dirty = False
        if source == "auto":
            self._harvest(store)
            self._path = latency_model.model_path(settings["device"], settings)
            if len(self.latencies) >= MIN_AUTO:
                self._fit()
        else:
            self._path = None
            self.model = self._load(Path(source))
            self.configs = list(self.model.configs)
            self.latencies = list(self.model.latencies_ms)

    # ------------------------------------------------------------------------------- sources
    def _harvest(self, store) -> None:
        """The store's measurements at exactly these settings (entries without a config are
        measurements made before configs were stored with them: not usable for fitting)."""
        for key, entry in store.entries().items():
            config = entry.get("config")
            if not config or "latency_ms" not in entry:
                continue
            cfg = _config(config)
            if key != store_key(cfg, self.settings):
                continue
            self.configs.append(cfg.to_dict())
            self.latencies.append(float(entry["latency_ms"]))

    def _load(self, path: Path):
        try:
            model = latency_model.load(path)
        except latency_model.LatencyModelError as e:
            raise LatencyPredictorError(f"latency.model: {e}") from None
        fitted, study = ({**s, "protocol": s.get("protocol", 1)} for s in (model.settings, self.settings))
        differ = [f"{k} {fitted.get(k)!r} (study: {study[k]!r})"
                  for k in ("device", "batch", "dtype", "channels_last", "threads", "protocol")
                  if fitted.get(k) != study[k]]
        if differ:
            raise LatencyPredictorError(f"latency.model: {path} was fitted at other settings: "
                                        f"{'; '.join(differ)}; refit it with `overlock-nas latency fit`")
        return model

    # ------------------------------------------------------------------------------- fitting
    def _fit(self) -> None:
        with self._lock:
            configs, latencies = list(self.configs), list(self.latencies)
        try:
            model = latency_model.fit(configs, latencies, self.settings)
        except latency_model.LatencyModelError:
            return      # e.g. too few distinct points: keep the previous model
        with self._lock:
            self.model, self.fits = model, self.fits + 1
        if self._path is not None:
            try:
                model.save(self._path)
            except OSError:
                pass    # the model is a cache: a read-only cache directory only costs refits

    def _refit_loop(self) -> None:
        while True:
            with self._lock:
                if not self._dirty:
                    self._thread = None
                    return
                self._dirty = False
            self._fit()

    def learn(self, config, latency_ms: float) -> None:
        """A new measurement of this study: it goes into the next refit."""
        with self._lock:
            self.configs.append(config.to_dict())
            self.latencies.append(float(latency_ms))
            if self.source == "auto" and len(self.latencies) < MIN_AUTO:
                return
            if self.background:
                self._dirty = True      # a running refit loop takes it; else start one
                if self._thread is None:
                    self._thread = threading.Thread(target=self._refit_loop, name="latency-refit",
                                                    daemon=True)
                    self._thread.start()
                return
        self._fit()

    def wait(self, timeout: float | None = None) -> None:
        """Until the refit in progress (if any) has finished (tests, end of a study)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # ------------------------------------------------------------------------------ judging
    def judge(self, config) -> dict | None:
        """The prediction for `config` and whether to skip measuring it, or None without a model.

        `skip` is True when even the low end of the model's interval (prediction less its
        stated margin) is over the budget.
        """
        model = self.model
        if model is None:
            return None
        predicted = float(model.predict(config))
        low, high = (float(v) for v in model.interval(config))
        skip = self.budget_ms is not None and low > self.budget_ms
        return {"predicted_ms": predicted, "low_ms": low, "high_ms": high,
                "margin": float(model.margin), "n": int(model.cv.get("n", len(model.latencies_ms))),
                "mape": float(model.cv.get("mape") or 0.0),
                "skip": bool(skip)}


def _config(config):
    from overlock import OverLoCKConfig

    return config if isinstance(config, OverLoCKConfig) else OverLoCKConfig.from_dict(config)
