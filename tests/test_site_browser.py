"""The site in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright).

One browser for the session and one built site for the module keep this fast. Pages are
opened from file://, as a user opening index.html would; every request must stay on file://.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urlparse

import pytest
from sitefixtures import XSS_MODEL, XSS_PROMPT, Runs, write_runs, write_wide_runs

from evalkit.publishing.leaderboard import merge_runs
from evalkit.publishing.site import SiteOptions, build_site
from evalkit.publishing.site.views import model_slug

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install chromium; .ci/run installs it)"),
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Site:
    root: Path
    document: dict[str, Any]

    def url(self, relative: str) -> str:
        return (self.root / relative).as_uri()

    @property
    def main_board(self) -> str:
        return self.document["boards"][0]["id"]


def built_site(root: Path, runs: Runs) -> Site:
    """The site of one merge of `runs`, built with the default options."""
    merge_runs([runs.out], root / "lb")
    build_site(root / "site", root / "lb", [], SiteOptions())
    document = json.loads((root / "site" / "data" / "leaderboard.json").read_text(encoding="utf-8"))
    return Site(root / "site", document)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("browser-site")
    return built_site(root, write_runs(root))


@dataclass
class Watch:
    """Everything a page did that a healthy static site never does."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


@pytest.fixture
def page(browser: Any) -> Iterator[tuple[Any, Watch]]:
    context = browser.new_context(java_script_enabled=True)
    page = context.new_page()
    watch = Watch()
    page.on("console", lambda m: watch.errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: watch.errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: _request_failed(watch, r))
    local = ("file://", "data:", "about:")
    page.on("request", lambda r: None if r.url.startswith(local) else watch.foreign.append(r.url))

    def on_dialog(dialog: Any) -> None:
        watch.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield page, watch
    context.close()


def _request_failed(watch: Watch, request: Any) -> None:
    """A lazy image still loading when the test navigates away is cancelled (net::ERR_ABORTED):
    that is the browser's doing, not the site's. A missing file fails as ERR_FILE_NOT_FOUND."""
    if request.failure != "net::ERR_ABORTED":
        watch.errors.append(f"request failed ({request.failure}): {request.url}")


def _visible_models(page: Any, table: str) -> list[str]:
    return page.locator(f"#{table} tbody tr:not([hidden]) a.model").all_text_contents()


def test_every_page_loads_cleanly_and_every_local_link_resolves(site: Site, page: tuple[Any, Watch]) -> None:
    tab, watch = page
    queue, seen, checked = deque([site.url("index.html")]), set(), 0
    ids: dict[str, set[str]] = {}
    fragments: list[tuple[str, str]] = []
    while queue:
        url = queue.popleft()
        if url in seen:
            continue
        seen.add(url)
        tab.goto(url)
        ids[url] = set(tab.eval_on_selector_all("[id]", "els => els.map(e => e.id)"))
        targets = tab.eval_on_selector_all(
            "a[href], img[src], link[href], script[src]", "els => els.map(e => e.href || e.src)")
        for target in targets:
            address, fragment = urldefrag(target)
            assert urlparse(address).scheme == "file", f"{url} links outside the site: {target}"
            path = Path(unquote(urlparse(address).path))
            assert path.is_file(), f"{url} links to a missing file: {target}"
            assert site.root in path.parents, f"{url} links outside the site folder: {target}"
            checked += 1
            if fragment:
                fragments.append((address, fragment))
            if path.suffix == ".html":
                queue.append(address)
    for address, fragment in fragments:
        assert fragment in ids[address], f"no #{fragment} on {address}"
    assert len(seen) == 3 + 6  # index, gallery, efficiency and the six model pages
    assert checked > 50
    assert watch.errors == [] and watch.dialogs == [] and watch.foreign == []


