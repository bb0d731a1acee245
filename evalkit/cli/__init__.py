"""The command line: `evalkit` and its subcommands (click); `main` maps user errors to one line + exit 2."""

from evalkit.cli.app import cli, main

__all__ = ["cli", "main"]
