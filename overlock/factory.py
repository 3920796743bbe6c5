"""One place that turns a name, a config or an exported model directory into a model."""

from __future__ import annotations

import os
from typing import Any

from .config import PRESETS, ConfigError, OverLoCKConfig
from .model import OverLoCK

_MODEL_KWARGS = ("drop_path_rate", "use_checkpoint", "ls_init_value")


def list_models() -> list[str]:
    """Preset names: train structure and `_reparam` (deploy structure) for each."""
    return [n for p in PRESETS for n in (p, f"{p}_reparam")]


def resolve_config(spec: str | OverLoCKConfig | dict, **overrides: Any) -> tuple[OverLoCKConfig, bool]:
    """(config, deploy) for a preset name, a config or a config dict, with field overrides."""
    deploy = False
    if isinstance(spec, OverLoCKConfig):
        config = spec
    elif isinstance(spec, dict):
        config = OverLoCKConfig.from_dict(spec)
    elif isinstance(spec, str):
        name = spec
        if name.endswith("_reparam"):
            name, deploy = name[: -len("_reparam")], True
        if name not in PRESETS:
            raise ConfigError(f"unknown model {spec!r}; known: {', '.join(list_models())} "
                              "or an exported model directory")
        config = PRESETS[name]
    else:
        raise ConfigError(f"create_model takes a name, an OverLoCKConfig or a dict, not {type(spec).__name__}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides:
        config = config.replace(**overrides)
    return config, deploy


def create_model(spec: str | OverLoCKConfig | dict | os.PathLike, *, deploy: bool | None = None,
                 **kwargs: Any) -> OverLoCK:
    """Build an OverLoCK model.

    Args:
        spec: a preset name (`overlock_t`, `overlock_t_reparam`, ...), an `OverLoCKConfig`, a config
            dict, or the path of a directory written by `overlock-nas export` (config + weights).
        deploy: build the re-parameterised structure (default: from the name / directory).
        **kwargs: config field overrides (e.g. `num_classes=10`, `region_count=5`) and model options
            (`drop_path_rate`, `use_checkpoint`, `ls_init_value`).

    Raises:
        ConfigError: unknown name, invalid field, or a corrupt/mismatched model directory.
    """
    model_kwargs = {k: kwargs.pop(k) for k in _MODEL_KWARGS if k in kwargs}
    if isinstance(spec, (str, os.PathLike)) and os.path.isdir(spec):
        from .hub import load_model_dir

        return load_model_dir(spec, deploy=deploy, **kwargs, **model_kwargs)
    config, named_deploy = resolve_config(spec, **kwargs)
    return OverLoCK(config, deploy=named_deploy if deploy is None else deploy, **model_kwargs)
