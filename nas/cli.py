"""`overlock-nas`: one command group; each subcommand lives in `nas/commands/<name>.py`."""

from __future__ import annotations

import importlib

import click

from nas.util import one_line

# subcommand name -> module under nas.commands exposing a click command named `command`
SUBCOMMANDS = {
    "search": "search",
    "space": "space",
    "profile": "profile",
    "report": "report",
    "export": "export",
    "latency": "latency",
    "supernet": "supernet",
}


class _LazyGroup(click.Group):
    """Imports a subcommand's module only when it runs, so `--help` and small commands stay fast.

    One error convention for every command (click's): a usage mistake raises `click.UsageError`
    (exit 2), any other error `click.ClickException` (exit 1); both print one line. An unexpected
    exception is turned into one such line too, unless `--debug` / `OVERLOCK_NAS_DEBUG=1` asks for
    the traceback.
    """

    def list_commands(self, ctx):
        return list(SUBCOMMANDS)

    def get_command(self, ctx, name):
        if name not in SUBCOMMANDS:
            return None
        module = importlib.import_module(f"nas.commands.{SUBCOMMANDS[name]}")
        return module.command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - one line unless the traceback is asked for
            if debug_enabled(ctx):
                raise
            raise click.ClickException(f"{one_line(exc)} (run with --debug or OVERLOCK_NAS_DEBUG=1 "
                                       "for the traceback)") from None


def debug_enabled(ctx: click.Context | None = None) -> bool:
    """`overlock-nas --debug ...` or `OVERLOCK_NAS_DEBUG=1`."""
    from nas.storage import env_debug

    root = ctx.find_root() if ctx is not None else click.get_current_context(silent=True)
    root = root.find_root() if root is not None else None
    return env_debug() or bool(root is not None and (root.obj or {}).get("debug"))


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="overlock-nas")
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error "
              "(also OVERLOCK_NAS_DEBUG=1).")
@click.pass_context
def main(ctx, debug):
    """Architecture search and design-space exploration for OverLoCK backbones.

    Exit status: 0 done, 1 an error (one line on stderr), 2 a usage mistake.
    """
    ctx.obj = {"debug": debug}


if __name__ == "__main__":
    main()
