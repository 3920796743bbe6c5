"""Option checks shared by the subcommands: each bad value is a one-line `click.BadParameter`
(exit 2) naming the option, the value and the rule."""

from __future__ import annotations

import re

import click

DEVICE_RULE = "cpu, cuda, cuda:N or auto"


def check_device(text: str, option: str = "--device", allow_auto: bool = True) -> str:
    """`text` if it names a device this machine has; else BadParameter (one line)."""
    rule = DEVICE_RULE if allow_auto else DEVICE_RULE.replace(" or auto", "").replace("cuda, ", "cuda or ")
    if not re.fullmatch(r"cpu|cuda(:\d+)?" + ("|auto" if allow_auto else ""), text or ""):
        raise click.BadParameter(f"{text!r} is not a device: use {rule}", param_hint=option)
    if text.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(text.split(":")[1]) if ":" in text else 0
        if count == 0:
            raise click.BadParameter(f"{text!r}: this machine has no CUDA device", param_hint=option)
        if index >= count:
            raise click.BadParameter(f"{text!r}: this machine has {count} CUDA device(s), "
                                     f"cuda:0..cuda:{count - 1}", param_hint=option)
    return text


def yaml_mapping(ctx, param, text):
    """A click callback: the option's YAML mapping (`{}` when not given); BadParameter otherwise."""
    import yaml

    if text is None:
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise click.BadParameter(f"{text!r} must be a YAML mapping, e.g. '{{batch_size: 32}}'")
    return value
