"""The run directory's weights files (RUN_DIR/weights/): one owner for their names and moves.

A trial's files are `<number>-<config hash>.safetensors` (the weights) and `.state.pt` beside it
(optimiser state, kept only while a trial may continue to its next rung). The evaluator writes
them in its worker under the name it is given (`stem`); they come back as bytes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from nas.storage import WEIGHTS_DIR
from nas.util import write_atomic

WEIGHTS_SUFFIX = ".safetensors"
STATE_SUFFIX = ".state.pt"


def stem(number: int, chash: str) -> str:
    """The file name (without suffix) of trial `number`'s files: what the evaluator is told."""
    return f"{number}-{chash}"


class WeightsDir:
    """RUN_DIR/weights."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.root = self.run_dir / WEIGHTS_DIR

    def paths(self, number: int, chash: str, existing: bool = True) -> dict[str, Path]:
        """{"weights": .safetensors, "state": .state.pt} of trial `number` (only existing files
        unless `existing=False`)."""
        base = self.root / stem(number, chash)
        paths = {"weights": Path(str(base) + WEIGHTS_SUFFIX), "state": Path(str(base) + STATE_SUFFIX)}
        return {k: p for k, p in paths.items() if not existing or p.exists()}

    def read(self, number: int, chash: str) -> dict | None:
        """{key: (file name, bytes)} of the trial's files, sent to the worker that continues it."""
        out = {key: (path.name, path.read_bytes()) for key, path in self.paths(number, chash).items()}
        return out or None

    def write(self, name: str, data: bytes) -> str:
        """Write one file a worker sent back (atomically); returns its path relative to RUN_DIR."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, suffix=".part")
        return str(path.relative_to(self.run_dir))

    def move(self, number: int, to_number: int, chash: str) -> str | None:
        """Hand trial `number`'s files to `to_number` (a re-queued copy continues from them);
        returns the weights' new path relative to RUN_DIR, or None when there are none."""
        target = self.paths(to_number, chash, existing=False)
        for key, path in self.paths(number, chash).items():
            os.replace(path, target[key])
        weights = self.paths(to_number, chash).get("weights")
        return None if weights is None else str(weights.relative_to(self.run_dir))

    def relative(self, number: int, chash: str) -> str | None:
        weights = self.paths(number, chash).get("weights")
        return None if weights is None else str(weights.relative_to(self.run_dir))

    def delete(self, number: int, chash: str) -> None:
        """Every file of the trial (nobody will read them)."""
        for path in self.paths(number, chash).values():
            with contextlib.suppress(OSError):
                path.unlink()

    def drop_state(self, number: int, chash: str) -> None:
        """Optimiser state is only needed to continue training; a finished trial keeps weights."""
        path = self.paths(number, chash).get("state")
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()