def test_tables_sort_by_any_column_with_missing_values_last(site: Site, page: tuple[Any, Watch]) -> None:
    tab, watch = page
    tab.goto(site.url("index.html"))
    table = f"table-{site.main_board}"
    assert _visible_models(tab, table) == ["sd-final", "tiny-train", XSS_MODEL, "eff-small"]
    header = tab.locator(f"#{table} th[data-key='m:clip']")
    header.locator("button").click()
    assert header.get_attribute("aria-sort") == "ascending"
    assert _visible_models(tab, table) == ["eff-small", XSS_MODEL, "tiny-train", "sd-final"]
    header.locator("button").click()
    assert header.get_attribute("aria-sort") == "descending"
    assert _visible_models(tab, table) == ["sd-final", "tiny-train", XSS_MODEL, "eff-small"]
    fid = tab.locator(f"#{table} th[data-key='m:fid'] button")
    fid.click()
    assert _visible_models(tab, table) == ["sd-final", "tiny-train", "eff-small", XSS_MODEL]
    fid.click()
    assert _visible_models(tab, table) == ["eff-small", "tiny-train", "sd-final", XSS_MODEL]  # no FID: still last
    tab.locator(f"#{table} th[data-key='model'] button").click()
    assert _visible_models(tab, table) == sorted(_visible_models(tab, table), key=str.lower)
    tab.locator(f"#{table} th[data-key='step'] button").click()
    assert _visible_models(tab, table)[0] == "tiny-train"  # step 300 before every `final`
    assert header.get_attribute("aria-sort") is None
    assert watch.errors == []


def test_filters_hide_rows_and_say_how_many_remain(site: Site, page: tuple[Any, Watch]) -> None:
    tab, watch = page
    tab.goto(site.url("index.html"))
    table = f"table-{site.main_board}"
    box = tab.locator(f"input.filter[data-table='{table}']")
    box.fill("TINY")
    assert _visible_models(tab, table) == ["tiny-train"]
    assert tab.locator(f".filter-count[data-table='{table}']").text_content() == "1 of 4 shown"
    box.fill("<img")
    assert _visible_models(tab, table) == [XSS_MODEL]
    box.fill("")
    assert len(_visible_models(tab, table)) == 4

    tab.goto(site.url("gallery.html"))
    gallery = f"gallery-table-{site.main_board}"
    tab.locator(f"input.filter[data-table='{gallery}']").fill("window.pwned")
    rows = tab.locator(f"#{gallery} tbody tr:not([hidden]) .prompt-text")
    assert rows.all_text_contents() == [XSS_PROMPT]
    tab.locator(f"input.filter[data-table='{gallery}']").fill("dog")
    assert rows.all_text_contents() == ["a dog in the snow"]
    assert watch.errors == []


def test_charts_and_images_render(site: Site, page: tuple[Any, Watch]) -> None:
    tab, watch = page
    for relative, charts in ((f"models/{model_slug('tiny-train')}.html", 2), ("efficiency.html", 3),
                             ("gallery.html", 0)):
        tab.goto(site.url(relative))
        svgs = tab.locator("svg.chart")
        assert svgs.count() == charts, relative
        for index in range(charts):
            box = svgs.nth(index).bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 100
        images = tab.locator("img")
        if relative != "efficiency.html":
            assert images.count() >= 12
        for index in range(images.count()):
            images.nth(index).scroll_into_view_if_needed()  # lazy images load once near the viewport
        tab.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
        widths = tab.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        assert all(w > 0 for w in widths), relative
    tab.goto(site.url(f"models/{model_slug('tiny-train')}.html"))
    assert tab.locator("svg.chart polyline.line").count() == 2
    assert tab.locator("svg.chart circle.dot").count() == 6
    tab.goto(site.url("efficiency.html"))
    assert tab.locator("svg.chart circle.front-point").count() >= 2
    assert watch.errors == []


def test_html_and_script_in_names_render_as_text(site: Site, page: tuple[Any, Watch]) -> None:
    tab, watch = page
    for relative in ("index.html", "gallery.html", "efficiency.html", f"models/{model_slug(XSS_MODEL)}.html",
                     f"models/{model_slug('tiny-train')}.html"):
        tab.goto(site.url(relative))
        tab.wait_for_load_state("load")
        assert tab.evaluate("() => typeof window.pwned") == "undefined", relative
        assert tab.locator("img[src='x']").count() == 0, relative
    tab.goto(site.url("index.html"))
    assert tab.get_by_role("link", name=XSS_MODEL, exact=True).first.is_visible()
    tab.goto(site.url(f"models/{model_slug(XSS_MODEL)}.html"))
    assert tab.locator("h1.model-name").text_content() == XSS_MODEL
    tab.goto(site.url("gallery.html"))
    assert tab.get_by_text(XSS_PROMPT, exact=True).first.is_visible()
    assert tab.get_by_text('a <b>bold</b> & "quoted" cat', exact=True).first.is_visible()
    assert watch.dialogs == [] and watch.errors == []


