"""Moved to `nas.latency.predictor`; this path re-exports it for one release."""

from nas.latency.predictor import MIN_AUTO, LatencyPredictor, LatencyPredictorError  # noqa: F401
