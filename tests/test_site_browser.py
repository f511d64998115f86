"""The microscope site in a real browser: Debian's headless Chromium, driven by playwright.

The pages are opened from file:// with no server and no network, as a user would open them
(tests/chromium.py: the browser, tabs, the crawl). One browser serves the whole module. Without
/usr/bin/chromium (`apt-get install chromium`; CNNTOOL_CHROMIUM names another) these tests are
skipped with that reason, except under CI=true, where they fail instead.
Every page must fit a 390-px phone and a 1280-px desktop without sideways scrolling.
Screenshots of the index, a layer page, a unit page and the map, at both widths, are written to
.pytest-artifacts/site/ (the test prints where): look at them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnntool.core.samples import mnist_5k
from cnntool.io.image_map import thumbnail
from cnntool.io.palette import CLASS_COLOURS, rgb
from cnntool.io.site import (
    DataCard,
    Embedding,
    ModelCard,
    Point,
    Site,
    atlas_slot,
    layout,
    write_assets,
    write_atlases,
    write_embedding,
    write_site,
)
from tests import chromium
from tests.chromium import MAP_BACKGROUND, crawl, open_map, screenshot_array
from tests.site_fixture import THUMB, TOP, shared_site

pytestmark = pytest.mark.browser
browser, tab = chromium.browser, chromium.tab  # the fixtures, for the tests below

ARTIFACTS = Path(__file__).resolve().parents[1] / ".pytest-artifacts" / "site"
PHONE, DESKTOP = {"width": 390, "height": 844}, {"width": 1280, "height": 900}
MANY_CLASSES = 24


@pytest.fixture(scope="module")
def built(browser, tmp_path_factory):
    """The fixture site (after `browser`, so that a missing Chromium skips before the build)."""
    return shared_site(tmp_path_factory)


@pytest.fixture(scope="module")
def many_classes(browser, tmp_path_factory) -> Path:
    """A site of 24 classes with long names and paths (an index without layers, and a map of
    2,400 MNIST thumbnails in 24 clusters on a ring): a palette that repeats after 10 or 16
    colours, or a path that does not wrap, shows here."""
    root = tmp_path_factory.mktemp("many-classes")
    digits, _ = mnist_5k()
    count = 2400
    rng = np.random.default_rng(0)
    labels = np.arange(count) % MANY_CLASSES
    angle = labels / MANY_CLASSES * 2 * np.pi
    xy = np.stack([np.cos(angle), np.sin(angle)], axis=1) * 10 + rng.normal(
        scale=0.6, size=(count, 2)
    )
    atlases = write_atlases(
        root / layout.ATLASES, [Image.fromarray(d) for d in digits[:count]], 28, site_root=root
    )
    long_folder = "/home/someone/datasets/a_rather_long_folder_name_without_any_spaces/train"
    points = tuple(
        Point(
            x=float(xy[i, 0]),
            y=float(xy[i, 1]),
            label=int(labels[i]),
            prediction=int(labels[i]),
            correct=True,
            path=f"{long_folder}/class_{labels[i]:02d}/image_{i:05d}.png",
            atlas=atlas_slot(i, 28)[0],
            cell=atlas_slot(i, 28)[1],
        )
        for i in range(count)
    )
    names = tuple(f"class_{c:02d}_with_a_long_name" for c in range(MANY_CLASSES))
    site = Site(
        model=ModelCard(
            "a-model-with-a-long-name",
            f"{long_folder}/../models/my_network_definition.py:build_net",
            "28×28 grey, pixels in [0, 1]",
            "the model file",
            1_234_567,
            98_765_432,
            MANY_CLASSES,
            class_names=names,
        ),
        data=DataCard(long_folder, count, 0, count, 1.0),
        layers=(),
        embedding=Embedding("features.final_block.pool", "t-SNE", points, names, tuple(atlases)),
    )
    write_site(root, site, [])
    return root


def site_pages(*roots: Path) -> list[Path]:
    return sorted(page for root in roots for page in root.resolve().rglob("*.html"))


def test_every_page_fits_a_phone_and_a_desktop_without_sideways_scrolling(built, many_classes, tab):
    """Every page of both sites at 390×844 (a phone) and 1280×900: the document is no wider
    than the window (measured before the fix: the index 526 px and a layer page 505 px wide at
    390, from the layer table, the finding's command and a long model path)."""
    pages = site_pages(built.root, many_classes)
    assert len(pages) > 30
    too_wide = []
    for viewport in (PHONE, DESKTOP):
        tab.page.set_viewport_size(viewport)
        for page in pages:
            tab.open(page)
            width = tab.page.evaluate("document.documentElement.scrollWidth")
            if width > viewport["width"]:
                culprits = tab.page.evaluate(
                    """(limit) => Array.from(document.querySelectorAll('body *'))
                    .filter(e => e.getBoundingClientRect().right > limit + 0.5)
                    .slice(0, 4).map(e => e.tagName.toLowerCase() + '.' + e.className)""",
                    viewport["width"],
                )
                too_wide.append(
                    f"{page.name} at {viewport['width']} px: {width} px wide ({culprits})"
                )
    assert not too_wide, "\n".join(too_wide)
    assert not tab.errors


def test_layer_table_on_a_phone_stacks_its_rows_with_the_patches_on_a_row_of_their_own(built, tab):
    """At 390 px the layer table does not scroll sideways (no column hidden to the right): each
    layer is a block of named cells, its top patches on a row below them; at 1280 it is a table."""
    tab.page.set_viewport_size(PHONE)
    tab.open(built.root / "index.html")
    tab.load_images()
    wrap = tab.page.evaluate(
        "(e => [e.scrollWidth, e.clientWidth])(document.querySelector('.table-wrap'))"
    )
    assert wrap[0] <= wrap[1], f"the layer table scrolls inside its box: {wrap}"
    rows = tab.page.evaluate("""
      Array.from(document.querySelectorAll('table.layer-list tbody tr')).map(tr => {
        const box = e => e.getBoundingClientRect();
        const cells = Array.from(tr.querySelectorAll('td:not(.preview)')).map(box);
        const strip = tr.querySelector('td.preview .strip');
        return {
          name: tr.querySelector('th').textContent.trim(),
          cellsBottom: Math.max(...cells.map(c => c.bottom)),
          strip: strip && {top: box(strip).top, left: box(strip).left, right: box(strip).right},
          rowLeft: box(tr).left,
          label: getComputedStyle(tr.querySelector('td'), '::before').content,
        };
      })""")
    assert [r["name"].split()[0] for r in rows] == ["conv1", "block2", "fc", "classifier"]
    for row in rows:
        assert row["label"] == '"type"', row  # each cell says which column it is
        if row["strip"]:
            assert row["strip"]["top"] >= row["cellsBottom"] - 0.5, (
                row
            )  # below the numbers, not beside
            assert (
                abs(row["strip"]["left"] - row["rowLeft"]) < 2 and row["strip"]["right"] <= 390
            ), row
    assert sum(r["strip"] is not None for r in rows) == 3
    tab.page.set_viewport_size(DESKTOP)
    assert (
        tab.page.evaluate("getComputedStyle(document.querySelector('table.layer-list')).display")
        == "table"
    )
    assert not tab.errors


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_map_legend_lies_outside_the_map(built, many_classes, tab, viewport):
    """The legend never covers a point: it is beside the canvas (below it on a phone), inside
    the window's width, and lists every class."""
    tab.page.set_viewport_size(viewport)
    for root, classes in (
        (built.root, len(built.site.embedding.label_names)),
        (many_classes, MANY_CLASSES),
    ):
        open_map(tab, root / "embedding.html")
        canvas, legend = (tab.page.locator(s).bounding_box() for s in ("#map", "#legend"))
        apart = (
            legend["x"] >= canvas["x"] + canvas["width"]
            or legend["y"] >= canvas["y"] + canvas["height"]
        )
        assert apart, f"the legend {legend} overlaps the map {canvas}"
        assert legend["x"] + legend["width"] <= viewport["width"]
        assert tab.page.locator("#legend li").count() == classes
        if viewport is PHONE:
            assert legend["y"] >= canvas["y"] + canvas["height"]  # below: the map keeps the width
    assert not tab.errors


def test_map_of_24_classes_draws_24_distinct_colours_from_the_shared_palette(many_classes, tab):
    """The palette (cnntool.io.palette, also embed's) has at least 20 distinct colours, and a
    map of 24 classes draws each class in its own one: the pixels of the canvas hold all 24."""
    assert len(set(CLASS_COLOURS)) >= 20
    tab.page.set_viewport_size(DESKTOP)
    open_map(tab, many_classes / "embedding.html")
    # the colours are counted in the page: shipping every pixel to Python took ~50 s
    packed = tab.page.evaluate("""(() => {
        const c = document.getElementById('map');
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const counts = new Map();
        for (let i = 0; i < data.length; i += 4) {
            const key = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
            counts.set(key, (counts.get(key) || 0) + 1);
        }
        return Array.from(counts).filter(([, n]) => n >= 20).map(([key]) => key);
    })()""")
    drawn = {(key >> 16 & 255, key >> 8 & 255, key & 255) for key in packed}
    palette = [
        tuple(round(c * 255) for c in rgb(colour)) for colour in CLASS_COLOURS[:MANY_CLASSES]
    ]
    shown = [colour for colour in palette if colour in drawn]
    assert len(set(palette)) == MANY_CLASSES
    assert len(shown) == MANY_CLASSES, (
        f"{MANY_CLASSES - len(shown)} classes' colours are not on the map"
    )
    # and the page's data carries the colours from Python: map.js has no palette of its own
    script = (Path(cnntool_assets()) / "map.js").read_text(encoding="utf-8")
    assert not any(colour in script.lower() for colour in CLASS_COLOURS)
    assert not tab.errors


def cnntool_assets() -> Path:
    from importlib import resources

    return Path(str(resources.files("cnntool.io.site") / "assets"))


def test_every_page_opens_cleanly_and_every_link_and_image_resolves(built, tab):
    """From index.html, follow every link: no console error, no broken image, no dead link;
    and every page of the site is reached."""
    root = built.root.resolve()
    assert crawl(tab, root) == set(root.rglob("*.html"))


def test_layer_page_shows_k_patches_per_card_sorts_and_filters(built, tab):
    tab.open(built.root / "layers/block2.html")
    counts = tab.page.evaluate(
        "Array.from(document.querySelectorAll('.unit-card')).map(c => "
        "c.querySelectorAll('img.patch').length)"
    )
    assert counts == [TOP] * 8
    tab.page.select_option("#sort", "max")
    shown = tab.page.evaluate(
        "Array.from(document.querySelectorAll('.unit-card')).map(c => Number(c.dataset.unit))"
    )
    by_max = sorted(built.pages[1].units, key=lambda u: (-u.stats.max, u.index))
    assert shown == [u.index for u in by_max]

    tab.open(built.root / "layers/conv1.html")
    tab.page.check("#hide-dead")
    hidden = tab.page.evaluate(
        "Array.from(document.querySelectorAll('.unit-card')).filter(c => c.hidden).map(c => "
        "Number(c.dataset.unit))"
    )
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
        expected = np.asarray(
            thumbnail(built.thumbnails[i], THUMB).resize((128, 128), Image.Resampling.NEAREST),
            dtype=np.float64,
        )
        other = np.asarray(
            thumbnail(built.thumbnails[(i + 90) % 180], THUMB).resize((128, 128)), dtype=np.float64
        )
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
    atlases = write_atlases(
        tmp_path / layout.ATLASES, [Image.fromarray(d) for d in digits], 28, site_root=tmp_path
    )
    points = tuple(
        Point(
            x=float(xy[i, 0]),
            y=float(xy[i, 1]),
            label=int(labels[i]),
            prediction=int(predictions[i]),
            correct=not wrong[i],
            path=f"mnist-5k/{i % len(digits):05d}",
            atlas=atlas_slot(i % 5000, 28)[0],
            cell=atlas_slot(i % 5000, 28)[1],
        )
        for i in range(count)
    )
    site = Site(
        model=ModelCard("lenet", "test", "28×28", "test", 1, 1, 10),
        data=DataCard("digits", count, 0, count, 0.97),
        layers=(),
        embedding=Embedding(
            "relu3", "t-SNE", points, tuple(str(d) for d in range(10)), tuple(atlases)
        ),
    )
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


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_screenshots_for_people(built, tab, viewport):
    """index, a layer page, a unit page and the map, as PNGs to look at (phone and desktop)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.page.set_viewport_size(viewport)
    device = "phone" if viewport is PHONE else "desktop"
    shots = {
        "index": "index.html",
        "layer": "layers/conv1.html",
        "unit": "layers/block2/unit_0001.html",
        "map": "embedding.html",
    }
    for name, page in shots.items():
        if name == "map":
            open_map(tab, built.root / page)
        else:
            tab.open(built.root / page)
            tab.load_images()
        path = ARTIFACTS / f"{name}-{device}.png"
        tab.page.screenshot(path=str(path), full_page=name != "map")
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        assert pixels.std() > 20, f"{path.name} looks blank"
        assert Image.open(path).width == viewport["width"], (
            f"{path.name}: the page is wider than the window"
        )
    print(f"\nscreenshots of the microscope site: {ARTIFACTS}")
    assert not tab.errors
