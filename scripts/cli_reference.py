"""Write docs/reference/cli.md from the commands themselves: `python scripts/cli_reference.py`.

Run it after adding or changing a command or an option; tests/test_docs_measured.py fails while
the page lacks one."""

from __future__ import annotations

from pathlib import Path

import click

from nas.cli import main

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "cli.md"
HEAD = """# Reference: the `overlock-nas` commands

Every command prints `--help`. Exit status for all of them: 0 done; 1 an error (one line,
`Error: ...`, naming what is wrong); 2 a usage mistake (a bad option or value). An unexpected
error is one line too; `overlock-nas --debug COMMAND ...` or `OVERLOCK_NAS_DEBUG=1` shows its
traceback. `overlock-nas --version` prints the version.

This page is written from the commands by `python scripts/cli_reference.py`
(`tests/test_docs_measured.py` checks that it names every command and option). Which command to
use when: the [tutorial](../tutorial.md) and the how-to guides.
"""


def commands(ctx, cmd, path):
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            yield from commands(ctx, cmd.get_command(ctx, name), path + [name])
    else:
        yield path, cmd


def default(param) -> str:
    value = param.default
    if param.is_flag or value is None or str(value).startswith("Sentinel"):
        return ""
    return f"`{value}`"


def section(path, cmd) -> list[str]:
    args = " ".join(p.name.upper() + ("" if p.required else "?")
                    for p in cmd.params if isinstance(p, click.Argument))
    name = " ".join(path)
    lines = [f"## `{name}`", "", f"Usage: `{name} {args + ' ' if args else ''}[OPTIONS]`", "",
             " ".join((cmd.help or "").replace("\b", "").split()), ""]
    options = [p for p in cmd.params if not isinstance(p, click.Argument)]
    if options:
        lines += ["| option | default | meaning |", "|---|---|---|"]
        for p in options:
            names = ", ".join(f"`{o}`" for o in p.opts + p.secondary_opts)
            kind = "" if p.is_flag else f" {p.type.name.upper()}"
            text = " ".join((p.help or "").split()).replace("|", "\\|")
            lines.append(f"| {names}{kind} | {default(p)} | {text} |")
        lines.append("")
    return lines


def page() -> str:
    ctx = click.Context(main)
    lines = [HEAD]
    for path, cmd in commands(ctx, main, ["overlock-nas"]):
        lines += section(path, cmd)
    return "\n".join(lines)


if __name__ == "__main__":
    PAGE.write_text(page())
    print(f"wrote {PAGE}")
