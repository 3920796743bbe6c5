"""The driver's buffered journal (nas.search.journal): reads see every write at once, the file
gets them in one append per flush, and what it holds is what plain Optuna reads back."""

import os
import shutil

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from nas.search.journal import buffered_storage, flush
from nas_testing import HERE

optuna.logging.set_verbosity(optuna.logging.ERROR)


def test_writes_wait_for_the_flush_and_read_back_the_same(tmp_path):
    path = str(tmp_path / "study.log")
    storage = buffered_storage(path, max_delay_s=3600)
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize"])
    size = os.path.getsize(path)
    for i in range(5):
        trial = study.ask()
        trial.suggest_int("x", 0, 9)
        trial.set_user_attr("i", i)
        study.tell(trial, float(i))
    assert os.path.getsize(path) == size                      # nothing written yet...
    assert [t.user_attrs["i"] for t in study.get_trials()] == list(range(5))   # ...all readable
    flush(storage)
    plain = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(path)))
    assert [(t.number, t.params, t.user_attrs, t.values) for t in plain.get_trials()] == \
        [(t.number, t.params, t.user_attrs, t.values) for t in study.get_trials()]
    study.tell(study.ask(), 9.0)                               # and writing goes on after a flush
    flush(storage)
    assert len(optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(path))).trials) == 6


def test_one_append_per_flush(tmp_path, monkeypatch):
    appends = []
    original = JournalFileBackend.append_logs
    monkeypatch.setattr(JournalFileBackend, "append_logs",
                        lambda self, logs: (appends.append(len(logs)), original(self, logs)))
    storage = buffered_storage(str(tmp_path / "j.log"), max_delay_s=3600)
    study = optuna.create_study(study_name="s", storage=storage)
    appends.clear()
    for _ in range(3):
        trial = study.ask()
        trial.set_user_attr("a", 1)
        study.tell(trial, 1.0)
    flush(storage)
    assert len(appends) == 1 and appends[0] >= 9


def test_a_pinned_run_reads_the_same_through_the_buffer(tmp_path):
    src = next((HERE.parent / "data" / "runs").iterdir()) / "study.log"
    path = tmp_path / "study.log"
    shutil.copy(src, path)
    name = optuna.get_all_study_names(JournalStorage(JournalFileBackend(str(src))))[0]
    plain = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(src))))
    buffered = optuna.load_study(study_name=name,
                                 storage=buffered_storage(str(path)))
    assert [(t.number, t.state, t.params, t.user_attrs) for t in buffered.get_trials()] == \
        [(t.number, t.state, t.params, t.user_attrs) for t in plain.get_trials()]
