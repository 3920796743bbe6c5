"""Subcommands of `overlock-nas`."""
