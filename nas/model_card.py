"""Moved to `nas.export.card`; this name re-exports it for one release."""

from nas.export.card import accuracy_dataset, model_card  # noqa: F401
