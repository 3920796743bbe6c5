"""The docs are a user guide that quotes measured figures (issue 27, item 7): every figure a doc
quotes from benchmarks/results/ is the one stored there, every result line says how to regenerate
it, no doc names a file outside the repository, every link resolves, and the references list
every study-file key and every CLI option."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
RESULTS = REPO / "benchmarks" / "results"
PAGES = sorted(DOCS.rglob("*.md"))
GUIDE_PAGES = PAGES + [REPO / "README.md", REPO / "DEVELOPERS.md", RESULTS / "README.md"]
MARKER = re.compile(r"<!-- results: (?P<file>[^;]+); columns: (?P<columns>[^;]+?)(?:; where: (?P<where>[^;]+?))? -->")


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def _quoted_tables(text: str):
    """(marker match, table rows as cell lists) for every results-marked table of a page."""
    for m in MARKER.finditer(text):
        lines = text[m.end():].lstrip("\n").splitlines()
        rows = []
        for line in lines[2:]:
            if not line.startswith("|"):
                break
            rows.append([c.strip().strip("*").strip() for c in line.strip().strip("|").split("|")])
        yield m, rows


def test_every_results_line_says_how_to_regenerate_it():
    files = sorted(RESULTS.glob("*.jsonl"))
    assert files
    for path in files:
        for row in _rows(path):
            assert {"command", "date", "load"} <= set(row), (path.name, row)
            argv = shlex.split(row["command"])
            scripts = [a for a in argv if a.endswith(".py")]
            assert scripts or "overlock-nas" in argv, (path.name, row["command"])
            for script in scripts:
                assert (REPO / script).is_file(), (path.name, script)


def test_quoted_figures_match_the_result_files():
    quoted = 0
    for page in PAGES:
        for marker, rows in _quoted_tables(page.read_text()):
            source = REPO / marker["file"].strip()
            columns = [c.strip() for c in marker["columns"].split(",")]
            expected = _rows(source)
            if marker["where"]:
                key, values = marker["where"].split("=")
                expected = [r for r in expected if str(r[key.strip()]) in values.split("|")]
            where = f"{page.relative_to(REPO)} quoting {source.name}"
            assert len(rows) == len(expected), f"{where}: {len(rows)} rows, the file has {len(expected)}"
            for row, line in zip(rows, expected):
                assert row == [_cell(line[c]) for c in columns], f"{where}: {row}"
            quoted += 1
    assert quoted >= 6   # search efficiency, engine overhead, proxy fidelity, latency x2, supernet


@pytest.mark.parametrize("page", GUIDE_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_doc_names_a_file_outside_the_repository(page):
    text = page.read_text()
    outside = re.findall(r"(?<![\w.~-])/(?:work|tmp|home|root|mnt|data|srv|scratch)/[^\s)`'\"]*", text)
    assert not outside, f"{page.name}: paths outside the repository: {outside[:5]}"
    assert not re.search(r"\bnotes/", text), f"{page.name}: a notes folder"


@pytest.mark.parametrize("page", GUIDE_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name}: link to {target}"


def test_a_newcomer_finds_a_study_on_their_own_images_in_one_short_page():
    page = DOCS / "how-to" / "own-images.md"
    assert len(page.read_text().splitlines()) < 200
    assert "how-to/own-images.md" in (DOCS / "README.md").read_text()
    assert "docs/how-to/own-images.md" in (REPO / "README.md").read_text()


def _model_fields(model, prefix=""):
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        yield prefix + name, field
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _model_fields(annotation, prefix + name + ".")


def test_the_study_file_reference_names_every_key_and_setting():
    from nas.evaluators import supernet, train, zero_cost
    from nas.study import SAMPLER_OPTIONS, ProxyGateSettings, StudyFile

    text = (DOCS / "reference" / "study-file.md").read_text()
    keys = {name.split(".")[-1] for name, _ in _model_fields(StudyFile)}
    keys |= set(ProxyGateSettings.model_fields)
    for module in (train, supernet, zero_cost):
        keys |= set(module.SCHEMA)
    keys |= {option for options in SAMPLER_OPTIONS.values() for option in options}
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, f"docs/reference/study-file.md lacks {missing}"


def test_the_cli_reference_names_every_command_and_option():
    from nas.cli import main

    ctx = click.Context(main)
    text = (DOCS / "reference" / "cli.md").read_text()

    def walk(cmd, path):
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), path + [name])
        else:
            yield path, cmd

    for path, cmd in walk(main, ["overlock-nas"]):
        assert f"## `{' '.join(path)}`" in text, path
        section = text[text.index(f"## `{' '.join(path)}`"):].split("\n## ")[0]
        for param in cmd.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-"):
                    assert f"`{opt}`" in section, (path, opt)
