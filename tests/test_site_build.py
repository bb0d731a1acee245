"""`evalkit site` without a browser: what gets written, how data is embedded, and the guards."""

from __future__ import annotations

import html
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from sitefixtures import XSS_MODEL, XSS_PROMPT, Runs, write_runs

from evalkit.errors import EvalkitError
from evalkit.publishing.leaderboard import merge_runs
from evalkit.publishing.site import SiteOptions, build_site
from evalkit.publishing.site.builder import MARKER, PACKAGE_DIR
from evalkit.publishing.site.charts import CostPoint, nice_ticks, pareto_chart, pareto_front
from evalkit.publishing.site.views import model_slug
from evalkit.results.curves import write_curves

Cli = Callable[..., tuple[int, str, str]]
JSON_BLOCK = re.compile(r'<script type="application/json" id="([^"]+)">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Runs, Path, Path]:
    root = tmp_path_factory.mktemp("site")
    runs = write_runs(root)
    merge_runs([runs.out], root / "lb", select="best")
    site = root / "site"
    build_site(site, root / "lb", [], SiteOptions())
    return runs, root / "lb", site


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_the_site_has_every_page_and_its_assets(built: tuple[Runs, Path, Path]) -> None:
    _, lb, site = built
    for name in ("index.html", "gallery.html", "efficiency.html", "static/site.css", "static/site.js", MARKER,
                 "data/leaderboard.json"):
        assert (site / name).is_file(), name
    document = json.loads(_read(site / "data/leaderboard.json"))
    assert document == json.loads(_read(lb / "leaderboard.json"))  # select=best carried over from the merge
    for board in document["boards"]:
        assert (site / "data" / f"{board['id']}.csv").is_file()
    models = {"tiny-train", "sd-final", XSS_MODEL, "eff-small", "clip-v2-model", "fast-sampler"}
    assert {p.stem for p in (site / "models").glob("*.html")} == {model_slug(m) for m in models}
    assert not list(site.parent.glob(".site.*"))  # the staging folder is gone
    for page in site.rglob("*.html"):
        text = _read(page).replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text  # nothing is loaded from elsewhere


def test_data_is_escaped_in_markup_and_in_json_blocks(built: tuple[Runs, Path, Path]) -> None:
    _, _, site = built
    index, gallery = _read(site / "index.html"), _read(site / "gallery.html")
    assert XSS_MODEL not in index and html.escape(XSS_MODEL, quote=False) in index
    assert XSS_PROMPT not in gallery and "&lt;/script&gt;&lt;script&gt;window.pwned=1&lt;/script&gt;" in gallery
    blocks = dict(JSON_BLOCK.findall(index) + JSON_BLOCK.findall(gallery))
    assert blocks, "pages embed their table data as JSON"
    for raw in blocks.values():
        assert "<" not in raw and ">" not in raw and "&" not in raw  # \u003c etc.: cannot close the script
    decoded = [json.loads(raw) for raw in blocks.values()]
    assert any(row.get("model") == XSS_MODEL for rows in decoded for row in rows)
    assert any(row.get("text") == XSS_PROMPT for rows in decoded for row in rows)
    script = _read(PACKAGE_DIR / "static" / "site.js")
    assert "innerHTML" not in script.replace("no data is ever inserted as markup", "")


def test_model_pages_have_curves_categories_and_a_step_gallery(built: tuple[Runs, Path, Path]) -> None:
    _, _, site = built
    train = _read(site / "models" / f"{model_slug('tiny-train')}.html")
    assert train.count('<svg class="chart"') == 2  # CLIP and FID against step
    assert "Step 300" in train and "by category" in train
    assert train.count("step 100") >= 1 and 'id="step-gallery"' in train and "<h2>Across steps</h2>" in train
    final = _read(site / "models" / f"{model_slug('sd-final')}.html")
    assert '<svg class="chart"' not in final  # one step: nothing to plot, but its images and their scores
    assert 'id="step-gallery"' in final and "<h2>Images</h2>" in final and "clip</span> 0.295" in final


def test_model_page_curves_are_drawn_from_the_curve_files(built: tuple[Runs, Path, Path], tmp_path: Path) -> None:
    """With OUT/<model>/curves/ written, the page draws those files: the charts equal the ones drawn
    from the entries (no curve files), and a change in a file shows on the page."""
    runs, _, site = built
    out = tmp_path / "out"
    shutil.copytree(runs.out, out)
    write_curves(out / "tiny-train", plots=False)

    def charts(folder: Path) -> list[str]:
        merge_runs([out], tmp_path / "lb")
        build_site(folder, tmp_path / "lb", [], SiteOptions())
        page = _read(folder / "models" / f"{model_slug('tiny-train')}.html")
        return re.findall(r'<svg class="chart".*?</svg>', page, re.S)

    assert charts(tmp_path / "from-files") == re.findall(
        r'<svg class="chart".*?</svg>', _read(site / "models" / f"{model_slug('tiny-train')}.html"), re.S)
    curve = out / "tiny-train" / "curves" / "clip.json"
    record = json.loads(_read(curve))
    record["series"][0]["points"][1]["value"] = 0.5
    curve.write_text(json.dumps(record), encoding="utf-8")
    edited = charts(tmp_path / "edited")
    assert len(edited) == 2 and "step 200 = 0.5 " in edited[0] and "step 200 = 0.28 " not in edited[0]


def test_gallery_scores_and_image_budget(built: tuple[Runs, Path, Path], tmp_path: Path) -> None:
    _, lb, site = built
    gallery = _read(site / "gallery.html")
    assert "clip</span> 0.295" in gallery  # sd-final's first prompt: its per-image record
    assert len(list((site / "img").glob("*.jpg"))) == 32  # 4 prompts x 8 distinct step folders
    small = tmp_path / "small"
    result = build_site(small, lb, [], SiteOptions(max_images=3, gallery_prompts=2, thumb_size=16))
    assert result.images == 3 and len(list((small / "img").glob("*.jpg"))) == 3
    assert "image not available" in _read(small / "gallery.html")
    from PIL import Image

    with Image.open(next((small / "img").glob("*.jpg"))) as image:
        assert max(image.size) == 16


def test_site_from_runs_only_leaves_no_leaderboard(built: tuple[Runs, Path, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, cli: Cli) -> None:
    runs, _, _ = built
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("site", "--out", "web", str(runs.run("tiny-train", "100")), str(runs.out / "sd-final"))
    assert code == 0, err
    assert "wrote" in out and (tmp_path / "web" / "index.html").is_file()
    assert not (tmp_path / "leaderboard").exists()
    document = json.loads(_read(tmp_path / "web" / "data" / "leaderboard.json"))
    assert document["select"] == "latest"
    assert {r["model"] for b in document["boards"] for r in b["rows"]} == {"tiny-train", "sd-final"}
    # Rebuilding replaces the earlier site (it carries the marker).
    assert cli("site", "--out", "web", str(runs.out / "eff-small"))[0] == 0
    assert {p.stem for p in (tmp_path / "web" / "models").glob("*.html")} == {model_slug("eff-small")}


def test_site_refuses_foreign_folders_and_empty_input(built: tuple[Runs, Path, Path], tmp_path: Path,
                                                      cli: Cli) -> None:
    _, lb, _ = built
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(EvalkitError, match="not a site evalkit built"):
        build_site(foreign, lb, [], SiteOptions())
    assert (foreign / "keep.txt").read_text(encoding="utf-8") == "mine"
    code, _, err = cli("site", "--out", str(tmp_path / "web"), "--leaderboard", str(tmp_path / "none"))
    assert code == 2 and err.startswith("error: nothing to show")


def test_pareto_front_and_chart_text_is_escaped() -> None:
    points = [CostPoint(1, 0.2, "a"), CostPoint(2, 0.1, "dominated"), CostPoint(3, 0.5, "b"), CostPoint(3, 0.4, "c")]
    assert [p.label for p in pareto_front(points)] == ["a", "b"]
    assert [p.label for p in pareto_front(points, higher_is_better=False)] == ["a", "dominated"]
    svg = str(pareto_chart([CostPoint(1, 0.2, "<script>x</script>"), CostPoint(100, 0.3, "b")], "t", "cost", "q"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "(log scale)" in svg
    assert nice_ticks(0.18, 0.32) == [0.2, 0.25, 0.3]
