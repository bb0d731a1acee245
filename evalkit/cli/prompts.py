"""`evalkit prompts`: see which prompt sets exist and what a set (or a user file) holds.

The main CLI mounts this group and turns an EvalkitError into its one-line message and
exit code; these commands just let it propagate.
"""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from evalkit.prompts.sets import PromptSet, list_prompt_sets, load_prompt_set

FINGERPRINT_CHARS = 12


@click.group()
def prompts() -> None:
    """Built-in prompt sets and user prompt files."""


@prompts.command("list")
def list_command() -> None:
    """List the built-in prompt sets with their fingerprints."""
    table = Table(title="Built-in prompt sets",
                  caption="Fingerprints are of whole sets. A run on part of one (--limit N, --subset) records the "
                          "part's own fingerprint, so it is never compared with the whole set, and this one as its "
                          "part_of; `evalkit prompts show NAME --limit N` prints both.")
    # Fixed columns first; the licence summary is the one that wraps on narrow terminals
    # (`show` prints source and licence in full).
    table.add_column("name", no_wrap=True, min_width=21)
    table.add_column("n", justify="right", no_wrap=True, min_width=5)
    table.add_column("version", no_wrap=True)
    table.add_column("fingerprint", no_wrap=True, min_width=FINGERPRINT_CHARS)
    table.add_column("licence", overflow="fold", ratio=1)
    for info in list_prompt_sets():
        fingerprint = info.fingerprint[:FINGERPRINT_CHARS]
        cells = (info.name, str(info.n), info.version, fingerprint, info.licence)
        table.add_row(*(Text(c) for c in cells))
    _console().print(table)


@prompts.command("show")
@click.argument("name_or_path")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="Show only the first N prompts.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per prompt (id, text, tags, data).")
def show_command(name_or_path: str, limit: int | None, as_json: bool) -> None:
    """Print the prompts of a built-in set or of a .txt/.jsonl/.csv file."""
    pset = load_prompt_set(name_or_path)
    shown = pset if limit is None else pset.head(limit)
    if as_json:
        for prompt in shown:
            click.echo(json.dumps(prompt.to_record(), ensure_ascii=False))
        return
    _console().print(_prompt_table(pset, shown))


def _prompt_table(pset: PromptSet, shown: PromptSet) -> Table:
    # The caption names both fingerprints when part is shown: a `--limit N` run is keyed on the part's.
    caption = f"showing {len(shown)} of {len(pset)}; fingerprint {pset.fingerprint[:FINGERPRINT_CHARS]}"
    if shown.part_of is not None:
        caption = (f"showing the {shown.part_of.selection} of {len(pset)}: fingerprint "
                   f"{shown.fingerprint[:FINGERPRINT_CHARS]} (what a run with --limit {len(shown)} records); "
                   f"the whole set's is {pset.fingerprint[:FINGERPRINT_CHARS]} (its part_of)")
    table = Table(title=f"{pset.name} (version {pset.version}, {len(pset)} prompts)", caption=caption)
    table.add_column("id", no_wrap=True)
    table.add_column("tags")
    table.add_column("text", overflow="fold")
    for prompt in shown:
        # Text(), not str: a prompt like "[red] car" must print as written, not as rich markup.
        table.add_row(Text(prompt.id), Text(", ".join(prompt.tags)), Text(prompt.text))
    return table


def _console() -> Console:
    # Built per call so output goes to whatever sys.stdout is then (CliRunner swaps it in). Not
    # click.get_text_stream: click 8.5 deprecated it (a DeprecationWarning on every call).
    return Console(file=sys.stdout, soft_wrap=False)
