"""Opening stored studies for reading: a run directory, a journal file or an Optuna RDB URL.

One place for the readers of a study (reports, export); the search engine opens its own storage
for writing (`nas.engine.open_storage`). Light on purpose: optuna only, no torch.
"""

from __future__ import annotations

from pathlib import Path

JOURNAL_NAME = "study.log"


class StorageError(ValueError):
    """A storage or study that cannot be opened; the message is one line."""


def open_storage(run_dir=None, storage=None):
    """(optuna storage, label, run_dir or None, url or None); StorageError on anything unreadable."""
    import optuna

    if storage is None:
        if run_dir is None:
            raise StorageError("give a RUN_DIR or --storage URL")
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise StorageError(f"{run_dir}: no such run directory")
        journal = run_dir / JOURNAL_NAME
        if not journal.is_file():
            below = sorted(run_dir.glob(f"*/{JOURNAL_NAME}")) + sorted(run_dir.glob(f"*/*/{JOURNAL_NAME}"))
            if below:
                raise StorageError(f"{run_dir} is a folder of {len(below)} run directories, not one: pass one "
                                  f"(e.g. {below[0].parent}) or browse them all with --serve")
            raise StorageError(f"{run_dir}: no {JOURNAL_NAME} here (not a run directory, or the study "
                              f"lives in another storage: use --storage URL --study NAME)")
        storage = str(journal)
    storage = str(storage)
    if "://" not in storage and Path(storage).is_dir():  # a run directory given as --storage
        return open_storage(run_dir=storage)
    try:
        if "://" not in storage:  # a journal file path
            path = Path(storage)
            if not path.is_file():
                raise StorageError(f"{storage}: no such journal file")
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            opened = JournalStorage(JournalFileBackend(str(path)))
            return opened, str(path), Path(run_dir) if run_dir else path.parent, None
        if storage.startswith("sqlite:///"):
            path = Path(storage[len("sqlite:///"):])
            if not path.is_file():
                raise StorageError(f"{storage}: no such SQLite file")
        opened = optuna.storages.RDBStorage(storage, skip_table_creation=True)
        return opened, _redact(storage), Path(run_dir) if run_dir else None, storage
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001  (driver, auth, corrupt file: one line to the user)
        raise StorageError(f"cannot open storage {_redact(storage)}: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def _redact(url: str) -> str:
    """Hide a password in a database URL."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def study_names(storage) -> list[str]:
    import optuna

    try:
        return list(optuna.get_all_study_names(storage))
    except Exception as exc:  # noqa: BLE001
        raise StorageError(f"cannot list studies: {type(exc).__name__}: {exc}") from None


def resolve_study_name(storage, label: str, study_name: str | None) -> str:
    names = study_names(storage)
    if study_name is not None:
        if study_name not in names:
            known = ", ".join(names) if names else "none"
            raise StorageError(f"no study named {study_name!r} in {label} (studies there: {known})")
        return study_name
    if not names:
        raise StorageError(f"{label}: no study stored yet")
    if len(names) > 1:
        raise StorageError(f"{label} holds {len(names)} studies: pass --study NAME (one of: "
                          f"{', '.join(names)})")
    return names[0]




def open_study(run_dir=None, storage=None, study_name=None):
    """(study, label) for reading: `RUN_DIR/study.log`, a journal file or an RDB URL."""
    import optuna

    opened, label, _, _ = open_storage(run_dir, storage)
    name = resolve_study_name(opened, label, study_name)
    return optuna.load_study(study_name=name, storage=opened), label
