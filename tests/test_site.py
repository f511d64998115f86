"""The microscope site without a browser: records, escaping, links, images, formats, atlases.

The same site is opened in headless Chromium by test_site_browser.py; the checks here run
everywhere (no Chromium needed) and read the HTML with the standard library's parser.
"""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from PIL import Image

from cnntool.core.samples import mnist_5k
from cnntool.io.site import (
    Atlas,
    DataCard,
    Embedding,
    Finding,
    LayerPage,
    LayerSummary,
    ModelCard,
    Patch,
    Point,
    Site,
    Unit,
    UnitStats,
    atlas_slot,
    atlas_thumb_size,
    layout,
    save_patch,
    write_atlases,
    write_site,
)
from cnntool.io.site.markup import count, histogram_svg, number, share
from cnntool.io.site.model import Histogram
from tests.site_fixture import TOP, shared_site


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return shared_site(tmp_path_factory)


class Tags(HTMLParser):
    """Every start tag of a page, with its attributes, and the text of <script> blocks."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def parse(path: Path) -> Tags:
    tags = Tags()
    tags.feed(path.read_text(encoding="utf-8"))
    return tags


def local_target(page: Path, link: str) -> Path | None:
    """The file a relative link or file:// URL points at; None for other schemes."""
    parts = urlsplit(link)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme:
        return None
    if not parts.path:
        return page  # '#main': a place on the same page
    return (page.parent / unquote(parts.path)).resolve()


def test_records_round_trip_through_json(built):
    assert Site.from_dict(json.loads(built.site.to_json())) == built.site
    for page in built.pages:
        assert LayerPage.from_dict(json.loads(page.to_json())) == page


def test_every_page_has_its_record_beside_it(built):
    pages = sorted(built.root.rglob("*.html"))
    assert len(pages) == 1 + 3 + (8 + 8 + 12) + 2  # index, layers, units, map, attack
    for page in pages:
        record = json.loads(page.with_suffix(".json").read_text(encoding="utf-8"))
        assert record
    conv1 = json.loads((built.root / "layers/conv1.json").read_text(encoding="utf-8"))
    assert conv1 == built.pages[0].to_dict()
    unit = json.loads((built.root / "layers/fc/unit_0003.json").read_text(encoding="utf-8"))
    assert Unit.from_dict(unit) == built.pages[2].units[3]


def test_links_and_images_resolve_and_images_have_alt_texts(built):
    for page in built.root.rglob("*.html"):
        for tag, attrs in parse(page).tags:
            if tag == "img":
                assert attrs.get("alt"), f"{page.name}: an image without alt text"
            link = (
                attrs.get("href")
                if tag in ("a", "link")
                else attrs.get("src")
                if tag in ("img", "script")
                else None
            )
            if link is None:
                continue
            target = local_target(page, link)
            assert target is None or target.is_file(), f"{page.relative_to(built.root)} -> {link}"


def test_index_is_small_and_images_are_lazy(built):
    index = built.root / "index.html"
    assert index.stat().st_size < 2_000_000
    layer = parse(built.root / "layers/block2.html")
    patches = [a for t, a in layer.tags if t == "img" and "patch" in a.get("class", "")]
    assert len(patches) == 8 * TOP
    assert all(a.get("loading") == "lazy" for a in patches)
    assert all(a["src"].endswith(".jpg") for a in patches)


def test_layer_page_has_a_card_per_unit_with_k_patches(built):
    html = (built.root / "layers/conv1.html").read_text(encoding="utf-8")
    cards = re.findall(r'<a class="unit-card[^"]*".*?</a>', html, flags=re.S)
    assert len(cards) == 8
    for card in cards:
        assert card.count('class="patch"') == TOP
    dead = [c for c in cards if 'data-dead="1"' in c]
    assert (
        len(dead) == 1 and 'data-unit="5"' in dead[0] and ">dead: never fires on DATA<" in dead[0]
    )


def test_unit_page_draws_the_receptive_field_where_it_is(built):
    unit = built.pages[1].units[2]  # block2: 24 px boxes in 64 px crops
    html = (built.root / layout.unit_page("block2", 2)).read_text(encoding="utf-8")
    boxes = re.findall(
        r'class="box" style="left:([\d.]+)%;top:([\d.]+)%;width:([\d.]+)%;height:([\d.]+)%', html
    )
    assert len(boxes) == len(unit.patches) == TOP
    for patch, box in zip(unit.patches, boxes, strict=True):
        x0, y0, x1, y1 = patch.box
        assert [float(v) for v in box] == pytest.approx(
            [x0 / 64 * 100, y0 / 64 * 100, 24 / 64 * 100, 24 / 64 * 100], abs=0.01
        )
    assert 'rel="prev"' in html and 'rel="next"' in html
    # the whole-input layer: the patch is the image, no box is drawn over a copy of it
    fc = (built.root / layout.unit_page("fc", 0)).read_text(encoding="utf-8")
    assert 'class="box"' not in fc
    assert 'rel="prev"' not in fc and "Votes for classes" in fc


