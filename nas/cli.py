"""`overlock-nas`: one command group; each subcommand lives in `nas/commands/<name>.py`."""

from __future__ import annotations

import importlib

import click

# subcommand name -> module under nas.commands exposing a click command named `command`
SUBCOMMANDS = {
    "search": "search",
    "space": "space",
    "profile": "profile",
    "report": "report",
    "export": "export",
}


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when it runs, so `--help` and small commands stay fast."""

    def list_commands(self, ctx):
        return list(SUBCOMMANDS)

    def get_command(self, ctx, name):
        if name not in SUBCOMMANDS:
            return None
        module = importlib.import_module(f"nas.commands.{SUBCOMMANDS[name]}")
        return module.command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="overlock-nas")
def main():
    """Architecture search and design-space exploration for OverLoCK backbones."""


if __name__ == "__main__":
    main()
