"""Headless Chromium for the site's browser tests (test_site_browser.py, test_microscope.py):
Debian's /usr/bin/chromium driven by playwright, pages opened from file:// with no server and
no network, as a user opens them. Import the fixtures (`browser`, `tab`) into a test module to
use them; one browser serves a whole module. Without Chromium (`apt-get install chromium`;
CNNTOOL_CHROMIUM names another) the tests that ask for it are skipped with that reason, except
under CI=true, where they fail instead."""

from __future__ import annotations

import io
import os
from collections import deque
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

CHROMIUM = os.environ.get("CNNTOOL_CHROMIUM", "/usr/bin/chromium")  # another Chromium: set this
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MAP_BACKGROUND = (0x0F, 0x11, 0x16)


def unavailable() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests must run in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


class Tab:
    """A page and the errors it reported (console errors and uncaught exceptions)."""

    def __init__(self, page):
        self.page, self.errors = page, []
        page.on(
            "console",
            lambda message: self.errors.append(message.text) if message.type == "error" else None,
        )
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def open(self, path: Path) -> None:
        self.page.goto(path.as_uri())

    def load_images(self) -> list[str]:
        """Scroll through the page so that lazy images load; the sources of any that failed."""
        self.page.evaluate("""async () => {
            for (let y = 0; y < document.body.scrollHeight; y += 500) {
                window.scrollTo(0, y);
                await new Promise(r => setTimeout(r, 15));
            }
            window.scrollTo(0, 0);
        }""")
        self.page.wait_for_function(
            "Array.from(document.images).every(i => i.complete)", timeout=20_000
        )
        return self.page.evaluate(
            "Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => "
            "i.getAttribute('src'))"
        )


@pytest.fixture
def tab(browser):
    tab = Tab(browser.new_page())
    yield tab
    tab.page.close()


def as_file(url: str) -> Path | None:
    parts = urlsplit(url)
    return Path(unquote(parts.path)) if parts.scheme == "file" else None


def screenshot_array(element, size: tuple[int, int] | None = None) -> np.ndarray:
    """An element's pixels as shown (resized to `size`: an element at a fractional position
    is captured a pixel larger)."""
    image = Image.open(io.BytesIO(element.screenshot())).convert("RGB")
    if size is not None:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float64)


def open_map(tab: Tab, path: Path) -> None:
    tab.open(path)
    tab.page.wait_for_function("window.cnntoolMap && window.cnntoolMap.ready()")
    tab.page.evaluate("window.cnntoolMap.draw()")  # the frame with the atlases in it


def crawl(tab: Tab, root: Path) -> set[Path]:
    """Open index.html under `root` and every page linked from it, breadth first: each page
    without a console error or a broken image, each link to a file that exists. Returns the
    pages reached."""
    root = root.resolve()
    queue, seen = deque([root / "index.html"]), {root / "index.html"}
    while queue:
        page = queue.popleft()
        tab.open(page)
        broken = tab.load_images()
        assert not broken, f"{page.relative_to(root)}: images that do not load: {broken}"
        for url in tab.page.evaluate(
            "Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"
        ):
            target = as_file(url)
            assert target is not None, f"{page.relative_to(root)} links outside the site: {url}"
            assert target.is_file(), f"{page.relative_to(root)}: dead link {url}"
            if target.suffix == ".html" and root in target.parents and target not in seen:
                seen.add(target)
                queue.append(target)
        assert not tab.errors, f"{page.relative_to(root)}: {tab.errors}"
    return seen
