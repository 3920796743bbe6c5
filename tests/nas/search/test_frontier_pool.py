"""`frontier`'s pool of candidates: bounded whatever the number of trials."""

from __future__ import annotations

import space
from nas.search.proposals import make_proposer
from nas_testing import REPO

OBJECTIVES, DIRECTIONS = ["accuracy", "flops"], ["maximize", "minimize"]


def test_the_pool_keeps_at_most_pool_max_candidates_the_newest(monkeypatch):
    """A long study's pool stops growing at `POOL_MAX`: the oldest candidates leave first."""
    from nas.search import frontier

    monkeypatch.setattr(frontier, "POOL_MAX", 40)
    big = space.load_space(REPO / "studies/spaces/xt_t.yaml")      # 76,032 configs: few repeats
    proposer = make_proposer(big, "frontier", {"n_startup": 4, "pool": 16, "candidates": 12}, 0,
                             DIRECTIONS, OBJECTIVES, {})
    seen = []
    for _ in range(30):
        proposer._grow([], {})
        seen += [h for h in proposer.pool if h not in seen]
        assert len(proposer.pool) <= 40
    assert len(seen) > 40                     # it did grow past the cap, and let the oldest go
    assert list(proposer.pool) == [h for h in seen if h in proposer.pool]
    assert seen[0] not in proposer.pool
