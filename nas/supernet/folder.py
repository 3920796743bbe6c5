"""The folder `overlock-nas supernet train --out DIR` writes, as its readers see it: where it is,
its card, its weights. One set of checks for every reader (the `supernet` evaluator, the
`supernet` proxy gate through it, `overlock-nas export --from-supernet`).

    >>> folder = resolve("supernets/qs")            # or supernets/qs/supernet.safetensors
    >>> card = read_card(folder)                     # card.json, checked
    >>> net = load(folder)                           # the Supernet, loaded once per process

Every check raises `SupernetFolderError` (a ValueError) with one line that does not name the
caller's field; each caller puts its own in front (`--from-supernet DIR: ...`,
`evaluator 'supernet': weights=...: ...`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from nas.util import one_line

__all__ = ["WEIGHTS_FILE", "CARD_JSON", "CARD_KEYS", "SupernetFolderError", "resolve", "read_card",
           "load"]

WEIGHTS_FILE = "supernet.safetensors"
CARD_JSON = "card.json"
# what every reader takes from the card (`nas.supernet.train.write_card` writes them all)
CARD_KEYS = ("dataset_settings", "dataset", "resolution", "num_classes", "epochs_done")

_LOADED: dict[tuple, Any] = {}   # (weights file, mtime, size) -> Supernet, one per process


class SupernetFolderError(ValueError):
    """Not a usable supernet folder (one line, without the caller's field name)."""


def resolve(path: str | os.PathLike) -> str:
    """The absolute folder of `path` (a folder, or its supernet.safetensors); SupernetFolderError
    when it lacks the weights or the card."""
    text = os.path.expanduser(os.fspath(path))
    folder = os.path.dirname(text) if text.endswith(".safetensors") else text
    missing = [f for f in (WEIGHTS_FILE, CARD_JSON) if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise SupernetFolderError(f"no {' and no '.join(missing)} there (not a folder `overlock-nas "
                                  "supernet train SPACE --out DIR` wrote)")
    return os.path.abspath(folder)


def read_card(folder: str) -> dict:
    """card.json of `folder`; SupernetFolderError when it cannot be read, lacks one of
    `CARD_KEYS`, or records no finished epoch."""
    try:
        with open(os.path.join(folder, CARD_JSON)) as fh:
            card = json.load(fh)
    except (OSError, ValueError) as e:
        raise SupernetFolderError(f"cannot read {CARD_JSON} ({one_line(e)})") from None
    missing = [k for k in CARD_KEYS if not isinstance(card, dict) or k not in card]
    if missing:
        raise SupernetFolderError(f"{CARD_JSON} lacks {missing[0]!r}")
    if not card["epochs_done"]:
        raise SupernetFolderError("the supernet has no finished epoch yet")
    return card


def load(folder: str):
    """The supernet of `folder` in eval mode, loaded once per process (again when the file
    changed); SupernetFolderError when the weights cannot be loaded."""
    from overlock import ConfigError
    from overlock.supernet import Supernet

    path = os.path.join(folder, WEIGHTS_FILE)
    try:
        stat = os.stat(path)
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in _LOADED:
            net = Supernet.load(path).eval()
            _LOADED.clear()
            _LOADED[key] = net
    except (ConfigError, OSError, ValueError, RuntimeError) as e:
        raise SupernetFolderError(f"cannot load {WEIGHTS_FILE} ({one_line(e)})") from None
    return _LOADED[key]