def test_every_string_is_escaped(tmp_path):
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes"'
    patch = Patch(
        image="p/a b#1.jpg", value=1.0, source_index=0, source_path=hostile, box=(0, 0, 4, 4)
    )
    unit = Unit(
        index=0,
        patches=(patch,),
        stats=UnitStats(mean=0.5, max=1.0, lifetime_sparsity=0.3, active=0.4),
    )
    point = Point(
        x=0.0,
        y=1.0,
        label=0,
        prediction=0,
        correct=True,
        path="</script><i id=pwn>" + hostile,
        atlas=0,
        cell=0,
    )
    site = Site(
        model=ModelCard(
            name=hostile,
            source=hostile,
            preprocessing=hostile,
            preprocessing_source=hostile,
            params=10,
            macs=None,
            classes=1,
            class_names=(hostile,),
        ),
        data=DataCard(name=hostile, images=1, skipped=0, labelled=0, accuracy=None),
        layers=(
            LayerSummary(
                name="a<b>",
                type=hostile,
                output_shape=(1,),
                params=1,
                macs=1,
                receptive_field=None,
                jump=None,
                units=1,
                dead=None,
                constant=None,
                mean_abs_r=None,
            ),
        ),
        findings=(Finding("error", "a<b>", hostile, hostile, hostile),),
        embedding=Embedding(
            layer=hostile,
            method="t-SNE",
            points=(point,),
            label_names=(hostile,),
            atlases=(Atlas(image="atlases/x.jpg", thumb=8, columns=1, count=1),),
        ),
    )
    write_site(tmp_path, site, [LayerPage(name="a<b>", top=1, units=(unit,))])
    for page in tmp_path.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert (
            "<script>alert" not in text and "<img src=x" not in text and "<i id=pwn>" not in text
        ), page.name
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert (
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt; &amp; "
        "&quot;quotes&quot;"
    ) in index
    layer = (tmp_path / layout.layer_page("a<b>")).read_text(encoding="utf-8")
    assert 'src="../p/a%20b%231.jpg"' in layer  # a path is percent-encoded, not cut at '#'
    # the map's inlined data decodes back to the very same strings
    block = parse(tmp_path / "embedding.html").scripts[0]
    data = json.loads(block)
    assert data["path"] == [point.path] and data["names"] == [hostile]


def test_number_formats():
    assert count(61_100_840) == "61.1\u2009M"
    assert count(4_089_184_256) == "4.09\u2009G"
    assert count(999_600) == "1\u2009M"
    assert count(1184) == "1,184" and count(None) == "\u2014"
    assert (
        share(0.125) == "12.5%"
        and share(0.0004) == "<0.1%"
        and share(1.0) == "100%"
        and share(0) == "0%"
    )
    assert number(0.00012) == "1.20e-04" and number(2.345) == "2.35" and number(12345.6) == "12,346"
    assert layout.layer_slug("_blocks.3") == "_blocks.3"
    # a lossy slug carries a hash of the real name: two names never share a page (#21)
    assert re.fullmatch(r"a-b-c-[0-9a-f]{8}", layout.layer_slug("a/b c"))
    assert re.fullmatch(r"layer\.x-[0-9a-f]{8}", layout.layer_slug(".x"))
    assert layout.layer_slug("conv_α") != layout.layer_slug("conv_β")


def test_histogram_bars_are_log_counts():
    svg = histogram_svg(
        Histogram(edges=(-1.0, 0.0, 1.0, 2.0), counts=(0, 999, 9)), "h", width=300, height=122
    )
    heights = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)"', svg)]
    assert heights == pytest.approx(
        [100.0, 100 * math.log(10) / math.log(1000)], abs=0.1
    )  # the 0 draws nothing
    assert re.search(r'<line class="zero" x1="100.0"', svg)  # 0 sits a third of the way along


