"""Decode once: a split's base images in one uint8 memmap, shared by a node and reused.

Layout under the cache directory (`dataset.cache_dir`, else `<cache root>/data`, the cache root
being `$OVERLOCK_NAS_CACHE` or `~/.cache/overlock-nas`):

    <name>.u8     N x H x W x 3 uint8, the base images (resize + centre crop at the study's
                  resolution / crop_ratio), in file-table order
    <name>.json   written last (its presence means complete): shape, the listing digest, the
                  indices and reasons of unreadable images
    <name>.lock   fcntl lock: one process builds, the others wait and then read

`<name>` = `<folder>-<H>x<W>-<digest>`, the digest hashing the split's root, the relative paths,
labels, sizes and modification times of the chosen subset (so a class list, subset size or seed
gets its own file, and a replaced image is decoded again). Both
files are written under temporary names and renamed into place, so a killed builder leaves no
half file that a reader could take for a whole one.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from nas.util import write_atomic

FORMAT = 1


def cache_root() -> Path:
    """`$OVERLOCK_NAS_CACHE` if set, else `~/.cache/overlock-nas` (shared with the latency store,
    whose torch-free module owns the rule)."""
    from nas.latency.store import cache_root as store_root

    return Path(store_root())


def cache_dir(setting: str | None) -> Path:
    return Path(setting).expanduser() if setting else cache_root() / "data"


class CachedSplit:
    """An opened cache file: `images` (read-only memmap), `bad` (indices), `errors`, `state`."""

    def __init__(self, stem: Path, state: str):
        meta = json.loads(_file(stem, "json").read_text())
        self.stem = stem
        self.shape = tuple(meta["shape"])
        self.bad = np.asarray(meta["bad"], dtype=np.int64)
        self.errors = {int(k): v for k, v in meta["errors"].items()}
        self.state = state          # "built" (this process decoded it) or "reused"
        self._images = None

    @property
    def images(self) -> np.ndarray:
        # opened lazily, so every worker process maps the file itself
        if self._images is None:
            self._images = np.memmap(_file(self.stem, "u8"), dtype=np.uint8, mode="r",
                                     shape=self.shape)
        return self._images

    def __getstate__(self):
        return {**self.__dict__, "_images": None}


def open_or_build(directory: Path, name: str, shape: tuple[int, int, int, int],
                  decode: Callable[[], Iterable[tuple[np.ndarray, np.ndarray, list[str]]]]) -> CachedSplit:
    """Open the cache file `name`, building it first if no process has.

    `decode()` yields (indices, images (B, H, W, 3) uint8, errors) with errors[i] = "" for a
    readable image; it runs in at most one process per cache file at a time."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / name
    if _file(stem, "json").exists():
        return CachedSplit(stem, "reused")
    with _locked(_file(stem, "lock")):
        if _file(stem, "json").exists():     # another process built it while we waited
            return CachedSplit(stem, "reused")
        _check_space(directory, shape)
        _build(stem, shape, decode)
    return CachedSplit(stem, "built")


def _check_space(directory: Path, shape) -> None:
    import shutil

    from .spec import DataError

    need = int(np.prod(shape))
    free = shutil.disk_usage(directory).free
    if need > 0.95 * free:
        raise DataError(f"dataset.cache: the decoded split needs {need / 2 ** 30:.1f} GiB in {directory}, "
                        f"{free / 2 ** 30:.1f} GiB free (set dataset.cache_dir or cache: false)")


def _file(stem: Path, ext: str) -> Path:
    return stem.with_name(f"{stem.name}.{ext}")


@contextmanager
def _locked(path: Path):
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(stem: Path, shape, decode) -> None:
    tmp = stem.with_name(f"{stem.name}.u8.tmp{os.getpid()}")
    bad, errors = [], {}
    try:
        images = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        for index, batch, batch_errors in decode():
            images[index] = batch
            for i, reason in zip(index.tolist(), batch_errors):
                if reason:
                    bad.append(i)
                    if len(errors) < 20:
                        errors[i] = reason
        images.flush()
        del images
        os.replace(tmp, _file(stem, "u8"))
    finally:
        if tmp.exists():
            tmp.unlink()
    meta = {"format": FORMAT, "shape": list(shape), "bad": sorted(bad), "errors": errors,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_atomic(_file(stem, "json"), json.dumps(meta))
