"""The driver's journal file, written once per step instead of once per attribute.

Optuna's `JournalFileBackend` takes its lock, opens, writes, fsyncs and closes the file for every
record, and a trial writes about thirty (each param, each user attribute, the constraints, the
tell). With an instant evaluator that was a third of the driver's time (profile of 200 trials of
the xt_t space, 8,700 fsyncs). `BufferedJournalFileBackend` keeps appended records in memory,
serves them to reads at once (the storage reads back after each write), and appends them in one
write and one fsync on `flush()`: the driver flushes at the end of every step, before it waits
for a task, and when it stops; a record is also never held longer than `max_delay_s`.

What a crash can lose: the records of the step in progress (the driver keeps one study per run
directory, so nobody else reads them before that; a resumed driver re-asks those trials).
"""

from __future__ import annotations

import atexit
import time
import weakref
from typing import Any, Generator

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

# storage -> its buffered backend (`JournalStorage` has no public reader of its backend)
_BUFFERED: "weakref.WeakKeyDictionary[JournalStorage, BufferedJournalFileBackend]" = weakref.WeakKeyDictionary()


class BufferedJournalFileBackend(JournalFileBackend):
    """A `JournalFileBackend` whose appends wait in memory until `flush()` (module docstring).

    Only for a file one process writes (the driver holds the run directory's lock).
    """

    def __init__(self, file_path: str, lock_obj=None, max_delay_s: float = 1.0):
        super().__init__(file_path, lock_obj)
        self.max_delay_s = max_delay_s
        self._pending: list[dict[str, Any]] = []
        self._pending_since = 0.0
        self._in_file: int | None = None        # records in the file (known after the first read)
        ref = weakref.ref(self)
        atexit.register(lambda: ref() is not None and ref().flush())

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if self._in_file is None:                 # nobody read the file yet: count it first
            for _ in self.read_logs(0):
                pass
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.extend(logs)
        if time.monotonic() - self._pending_since > self.max_delay_s:
            self.flush()

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        if self._in_file is None or log_number_from < self._in_file:
            read = 0
            for log in super().read_logs(log_number_from):
                read += 1
                yield log
            if self._in_file is None:
                self._in_file = log_number_from + read
        yield from self._pending[max(0, log_number_from - self._in_file):]

    def flush(self) -> None:
        """Append the records held in memory (one write, one fsync)."""
        if self._pending:
            pending, self._pending = self._pending, []
            super().append_logs(pending)
            self._in_file += len(pending)


def buffered_storage(file_path: str, max_delay_s: float = 1.0) -> JournalStorage:
    """A `JournalStorage` on `file_path` whose records wait in memory until `flush(storage)`
    (or `max_delay_s`)."""
    backend = BufferedJournalFileBackend(file_path, max_delay_s=max_delay_s)
    storage = JournalStorage(backend)
    _BUFFERED[storage] = backend
    return storage


def flush(storage) -> None:
    """Flush `storage` when `buffered_storage` opened it (else nothing)."""
    try:
        backend = _BUFFERED.get(storage)
    except TypeError:             # not hashable: not one of ours
        return
    if backend is not None:
        backend.flush()
