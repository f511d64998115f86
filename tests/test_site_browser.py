"""The microscope site in a real browser: Debian's headless Chromium, driven by playwright.

The pages are opened from file:// with no server and no network, as a user would open them
(tests/chromium.py: the browser, tabs, the crawl). One browser serves the whole module. Without
/usr/bin/chromium (`apt-get install chromium`; CNNTOOL_CHROMIUM names another) these tests are
skipped with that reason, except under CI=true, where they fail instead.
Screenshots of the index, a layer page, a unit page and the map are written to
.pytest-artifacts/site/ (the test prints where): look at them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnntool.core.samples import mnist_5k
from cnntool.io.image_map import thumbnail
from cnntool.io.site import (DataCard, Embedding, ModelCard, Point, Site, atlas_slot, write_assets,
                             write_atlases, write_embedding)
from cnntool.io.site import layout
from tests import chromium
from tests.chromium import MAP_BACKGROUND, crawl, open_map, screenshot_array
from tests.site_fixture import THUMB, TOP, shared_site

pytestmark = pytest.mark.browser
browser, tab = chromium.browser, chromium.tab  # the fixtures, for the tests below

ARTIFACTS = Path(__file__).resolve().parents[1] / ".pytest-artifacts" / "site"


@pytest.fixture(scope="module")
def built(browser, tmp_path_factory):
    """The fixture site (after `browser`, so that a missing Chromium skips before the build)."""
    return shared_site(tmp_path_factory)


def test_every_page_opens_cleanly_and_every_link_and_image_resolves(built, tab):
    """From index.html, follow every link: no console error, no broken image, no dead link;
    and every page of the site is reached."""
    root = built.root.resolve()
    assert crawl(tab, root) == set(root.rglob("*.html"))


def test_layer_page_shows_k_patches_per_card_sorts_and_filters(built, tab):
    tab.open(built.root / "layers/block2.html")
    counts = tab.page.evaluate(
        "Array.from(document.querySelectorAll('.unit-card')).map(c => c.querySelectorAll('img.patch').length)")
    assert counts == [TOP] * 8
    tab.page.select_option("#sort", "max")
    shown = tab.page.evaluate(
        "Array.from(document.querySelectorAll('.unit-card')).map(c => Number(c.dataset.unit))")
    by_max = sorted(built.pages[1].units, key=lambda u: (-u.stats.max, u.index))
    assert shown == [u.index for u in by_max]

    tab.open(built.root / "layers/conv1.html")
    tab.page.check("#hide-dead")
    hidden = tab.page.evaluate(
        "Array.from(document.querySelectorAll('.unit-card')).filter(c => c.hidden).map(c => Number(c.dataset.unit))")
    assert hidden == [5]
    assert tab.page.inner_text("#shown") == "7 of 8 units"
    assert not tab.errors


def test_keyboard_reaches_unit_pages_and_steps_through_them(built, tab):
    tab.open(built.root / "layers/conv1.html")
    for _ in range(40):
        tab.page.keyboard.press("Tab")
        if tab.page.evaluate("document.activeElement.classList.contains('unit-card')"):
            break
    else:
        pytest.fail("Tab never reached a unit card")
    with tab.page.expect_navigation():
        tab.page.keyboard.press("Enter")
    assert tab.page.url.endswith("layers/conv1/unit_0000.html")
    with tab.page.expect_navigation():
        tab.page.keyboard.press("j")
    assert tab.page.url.endswith("layers/conv1/unit_0001.html")
    with tab.page.expect_navigation():
        tab.page.keyboard.press("ArrowLeft")
    assert tab.page.url.endswith("layers/conv1/unit_0000.html")
    assert not tab.errors


def test_map_draws_points_and_hover_shows_the_thumbnail(built, tab):
    open_map(tab, built.root / "embedding.html")
    pixels = screenshot_array(tab.page.locator("#map"))
    drawn = np.abs(pixels - MAP_BACKGROUND).sum(axis=2) > 30
    assert drawn.mean() > 0.05, "the map is (almost) blank"

    embedding = built.site.embedding
    for i in (0, 57, 133):
        x, y = tab.page.evaluate(f"window.cnntoolMap.screenPosition({i})")
        tab.page.mouse.move(x, y)
        tip = tab.page.locator("#tip")
        tip.wait_for(state="visible")
        text = tip.inner_text()
        assert embedding.label_names[embedding.points[i].label] in text
        assert embedding.points[i].path in text
        shown = screenshot_array(tab.page.locator("#tip-thumb"), (128, 128))
        # the atlas cell of point i, as drawn: the thumbnail at THUMB px, enlarged to 128
        expected = np.asarray(thumbnail(built.thumbnails[i], THUMB).resize((128, 128), Image.Resampling.NEAREST),
                              dtype=np.float64)
        other = np.asarray(thumbnail(built.thumbnails[(i + 90) % 180], THUMB).resize((128, 128)), dtype=np.float64)
        error, other_error = np.abs(shown - expected).mean(), np.abs(shown - other).mean()
        print(f"tip thumbnail {i}: mean error {error:.1f} (another image: {other_error:.1f})")
        assert error < 20 and other_error > 2 * error  # measured: about 5-10 against 50-90
    tab.page.mouse.move(5, 5)
    assert tab.page.locator("#tip").is_hidden()
    assert not tab.errors


def test_map_of_100k_points_draws_every_point_quickly(tmp_path, tab):
    """100k points (MNIST thumbnails reused): every point is drawn at the first view, and a
    frame takes well under a second (measured; printed with -s)."""
    digits, digit_labels = mnist_5k()
    count = 100_000
    rng = np.random.default_rng(0)
    labels = digit_labels[np.arange(count) % len(digits)]
    centres = rng.normal(size=(10, 2)) * 6
    xy = centres[labels] + rng.normal(size=(count, 2))
    wrong = rng.random(count) < 0.03
    predictions = np.where(wrong, (labels + 1) % 10, labels)
    atlases = write_atlases(tmp_path / layout.ATLASES, [Image.fromarray(d) for d in digits], 28, site_root=tmp_path)
    points = tuple(Point(x=float(xy[i, 0]), y=float(xy[i, 1]), label=int(labels[i]), prediction=int(predictions[i]),
                         correct=not wrong[i], path=f"mnist-5k/{i % len(digits):05d}", atlas=atlas_slot(i % 5000, 28)[0],
                         cell=atlas_slot(i % 5000, 28)[1]) for i in range(count))
    site = Site(model=ModelCard("lenet", "test", "28×28", "test", 1, 1, 10), data=DataCard("digits", count, 0, count, 0.97),
                layers=(), embedding=Embedding("relu3", "t-SNE", points, tuple(str(d) for d in range(10)), tuple(atlases)))
    write_assets(tmp_path)
    write_embedding(tmp_path, site)
    open_map(tab, tmp_path / "embedding.html")
    frame_ms, visible = tab.page.evaluate("""() => {
        const map = window.cnntoolMap;
        let visible = map.draw();
        const start = performance.now();
        for (let k = 0; k < 10; k++) visible = map.draw();
        return [(performance.now() - start) / 10, visible];
    }""")
    print(f"\n100k-point map: {frame_ms:.1f} ms per frame in headless Chromium (shared CPU)")
    assert visible == count
    assert frame_ms < 1000
    pixels = screenshot_array(tab.page.locator("#map"))
    assert (np.abs(pixels - MAP_BACKGROUND).sum(axis=2) > 30).mean() > 0.02
    # zoomed far in, the few points in view become thumbnails; hover still finds them
    x, y = tab.page.evaluate("window.cnntoolMap.screenPosition(7)")
    for _ in range(4):
        tab.page.mouse.move(x, y)
        tab.page.mouse.wheel(0, -1500)
        x, y = tab.page.evaluate("window.cnntoolMap.screenPosition(7)")
    assert 0 < tab.page.evaluate("window.cnntoolMap.draw()") < 700
    tab.page.mouse.move(x + 1, y)
    assert "mnist-5k/" in tab.page.locator("#tip").inner_text()
    assert not tab.errors


def test_screenshots_for_people(built, tab):
    """index, a layer page, a unit page and the map, as PNGs to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots = {"index": "index.html", "layer": "layers/conv1.html", "unit": "layers/block2/unit_0001.html",
             "map": "embedding.html"}
    for name, page in shots.items():
        if name == "map":
            open_map(tab, built.root / page)
        else:
            tab.open(built.root / page)
            tab.load_images()
        path = ARTIFACTS / f"{name}.png"
        tab.page.screenshot(path=str(path), full_page=name != "map")
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        assert pixels.std() > 20, f"{name}.png looks blank"
    print(f"\nscreenshots of the microscope site: {ARTIFACTS}")
    assert not tab.errors
