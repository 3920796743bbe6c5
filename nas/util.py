"""Small helpers every part of `nas` and `reports` shares, each written once.

- One-line errors (the project's convention: an error names what failed in one line):
  `folded(value)` (whitespace runs made one space), `one_line(error)` (`Type: message`) and
  `first_line(value)` (the first line of a message, e.g. a YAML or Ray traceback's).
- `write_atomic(path, data)`: a file a reader sees whole or not at all.
- `preview(value)`: a value as JSON, cut to part of a line (messages about settings).
- `space_size(space)`: how many architectures a space holds, or None when it cannot say.
- `derived_seed(*values)`: a 31-bit seed mixed from integers, the same in every process (the
  driver's: trial seeds, sampler seeds); `seed_mix(*values)`: a 63-bit one (FNV-1a; the data
  pipeline's and the training loop's per-step seeds). Two mixings, because each is what stored
  studies and trained weights were made with.

Standard library and numpy only (imported by the CLI before anything heavy).

    >>> one_line(ValueError("no such\\n  file"))
    'ValueError: no such file'
    >>> first_line(RuntimeError("  line one\\nline two"))
    'line one'
    >>> preview({"b": [1, 2], "a": "x"}, 12)
    '{"a": "x", "...'
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def folded(value) -> str:
    """`str(value)` on one line: every run of whitespace (newlines too) one space."""
    return " ".join(str(value).split())


def one_line(error: BaseException, limit: int = 300) -> str:
    """`Type: the message` on one line (`folded`, cut to `limit` characters); the type alone
    when the message is empty."""
    text = folded(error)
    return f"{type(error).__name__}: {text[:limit]}" if text else type(error).__name__


def first_line(value, limit: int | None = None, empty: str | None = None) -> str:
    """The first line of `str(value)` (stripped), cut to `limit` characters. An empty message
    gives `empty`, or the type's name when `empty` is None."""
    text = str(value).strip()
    if not text:
        return type(value).__name__ if empty is None else empty
    line = text.splitlines()[0]
    return line if limit is None else line[:limit]


def write_atomic(path, data: bytes | str, *, suffix: str | None = None, fsync: bool = False) -> Path:
    """Write `data` (bytes, or text as UTF-8) to `path` through a temporary file beside it
    (`path + suffix`; by default `.tmp<pid>`, so two processes never share one) and a rename, so a
    reader sees the old file or the new one, never half of one. `fsync`: the data reaches the disk
    before the rename. Returns `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + (suffix if suffix is not None else f".tmp{os.getpid()}"))
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def preview(value, limit: int = 120) -> str:
    """`value` as JSON (keys sorted, anything else as a string), cut to `limit` characters and
    `...`."""
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def space_size(space) -> int | None:
    """The number of architectures `space` holds; None when it cannot count them (too many
    paths, or a continuous dimension)."""
    try:
        return int(space.size())
    except Exception:  # noqa: BLE001 - the size is informative: any failure means "unknown"
        return None


def derived_seed(*values: int) -> int:
    """A 31-bit seed mixed from several integers (each taken mod 2**32), stable across processes
    and platforms (numpy's `SeedSequence`)."""
    import numpy as np

    return int(np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(1)[0] >> 1)


def seed_mix(*values: int) -> int:
    """A deterministic 63-bit seed from integers (FNV-1a; no Python hash randomisation)."""
    h = 1469598103934665603
    for v in values:
        h = ((h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) % (1 << 64)
    return h & ((1 << 63) - 1)
