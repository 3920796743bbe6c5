"""Resuming a study compares the evaluator's settings with the stored ones: what changes a score
is refused, what changes only how inputs are loaded (or a setting added later, left unset) is not."""

from nas.search.session import _same_evaluator

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
