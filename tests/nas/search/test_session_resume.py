"""Resuming a study compares the evaluator's settings with the stored ones: what changes a score
is refused, what changes only how inputs are loaded (or a setting added later, left unset) is not;
a setting the study file leaves unset keeps the stored study's value when its default changed."""

import pytest

from nas.search import journal
from nas.search.session import StudyMismatch, _same_evaluator, open_session
from nas.study import parse_study
from nas_testing import study_dict

STORED = {"name": "supernet", "weights": "/w", "bn_recalibration_batches": 4, "batch_size": 64,
          "eval_batch_size": 256, "resolution": [32, 32], "threads": None}


def test_settings_added_later_and_left_unset_or_loading_only_are_the_same_study():
    now = {**STORED, "keep_data_mb": 256, "val_images": None}
    assert _same_evaluator(STORED, now)
    assert _same_evaluator({**STORED, "keep_data_mb": 0}, now)


def test_a_setting_that_changes_the_score_is_a_different_study():
    assert not _same_evaluator(STORED, {**STORED, "batch_size": 32})
    assert not _same_evaluator(STORED, {**STORED, "val_images": 90})
    assert not _same_evaluator(STORED, {k: v for k, v in STORED.items() if k != "batch_size"})
    assert not _same_evaluator(STORED, {**STORED, "name": "train"})
    assert not _same_evaluator(STORED, None)


# ---------------------------------------------------------------- a default changed since a study began

def _stored_by_an_older_version(tmp_path, stored_epochs: int):
    """A study begun with the train evaluator when its `epochs` resolved to `stored_epochs`."""
    spec = parse_study(study_dict(tmp_path, evaluator=None) | {"evaluator": {"name": "train"}})
    spec.run_dir().mkdir()
    first = open_session(spec, spec.run_dir())
    assert first.evaluator.settings["epochs"] != stored_epochs   # else nothing would differ
    first.study.set_user_attr("evaluator", {**first.study.user_attrs["evaluator"], "epochs": stored_epochs})
    journal.flush(first.storage)
    return first.evaluator.settings["epochs"]


def test_a_resume_keeps_the_stored_value_of_a_setting_the_file_leaves_unset(tmp_path):
    default = _stored_by_an_older_version(tmp_path, stored_epochs=7)
    spec = parse_study(study_dict(tmp_path, evaluator=None) | {"evaluator": {"name": "train"}})
    session = open_session(spec, spec.run_dir())
    assert session.kept_settings == {"epochs": 7}
    assert session.evaluator.settings["epochs"] == 7
    assert session.spec.evaluator.settings == {"epochs": 7}    # what the workers build from
    assert spec.evaluator.settings == {} and default != 7      # the caller's spec is left alone


def test_a_resume_that_sets_it_otherwise_is_refused_naming_the_setting(tmp_path):
    _stored_by_an_older_version(tmp_path, stored_epochs=7)
    spec = parse_study(study_dict(tmp_path, evaluator=None) | {"evaluator": {"name": "train", "epochs": 5}})
    with pytest.raises(StudyMismatch, match=r"\(epochs: stored 7, now 5\)"):
        open_session(spec, spec.run_dir())
