"""Writing files so that a reader never sees half of one: `atomic_write`."""

from __future__ import annotations

import os
from typing import Callable

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """`write(tmp)` a temporary file beside `path`, then rename it over `path` (atomic on one file
    system); the temporary file is removed when `write` fails."""
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
