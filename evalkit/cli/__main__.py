"""`python -m evalkit.cli`: the same entry point as the `evalkit` console script (torchrun launches it)."""

from evalkit.cli.app import main

main()