def test_content_security_policy_allows_only_the_sites_own_files(site: Site, page: tuple[Any, Watch]) -> None:
    """Every page carries the policy; the site's own script and styles run under it (no console
    error anywhere: test_every_page_loads_cleanly…), while an inline script that got into a page
    is refused by the browser."""
    from evalkit.publishing.site.builder import CONTENT_SECURITY_POLICY

    tab, watch = page
    for relative in ("index.html", "gallery.html", "efficiency.html", f"models/{model_slug('tiny-train')}.html"):
        tab.goto(site.url(relative))
        policy = tab.eval_on_selector("meta[http-equiv='Content-Security-Policy']", "m => m.content")
        assert policy == CONTENT_SECURITY_POLICY, relative
        assert tab.evaluate("() => getComputedStyle(document.body).fontFamily") != "", relative
    tab.goto(site.url("index.html"))
    tab.locator("th button.sort").first.click()  # site.js runs under the policy: sorting works
    assert tab.locator("th[aria-sort]").count() >= 1
    tab.evaluate("""() => { const s = document.createElement('script');
                          s.textContent = 'window.inlineRan = true'; document.body.appendChild(s); }""")
    assert tab.evaluate("() => window.inlineRan === true") is False
    assert any("Content Security Policy" in e for e in watch.errors), watch.errors


WINDOW = {"width": 1400, "height": 900}  # the window a board with five metrics must fit


