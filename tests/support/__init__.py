"""Test support code (not part of the product): importable as `support` from the tests (pytest puts
tests/ on sys.path through tests/conftest.py) and from benchmarks (they add tests/ themselves).

- `support.synthetic`: synthetic studies holding exactly what the search engine writes, for the
  report tests and benchmarks/bench_report.py (held to a real-engine run by tests/test_pinned_runs.py).
"""
