"""The course site (Jupyter Book) in a real browser: Debian's chromium driven by selenium.

Serves a built site on 127.0.0.1 and checks that every page loads with a title, no image is broken, every link
inside the site leads to a file that exists, nothing is fetched from outside the site, each lesson has previous /
next links in course order, and the search box finds a lesson. Runs on the fixture course (seconds) and on the real
course's small run (shared with test_notebooks.py).

Needs ``apt-get install chromium chromium-driver`` and ``pip install selenium``. Skipped only when
/usr/bin/chromium is absent outside CI; under CI (``CI`` set) it must run.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urldefrag, urlsplit

import pytest

from _course_fixtures import built_course, built_real_course
from instructor import lessons

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium chromium-driver); "
                "under CI this test fails instead", allow_module_level=True)

from selenium import webdriver  # noqa: E402  (CI must have it: no importorskip)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module", params=["fixture", pytest.param("course", marks=pytest.mark.slow)])
def built(request, tmp_path_factory) -> dict:
    return (built_course if request.param == "fixture" else built_real_course)(tmp_path_factory)


@pytest.fixture(scope="module")
def base_url(built: dict) -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(built["site"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # 0: a free port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _lesson_pages(built: dict) -> list[tuple[str, str]]:
    return [(f"{l.stem}.html", l.title) for l in lessons.discover_lessons(built["build"] / "notebooks")]


def _load(browser, url: str) -> None:
    browser.get(url)
    WebDriverWait(browser, 20).until(lambda b: b.execute_script("return document.readyState") == "complete")


def _check_page(browser, url: str, base_url: str) -> list[str]:
    """Load a page, check it; return the same-site links on it (without fragments)."""
    _load(browser, url)
    assert browser.title and "Error response" not in browser.title, f"{url} did not load"
    assert browser.find_elements(By.TAG_NAME, "h1"), f"{url} has no heading"
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
        ".map(i => i.src.slice(0, 80));")
    assert not broken, f"broken images on {url}: {broken}"
    external = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith(location.origin) && !n.startsWith('data:'));")
    assert not external, f"{url} fetched from outside: {external}"
    hrefs = browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href);")
    return [urldefrag(h).url.split("?")[0] for h in hrefs if h.startswith(base_url)]


def test_every_page_loads_and_every_link_resolves(browser, base_url: str, built: dict) -> None:
    site: Path = built["site"]
    pages = sorted(p.relative_to(site).as_posix() for p in site.glob("*.html"))
    assert {"index.html", "intro.html", "search.html"} | {p for p, _ in _lesson_pages(built)} <= set(pages)
    seen: set[str] = set()
    for page in pages:
        for link in _check_page(browser, base_url + page, base_url):
            path = urlsplit(link).path.lstrip("/") or "index.html"
            assert (site / path).exists(), f"{page} links to a missing {path}"
            seen.add(path)
    assert {p for p, _ in _lesson_pages(built)} <= seen  # every lesson is linked from somewhere


def test_lesson_pages_have_titles_figures_and_no_install_cell(browser, base_url: str, built: dict) -> None:
    for page, title in _lesson_pages(built):
        _load(browser, base_url + page)
        assert browser.title.startswith(title)
        assert browser.find_elements(By.CSS_SELECTOR, "img"), f"{page} shows no figure"
        text = browser.find_element(By.TAG_NAME, "main").text
        assert "pip install -e ." not in text and "import utils\n" not in text, f"{page} shows the install cell"
        stderr = browser.find_elements(By.CSS_SELECTOR, ".output.stderr, .stderr")
        assert not stderr and "fake progress 50%" not in text, f"{page} shows stderr output (progress bars)"


def test_previous_next_follow_the_course_order(browser, base_url: str, built: dict) -> None:
    order = ["intro.html"] + [p for p, _ in _lesson_pages(built)]
    for position, page in enumerate(order):
        _load(browser, base_url + page)
        prev = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a.left-prev")]
        nxt = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "a.right-next")]
        assert prev == ([base_url + order[position - 1]] if position > 0 else []), page
        assert nxt == ([base_url + order[position + 1]] if position < len(order) - 1 else []), page


def test_search_box_finds_a_lesson(browser, base_url: str, built: dict) -> None:
    page, title = _lesson_pages(built)[-1]
    _load(browser, base_url + page)
    assert browser.find_elements(By.CSS_SELECTOR, "form.bd-search input[name='q']"), "no search box"
    word = max(title.replace(":", " ").split(), key=len)
    _load(browser, f"{base_url}search.html?q={word}")
    WebDriverWait(browser, 20).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, "#search-results ul.search li a"))
    found = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#search-results ul.search li a")]
    assert any(urlsplit(h).path.endswith(page) for h in found), f"searching {word!r} found {found}"


def test_index_lists_lessons_and_results(browser, base_url: str, built: dict) -> None:
    _load(browser, base_url + "index.html")  # Jupyter Book's index redirects to the root page
    WebDriverWait(browser, 10).until(lambda b: b.current_url.endswith("intro.html"))
    main = browser.find_element(By.TAG_NAME, "main").text
    assert "Classic course" in main and "0.788" in main and "678/1000" in main
    assert browser.find_elements(By.CSS_SELECTOR, "main table")
    for lesson in lessons.discover_lessons(built["build"] / "notebooks"):
        assert lesson.title in main, lesson.title
        for objective in lesson.objectives:  # rendered: no markdown emphasis or code marks left
            assert re.sub(r"[*`]", "", objective) in main, objective
