"""`evalkit site`: write the static leaderboard site from the leaderboard store and/or run folders.

A thin shell over `evalkit.publishing.site.build_site`; errors propagate as EvalkitError for the main CLI
to print as one line.
"""

from __future__ import annotations

from pathlib import Path

import click

from evalkit.publishing.leaderboard import SELECTIONS


@click.command("site")
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write the site into.")
@click.option("--leaderboard", "leaderboard_dir", type=click.Path(path_type=Path), default=Path("leaderboard"),
              show_default=True, help="Leaderboard folder written by `evalkit leaderboard` (skipped if it has none).")
@click.option("--select", type=click.Choice(SELECTIONS), default=None,
              help="Step per model: latest or best (default: what the leaderboard was merged with, else latest).")
@click.option("--by", default="", help="Primary metric for ranking and --select best.")
@click.option("--gallery-prompts", type=click.IntRange(min=0), default=8, show_default=True,
              help="Prompts per gallery.")
@click.option("--gallery-columns", type=click.IntRange(min=1), default=8, show_default=True,
              help="Models per board gallery.")
@click.option("--thumb-size", type=click.IntRange(min=16, max=2048), default=256, show_default=True,
              help="Longest side of gallery images, in pixels.")
@click.option("--max-images", type=click.IntRange(min=0), default=400, show_default=True,
              help="Most images copied into the site.")
def site(runs: tuple[Path, ...], out: Path, leaderboard_dir: Path, select: str | None, by: str, gallery_prompts: int,
         gallery_columns: int, thumb_size: int, max_images: int) -> None:
    """Write a self-contained static site (open OUT/index.html, or serve OUT from any static host).

    Shows the leaderboard in --leaderboard plus any RUNS (output folders, step folders or
    run.json files; merged for the site only, the leaderboard is not changed): sortable tables
    with confidence intervals, per-model pages with training curves and per-category results,
    galleries with per-image scores, and cost against quality.
    """
    from evalkit.runtime.extras import require

    require("site", "evalkit site")
    from evalkit.publishing.site import SiteOptions, build_site

    options = SiteOptions(select=select or "", by=by.strip(), gallery_prompts=gallery_prompts,
                          gallery_columns=gallery_columns, thumb_size=thumb_size, max_images=max_images)
    result = build_site(out, leaderboard_dir, list(runs), options)
    click.echo(f"wrote {result.pages} pages, {result.images} images, {result.boards} boards, {result.models} models "
               f"-> {result.out / 'index.html'}")
