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


PATH_PREFIX = "file:"


def model_dir_path(spec) -> str | None:
    """The model-directory path `spec` names, or None when it names a preset / config.

    A path is an `os.PathLike` (`pathlib.Path`), a string with the explicit prefix `file:`
    (`file:exports/trial-12`, as timm's `local-dir:`), or a string that cannot be a preset name
    because it holds a path separator or starts with `.` or `~` (`./overlock_t`,
    `exports/trial-12`, `/abs/dir`). Never decided by what happens to exist on disk.
    """
    if isinstance(spec, os.PathLike):
        return os.fspath(spec)
    if not isinstance(spec, str):
        return None
    if spec.startswith(PATH_PREFIX):
        return os.path.expanduser(spec[len(PATH_PREFIX):])
    if "/" in spec or os.sep in spec or spec.startswith((".", "~")):
        return os.path.expanduser(spec)
    return None


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
            hint = (f"; to load the directory {spec!r}, pass pathlib.Path({spec!r}) or "
                    f"'{PATH_PREFIX}{spec}'" if os.path.isdir(spec) else "")
            raise ConfigError(f"unknown model {spec!r}; known: {', '.join(list_models())} "
                              f"or an exported model directory (a pathlib.Path or '{PATH_PREFIX}DIR')"
                              + hint)
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
            dict, or a directory written by `overlock-nas export` (config + weights), given as a
            `pathlib.Path` or a string that is unmistakably a path (`model_dir_path`). A bare
            word is always a preset name: a folder called `overlock_t` never wins over the preset.
        deploy: build the re-parameterised structure (default: from the name / directory).
        **kwargs: config field overrides (e.g. `num_classes=10`, `region_count=5`) and model options
            (`drop_path_rate`, `use_checkpoint`, `ls_init_value`).

    Raises:
        ConfigError: unknown name, invalid field, or a corrupt/mismatched model directory.
    """
    model_kwargs = {k: kwargs.pop(k) for k in _MODEL_KWARGS if k in kwargs}
    path = model_dir_path(spec)
    if path is not None:
        from .hub import load_model_dir

        if not os.path.isdir(path):
            raise ConfigError(f"{spec!r}: no model directory at {path}")
        return load_model_dir(path, deploy=deploy, **kwargs, **model_kwargs)
    config, named_deploy = resolve_config(spec, **kwargs)
    return OverLoCK(config, deploy=named_deploy if deploy is None else deploy, **model_kwargs)