def screenshots(tmp_path: Path) -> Path:
    """Where screenshots go: $EVALKIT_SCREENSHOTS when set (to look at them), else the test's folder."""
    import os

    folder = Path(os.environ.get("EVALKIT_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def wide_site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("wide-site")
    return built_site(root, write_wide_runs(root))


def test_a_five_metric_board_fits_1400px_and_leads_with_tifa(wide_site: Site, page: tuple[Any, Watch],
                                                             tmp_path: Path) -> None:
    tab, watch = page
    tab.set_viewport_size(WINDOW)
    tab.goto(wide_site.url("index.html"))
    table = f"#table-{wide_site.main_board}"
    headers = tab.eval_on_selector_all(f"{table} thead th", "els => els.map(e => e.getAttribute('data-key'))")
    assert headers[:4] == ["rank", "model", "step", "m:tifa"]  # the headline first, though not first by name
    assert tab.get_attribute(f"{table} th[data-key='m:tifa']", "class") == "primary"
    assert _visible_models(tab, f"table-{wide_site.main_board}")[0] == "stabilityai/stable-diffusion-2-1-base"
    layout = tab.evaluate("""t => {
        const table = document.querySelector(t), box = table.parentElement;
        const last = table.querySelector('thead th:last-child').getBoundingClientRect();
        const names = Array.from(table.querySelectorAll('tbody a.model')).map(
            a => Math.round(a.getBoundingClientRect().height / parseFloat(getComputedStyle(a).lineHeight)));
        return {page: document.documentElement.scrollWidth, window: window.innerWidth,
                table: table.scrollWidth, box: box.clientWidth, right: last.right, lines: Math.max(...names)};
    }""", table)
    assert layout["page"] <= layout["window"] and layout["table"] <= layout["box"], layout  # no sideways scroll
    assert layout["right"] <= WINDOW["width"], layout  # the last metric column is on screen
    assert layout["lines"] <= 2, layout  # a long model name takes at most two lines
    # Each piece between two break points (<wbr> after a separator) sits on one line: no mid-word break.
    pieces = tab.eval_on_selector_all(f"{table} tbody a.model", """els => els.flatMap(a =>
        Array.from(a.childNodes).filter(n => n.nodeType === Node.TEXT_NODE).map(n => {
            const range = document.createRange(); range.selectNodeContents(n);
            return [n.textContent, range.getClientRects().length]; }))""")
    assert {text for text, _ in pieces} >= {"stabilityai/", "stable-", "diffusion-", "run7"}
    assert [text for text, lines in pieces if lines != 1] == []
    tab.screenshot(path=str(screenshots(tmp_path) / "index-1400.png"), full_page=True)
    assert (screenshots(tmp_path) / "index-1400.png").stat().st_size > 0
    assert watch.errors == []


def test_a_boards_sort_survives_a_reload(wide_site: Site, page: tuple[Any, Watch]) -> None:
    tab, watch = page
    tab.goto(wide_site.url("index.html"))
    table = f"table-{wide_site.main_board}"
    fid = tab.locator(f"#{table} th[data-key='m:fid'] button")
    fid.click()
    fid.click()
    order = _visible_models(tab, table)
    assert order[0] == "stabilityai/stable-diffusion-2-1-base"  # highest FID first (descending)
    assert "sort=" in tab.url
    tab.reload()
    assert tab.get_attribute(f"#{table} th[data-key='m:fid']", "aria-sort") == "descending"
    assert _visible_models(tab, table) == order
    tab.goto(wide_site.url("index.html"))  # a fresh address: the board's own ranking
    assert _visible_models(tab, table)[0] == "stabilityai/stable-diffusion-2-1-base"
    assert tab.get_attribute(f"#{table} th[data-key='m:fid']", "aria-sort") is None
    assert watch.errors == []


def _sideways(tab: Any) -> dict[str, int]:
    return tab.evaluate("""() => ({page: document.documentElement.scrollWidth, window: window.innerWidth,
        boxes: Math.max(0, ...Array.from(document.querySelectorAll('.scroll'))
                                   .map(b => b.scrollWidth - b.clientWidth))})""")


@pytest.mark.parametrize("page_name", ["gallery", "model"])
def test_per_image_tifa_questions_and_answers_collapse_and_filter_at_1400px(
        wide_site: Site, page: tuple[Any, Watch], tmp_path: Path, page_name: str) -> None:
    tab, watch = page
    tab.set_viewport_size(WINDOW)
    model = "stabilityai/stable-diffusion-2-1-base"
    tab.goto(wide_site.url("gallery.html" if page_name == "gallery" else f"models/{model_slug(model)}.html"))
    details = tab.locator("table.gallery details.records")
    assert details.count() >= 1
    first = details.first
    assert first.get_attribute("open") is None  # collapsed by default
    assert not first.locator("li").first.is_visible()
    summary = first.locator("summary").inner_text()
    assert summary in {"2 of 3 questions correct", "3 of 3 questions correct"}, summary
    score = first.locator("xpath=..").inner_text().split("\n")[0]
    assert score.startswith("tifa ") and float(score.split()[1]) == pytest.approx(int(summary[0]) / 3, abs=1e-3)
    first.locator("summary").click()
    first_question = first.locator("li").first
    assert first_question.is_visible()
    listed = first_question.inner_text()
    for label in ("question", "expected", "VQA said", "mapped to", "element type"):
        assert label in listed, listed
    assert "<b>!</b>" in listed  # the VQA model's answer is text, never markup
    assert tab.locator("table.gallery details.records li b").count() == 0
    layout = _sideways(tab)
    assert layout["page"] <= layout["window"] and layout["boxes"] == 0, layout  # no sideways scroll, open or not
    tab.screenshot(path=str(screenshots(tmp_path) / f"{page_name}-1400.png"), full_page=True)
    # The element-type filter keeps one question per image here and recounts every summary.
    table_id = tab.locator("table.gallery").first.get_attribute("id")
    tab.select_option(f"select.record-filter[data-table='{table_id}']", "color")
    assert first.locator("li:not([hidden])").count() == 1
    assert "color" in first.locator("li:not([hidden])").inner_text()
    assert first.locator("summary").inner_text() in {"0 of 1 questions correct", "1 of 1 questions correct"}
    tab.select_option(f"select.record-filter[data-table='{table_id}']", "")
    assert first.locator("li:not([hidden])").count() == 3 and first.locator("summary").inner_text() == summary
    assert watch.errors == []
