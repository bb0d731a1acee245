"""`evalkit leaderboard`: merge run results into the leaderboard store and rewrite its outputs.

A thin shell over `evalkit.publishing.leaderboard.merge_runs`; errors propagate as EvalkitError for the
main CLI to print as one line.
"""

from __future__ import annotations

from pathlib import Path

import click

from evalkit.publishing.leaderboard import SELECTIONS


@click.command("leaderboard")
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--into", type=click.Path(path_type=Path), default=Path("leaderboard"), show_default=True,
              help="Leaderboard folder: entries.json (the store), leaderboard.json, boards/*.csv.")
@click.option("--select", type=click.Choice(SELECTIONS), default="latest", show_default=True,
              help="Which step of each model a board shows: the latest, or the best by the primary metric.")
@click.option("--by", default="", help="Primary metric for ranking and --select best (default: a board's first "
                                       "metric by name).")
def leaderboard(runs: tuple[Path, ...], into: Path, select: str, by: str) -> None:
    """Merge the run.json files under RUNS into the leaderboard in --into.

    RUNS are output folders, model folders, step folders or run.json files; every complete
    step folder (one with run.json) under them is merged. Merging the same runs again changes
    nothing, and two merges into one folder at once both land. Without RUNS, the outputs are
    rewritten from the store (e.g. to switch --select).
    """
    from evalkit.publishing.leaderboard import merge_runs

    result = merge_runs(list(runs), into, select, by.strip())
    counts = result.counts
    click.echo(f"merged {result.runs} run(s) into {into}: {counts['added']} added, {counts['updated']} updated, "
               f"{counts['unchanged']} unchanged" + (f", {counts['kept']} kept (newer)" if counts["kept"] else ""))
    for board in result.document["boards"]:
        primary = board["primary"]
        leader = next((r for r in board["rows"] if r["rank"] == 1), None)
        best = ""
        if leader is not None:
            value = leader["metrics"][primary]["value"]
            best = f"; first: {leader['model']}@{leader['step_label']} {primary}={value:.4g}"
        click.echo(f"  {board['csv']}: {board['title']} ({len(board['rows'])} models{best})")
