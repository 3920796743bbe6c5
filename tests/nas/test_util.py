"""nas.util: the small helpers written once (one-line errors, atomic writes, JSON preview, a
space's size, seed mixing)."""

import doctest

import pytest

from nas import util


def test_the_examples_in_the_docstring():
    assert doctest.testmod(util).failed == 0


def test_one_line_errors():
    assert util.one_line(KeyError()) == "KeyError"
    assert util.one_line(ValueError("a " * 400), limit=5) == "ValueError: a a a"
    assert util.first_line(RuntimeError("")) == "RuntimeError"
    assert util.first_line(RuntimeError(""), empty="") == ""
    assert util.first_line("  \n", empty="(none)") == "(none)"
    assert util.first_line("first\nsecond", limit=3) == "fir"
    assert util.folded(OSError("cannot\n\twrite")) == "cannot write"


def test_write_atomic_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "page.html"
    util.write_atomic(path, "old")
    util.write_atomic(path, b"new", suffix=".part")
    assert path.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]


def test_preview_and_space_size():
    assert util.preview([1, 2, 3]) == "[1, 2, 3]" and util.preview("x" * 10, 4) == '"xxx...'

    class Counted:
        def size(self):
            return 72

    class Uncountable:
        def size(self):
            raise OverflowError("too many paths")

    class Continuous:
        def size(self):
            return None

    assert util.space_size(Counted()) == 72
    assert util.space_size(Uncountable()) is None and util.space_size(Continuous()) is None


@pytest.mark.parametrize("values, seed", [((0,), 1484405855), ((7, 3), 1733098030),
                                         ((-1, 2 ** 40, 5), 168453541)])
def test_derived_seed_is_the_seed_earlier_versions_gave(values, seed):
    """Pinned: a resumed study and a trial's stored `seed` depend on these values."""
    assert util.derived_seed(*values) == seed


@pytest.mark.parametrize("values, seed", [((0,), 4953163356653287321), ((7, 3), 1904033085222789437),
                                         ((-1, 2 ** 70, 5), 5625625614381066683)])
def test_seed_mix_is_the_data_pipelines_and_training_loops(values, seed):
    """Pinned: the values nas.data.transforms.seed_mix and the training loop give (FNV-1a)."""
    assert util.seed_mix(*values) == seed