def test_atlases_put_each_thumbnail_in_its_cell(tmp_path):
    digits = [Image.fromarray(d) for d in mnist_5k()[0][:20]]
    atlases = write_atlases(tmp_path / "atlases", digits, 16, site_root=tmp_path, max_side=64)
    assert [(a.image, a.columns, a.count) for a in atlases] == [
        ("atlases/atlas_000.jpg", 4, 16),
        ("atlases/atlas_001.jpg", 4, 4),
    ]
    sheets = [
        np.asarray(Image.open(tmp_path / a.image).convert("L"), dtype=np.float64) for a in atlases
    ]
    assert sheets[0].shape == (64, 64) and sheets[1].shape == (16, 64)
    for i, digit in enumerate(digits):
        number_, cell = atlas_slot(i, 16, max_side=64)
        expected = np.asarray(digit.resize((16, 16), Image.Resampling.BICUBIC), dtype=np.float64)
        sheet = sheets[number_]
        cells = [
            sheet[r * 16 : (r + 1) * 16, c * 16 : (c + 1) * 16]
            for r in range(sheet.shape[0] // 16)
            for c in range(4)
        ]
        errors = [np.abs(block - expected).mean() for block in cells]
        assert int(np.argmin(errors)) == cell and errors[cell] < 12  # JPEG: close, and closest
    assert [atlas_thumb_size(n) for n in (0, 16_384, 20_000, 100_000, 10**7)] == [
        64,
        64,
        57,
        25,
        16,
    ]


def test_patches_are_padded_with_black_and_small_fields_enlarged(tmp_path):
    image = Image.new("RGB", (10, 10), (200, 100, 50))
    save_patch(image, (-2, 8, 1, 11), tmp_path / "p.jpg")  # 3×3, reaching past the left and bottom
    patch = np.asarray(Image.open(tmp_path / "p.jpg"), dtype=np.float64)
    assert patch.shape == (66, 66, 3)  # 3 px × 22 (nearest), at least 64
    # the one column inside, top two rows; JPEG blurs a few pixels at each edge
    assert np.abs(patch[4:40, 50:62] - (200, 100, 50)).max() < 12
    assert patch[:, :38].max() < 12 and patch[50:].max() < 12  # outside the image: black


def test_map_data_colours_by_what_is_known_and_keeps_the_aspect():
    from cnntool.io.palette import CLASS_COLOURS, UNKNOWN
    from cnntool.io.site.embedding import map_data

    atlas = (Atlas(image="atlases/a b.jpg", thumb=8, columns=2, count=2),)
    unlabelled = (
        Point(x=0.0, y=0.0, label=None, prediction=3, correct=None, path="a", atlas=0, cell=0),
        Point(x=1.0, y=2.0, label=None, prediction=1, correct=None, path="b", atlas=0, cell=1),
    )
    data = map_data(Embedding("fc", "PCA", unlabelled, ("w", "x", "y", "z"), atlas))
    assert [m["key"] for m in data["modes"]] == ["prediction"]
    assert data["modes"][0]["of"] == [1, 0] and data["modes"][0]["colors"] == [
        CLASS_COLOURS[1],
        CLASS_COLOURS[3],
        UNKNOWN,
    ]
    # y spans 2, x spans 1: x is centred in the unit square, y turned so that up is up
    assert data["x"] == [0.25, 0.75] and data["y"] == [1.0, 0.0]
    assert data["href"] is None and data["atlases"][0]["image"] == "atlases/a%20b.jpg"

    labelled = (
        Point(0.0, 0.0, 2, 2, True, "a", 0, 0, href="file:///a.png"),
        Point(1.0, 1.0, 0, 2, False, "b", 0, 1),
        Point(2.0, 2.0, None, 0, None, "c", 0, 1),
    )
    data = map_data(Embedding("fc", "t-SNE", labelled, ("p", "q", "r"), atlas))
    modes = {m["key"]: m for m in data["modes"]}
    assert list(modes) == ["label", "correct", "prediction"]
    assert modes["label"]["of"] == [1, 0, 2]  # classes 0 and 2, then "unknown"
    assert modes["correct"]["of"] == [0, 1, 2]  # right, wrong, no label
    assert [e["count"] for e in modes["correct"]["legend"]] == [1, 1, 1]
    assert data["href"] == ["file:///a.png", None, None]
    assert sorted(data["order"]) == [0, 1, 2]


def test_attack_curve_spaces_eps_truly_and_titles_its_axes():
    from cnntool.io.site.markup import curve_svg

    tick = r'<text x="[\d.]+" y="\d+" text-anchor="middle">([^<]+)</text>'
    svg = curve_svg(
        [0.0, 1 / 255, 2 / 255, 8 / 255],
        [0.99, 0.9, 0.7, 0.1],
        ["0", "1/255", "2/255", "8/255"],
        "t",
    )
    xs = [float(x) for x in re.findall(r'<circle cx="([\d.]+)"', svg)]
    assert [(x - xs[0]) / (xs[-1] - xs[0]) for x in xs] == pytest.approx(
        [0, 1 / 8, 2 / 8, 1], abs=0.01
    )
    assert '">ε (L∞, pixel scale 0–1)</text>' in svg and '">accuracy (%)</text>' in svg
    assert re.findall(tick, svg) == ["0", "1/255", "2/255", "8/255"]
    # ε values a few pixels apart keep their points but not both labels
    svg = curve_svg(
        [0.0, 0.007, 0.01, 0.3], [0.99, 0.9, 0.8, 0.1], ["0", "0.007", "0.01", "0.3"], "t"
    )
    assert len(re.findall(r"<circle ", svg)) == 4 and re.findall(tick, svg) == ["0", "0.3"]


def test_attack_page_draws_the_clean_accuracy_at_eps_zero(built):
    from dataclasses import replace

    from cnntool.io.site.pages import attack_page

    attack = built.site.attack
    assert attack.eps[0] == 0
    without_zero = replace(
        attack, eps=attack.eps[1:], accuracy=attack.accuracy[1:], clean_accuracy=attack.accuracy[0]
    )
    page = attack_page(replace(built.site, attack=without_zero))
    assert page.count("<circle ") == len(attack.eps)  # the clean point is back at ε = 0
    assert '<tr><td class="num">0</td>' in page
    assert "(perturbation ×" in page
