"""cnntool microscope: histograms that merge exactly, the layer plan, a hand-set model whose site
is known in advance, agreement with the single-purpose commands (top-patches, diagnose,
predict, attack) on the same data, resume, torchrun = one process, and a real site in
headless Chromium."""

from __future__ import annotations

import json
import math
import re
from html import unescape
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnntool.core.samples import mnist_5k
from cnntool.errors import CnnToolError
from cnntool.tasks.microscope import UnitHistograms, chosen_units, default_layers, merged_histograms
from cnntool.tasks.microscope.analysis import shown_box
from cnntool.tasks.microscope.histogram import FINEST
from tests import chromium
from tests.helpers import ROOT, InProcess
from tests.microscope_models import CLASSES, LEVELS, MISLABELLED, write_grey_images
from tests.pixels import png

DIGITS_PER_CLASS = 6
TOP = 4
UNITS = 8


# ---------------------------------------------------------------------------------------------
# streaming histograms


def _activations(seed: int = 0) -> torch.Tensor:
    """(50, 4, 3, 3): a wide unit, a narrow one far from 0, a constant one, a ReLU-like one."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((50, 4, 3, 3), generator=g)
    x[:, 0] *= 40
    x[:, 1] = x[:, 1] * 1e-5 + 1000
    x[:, 2] = 0.25
    x[:, 3] = x[:, 3].clamp_min(0)
    return x


def test_histograms_equal_numpy_whatever_the_batches_and_shards():
    data = _activations()
    whole = UnitHistograms(4)
    whole.update(data)
    batched = UnitHistograms(4)
    for start in range(0, 50, 7):
        batched.update(data[start : start + 7])
    shards = [UnitHistograms(4), UnitHistograms(4), UnitHistograms(4)]
    for n, start in enumerate(range(0, 50, 5)):  # strided 5-image batches over 3 "ranks"
        shards[n % 3].update(data[start : start + 5])
    merged = merged_histograms([None, *(s.state_dict() for s in shards)])
    for unit in range(4):
        edges, counts = whole.unit(unit)
        assert batched.unit(unit) == (edges, counts) == merged.unit(unit)
        values = data[:, unit].double().flatten().numpy()
        expected, _ = np.histogram(values, bins=np.array(edges))
        assert list(counts) == expected.tolist() and sum(counts) == 450
        widths = np.diff(edges)
        assert np.allclose(widths, widths[0]) and math.log2(widths[0]).is_integer()
        assert len(counts) <= 64
        assert edges[0] <= values.min() and values.max() < edges[-1]
    # the narrow unit far from 0: bins no finer than float32 can tell apart at 1000
    assert np.diff(whole.unit(1)[0])[0] == 2.0 ** (9 - 24)
    # the constant unit: one bin at the finest width
    assert whole.unit(2) == ((0.25, 0.25 + 2.0**FINEST), (450,))


def test_histograms_set_non_finite_values_apart():
    data = torch.tensor([[1.0, float("nan")], [2.0, float("inf")], [3.0, 1.0]]).T.reshape(2, 3, 1)
    histograms = UnitHistograms(2)
    histograms.update(data.transpose(0, 1))  # (3 images, 2 units, 1 position)
    assert histograms.nonfinite.tolist() == [0, 2]
    assert sum(histograms.unit(0)[1]) == 3 and sum(histograms.unit(1)[1]) == 1


# ---------------------------------------------------------------------------------------------
# what is shown


def test_default_layers_spread_over_the_depth():
    import torchvision

    from cnntool.core.loading.models import load_model

    assert default_layers(load_model("lenet5-mnist").module) == ["relu1", "relu2", "relu3"]
    assert default_layers(load_model("efficientnet_lite0").module) == [
        "_relu0",
        "_blocks.4",
        "_blocks.10",
        "_blocks.15",
        "_avg_pooling",
    ]
    assert default_layers(torchvision.models.resnet18()) == [
        "relu",
        "layer2.0",
        "layer3.0",
        "layer4.1",
        "avgpool",
    ]
    assert default_layers(torchvision.models.mobilenet_v2()) == [
        "features.0.2",
        "features.6",
        "features.11",
        "features.17",
        "features.18.2",
    ]


def test_units_are_the_first_n_all_or_a_list():
    assert chosen_units("8", 32) == tuple(range(8))
    assert chosen_units("100", 10) == tuple(range(10))
    assert chosen_units("all", 5) == (0, 1, 2, 3, 4)
    assert chosen_units("0-2,7", 10) == (0, 1, 2, 7)
    with pytest.raises(CnnToolError, match="12 does not exist"):
        chosen_units("3,12", 10)
    with pytest.raises(CnnToolError, match="at least 1"):
        chosen_units("0", 10)


def test_limit_spreads_over_a_sorted_set():
    from cnntool.core.data import open_data

    picked = open_data("mnist-5k").spread(2000)
    assert len(picked) == 2000 and np.bincount(picked.labels).tolist() == [200] * 10
    assert picked.arrays.shape == (2000, 28, 28) and picked.paths[1] == "mnist-5k/00002"


def test_a_patch_shows_its_field_but_no_more_than_the_image_the_model_sees():
    view = (16, 0, 240, 224)  # the model's centre crop in original pixels
    assert shown_box((30, 40, 33, 43), view) == (30, 40, 33, 43)  # a small field: as it is
    assert shown_box((-1, -1, 2, 2), view) == (-1, -1, 2, 2)  # at the border: zero padding
    assert shown_box((-150, -100, 300, 250), view) == view  # larger than the view: the view
    assert shown_box((-150, 20, 300, 60), view) == (16, 20, 240, 60)  # per axis


# ---------------------------------------------------------------------------------------------
# a hand-set model: the site is known in advance


@pytest.fixture(scope="module")
def bright_site(tmp_path_factory):
    base = tmp_path_factory.mktemp("bright")
    images = write_grey_images(base / "data")
    (base / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    done = InProcess()(
        "microscope",
        f"{ROOT}/tests/microscope_models.py:bright_net",
        "--trust-code",
        "--classes",
        base / "classes.txt",
        base / "data",
        "-o",
        base / "site",
        "--steps",
        "32",
        "--top",
        "9",
        threads=1,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return base / "site", images, json.loads(done.stdout)


def _read(path: Path):
    return json.loads(path.read_text())


def test_hand_set_model_bright_unit_fires_only_on_bright_images(bright_site):
    site, images, summary = bright_site
    levels = np.array([level for _, level in images])
    responses = {0: np.maximum(levels - 0.5, 0), 1: np.maximum(0.5 - levels, 0)}
    assert summary["layers"] == ["relu", "pool"] and summary["images"] == 12
    for unit, response in responses.items():
        record = _read(site / f"layers/relu/unit_{unit:04d}.json")
        order = sorted(np.flatnonzero(response > 0), key=lambda i: -response[i])  # where it is on
        assert len(order) == 6
        assert [p["source_index"] for p in record["patches"]] == order
        assert [p["value"] for p in record["patches"]] == pytest.approx(
            response[order].tolist(), abs=1e-6
        )
        assert all(p["box"] == [0, 0, 1, 1] for p in record["patches"])  # a 1×1 field at (0, 0)
        assert [p["source_path"] for p in record["patches"]] == [str(images[i][0]) for i in order]
        stats = record["stats"]
        assert stats["mean"] == pytest.approx(response.mean(), rel=1e-5)
        assert stats["max"] == pytest.approx(response.max(), rel=1e-5)
        assert stats["active"] == pytest.approx((response > 0).mean())
        n = 12 * 64
        treves_rolls = (1 - response.mean() ** 2 / (response**2).mean()) / (1 - 1 / n)
        assert stats["lifetime_sparsity"] == pytest.approx(treves_rolls, rel=1e-5)
        assert not (stats["dead"] or stats["constant"] or stats["saturated"])
        edges, counts = record["histogram"]["edges"], record["histogram"]["counts"]
        expected, _ = np.histogram(np.repeat(response, 64), bins=np.array(edges))
        assert counts == expected.tolist() and sum(counts) == n
        r = float(np.corrcoef(responses[0], responses[1])[0, 1])
        assert record["correlated"] == [{"unit": 1 - unit, "r": pytest.approx(r, abs=1e-6)}]
        # the classifier's logit of the unit's class is 2 × the unit: it votes 2 × its mean for it
        votes = [(v["name"], v["score"]) for v in record["votes"]]
        assert votes == [
            (CLASSES[1 - unit], pytest.approx(2 * response.mean(), rel=1e-5)),
            (CLASSES[unit], 0.0),
        ]
        # what it would draw: a bright image for the bright unit, a dark one for the dark unit
        drawn = (
            np.asarray(Image.open(site / record["visualization"]).convert("L"), dtype=float).mean()
            / 255
        )
        assert drawn > 0.7 if unit == 0 else drawn < 0.3
    pooled = _read(site / "layers/pool/unit_0000.json")
    # sees the whole image; only the 6 bright images are hits (a zero is not listed, #22)
    assert [p["box"] for p in pooled["patches"]] == [[0, 0, 8, 8]] * 6
    assert pooled["stats"]["active"] is None  # no rectifier after the pooling: not judged


def test_planted_dead_unit_gets_its_badge_and_no_empty_card(tmp_path):
    """DeadNet's unit 2 is never above 0: its card and page say "dead: never fires on DATA" and
    show no picture and no "Top 0 patches"; the bright unit's uniform white picture is flat and
    is marked "did not converge", not shown as a result."""
    images = write_grey_images(tmp_path / "data")
    done = InProcess()(
        "microscope",
        f"{ROOT}/tests/microscope_models.py:dead_net",
        "--trust-code",
        tmp_path / "data",
        "-o",
        tmp_path / "site",
        "--steps",
        "16",
        "--top",
        "4",
        threads=1,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert len(images) == 12
    site = tmp_path / "site"
    html = (site / "layers/relu.html").read_text(encoding="utf-8")
    cards = _cards(html)
    dead = cards[2]
    assert ">dead: never fires on DATA<" in dead
    assert "<img" not in dead and 'class="patches"' not in dead and "card-body" not in dead
    page = (site / "layers/relu/unit_0002.html").read_text(encoding="utf-8")
    assert (
        "Top 0 patches" not in page
        and "dead: never fires on DATA" in page
        and 'class="fv' not in page
    )
    record = _read(site / "layers/relu/unit_0002.json")
    assert record["stats"]["dead"] and record["visualization"] is None and record["patches"] == []
    # unit 0 ("bright"): its best input is a uniform white square, which has nothing to show
    bright = _read(site / "layers/relu/unit_0000.json")
    assert bright["visualization_failure"] == "flat"
    assert "did not converge" in cards[0] and "fv-failed" in cards[0]
    assert "did not converge" in (site / "layers/relu/unit_0000.html").read_text(encoding="utf-8")
    # how the pictures were made is said on stderr and on the layer page (small input: maximize's
    # own pixel recipe, at the model's input size, the --steps given)
    recipe = "pixel, the model's input size, 16 steps at lr 0.1"
    assert f"feature visualizations: {recipe}" in done.stderr
    assert f"feature visualizations: {recipe}" in unescape(html)
    assert _read(site / "layers/relu.json")["visualizations"] == recipe


def _cards(html: str) -> dict[int, str]:
    """A layer page's unit cards by unit index."""
    return {
        int(re.search(r'data-unit="(\d+)"', card).group(1)): card
        for card in re.findall(r'<a class="unit-card.*?</a>', html, flags=re.S)
    }


def test_hand_set_model_index_and_accuracy(bright_site):
    site, images, _ = bright_site
    index = _read(site / "index.json")
    labelled_bright = [level > 127 and level != MISLABELLED for level in LEVELS]
    predicted_bright = [level > 127 for level in LEVELS]
    correct = sum(a == b for a, b in zip(labelled_bright, predicted_bright, strict=True))
    assert index["data"] == {
        "name": str(site.parent / "data"),
        "images": 12,
        "skipped": 0,
        "labelled": 12,
        "accuracy": pytest.approx(correct / 12),
    }
    assert correct == 11
    layers = {layer["name"]: layer for layer in index["layers"]}
    assert layers["relu"]["type"] == "Conv2d → ReLU" and layers["relu"]["output_shape"] == [2, 8, 8]
    assert layers["relu"]["params"] == 4 and layers["relu"]["macs"] == 2 * 64
    assert layers["relu"]["receptive_field"] == 1 and layers["relu"]["dead"] == 0
    assert layers["pool"]["receptive_field"] is None and layers["pool"]["dead"] is None
    assert layers["fc"]["page"] is False and layers["fc"]["output_shape"] == [2]
    assert index["model"]["params"] == 10 and index["model"]["class_names"] == list(CLASSES)
    kinds = {(f["severity"], f["layer"]) for f in index["findings"]}
    assert ("info", None) in kinds  # 10 parameters: "the model is small"
    assert ("warning", "relu") in kinds  # |r| 0.60 between the two units
    points = _read(site / "embedding.json")["points"]
    assert len(points) == 12
    assert sum(p["correct"] is False for p in points) == 1  # the mislabelled image


# ---------------------------------------------------------------------------------------------
# a real site of LeNet-5: the same numbers as the single-purpose commands


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """60 MNIST digits as PNG files in class folders (6 of each class)."""
    folder = tmp_path_factory.mktemp("digits")
    images, labels = mnist_5k()
    for digit in range(10):
        for k, index in enumerate(np.flatnonzero(labels == digit)[:DIGITS_PER_CLASS]):
            path = folder / str(digit) / f"{k}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(images[index]).save(path)
    return folder


SITE_ARGS = (
    "--units",
    str(UNITS),
    "--top",
    str(TOP),
    "--batch-size",
    "16",
    "--projections",
    "2",
    "-q",
)


@pytest.fixture(scope="module")
def lenet_site(digits, tmp_path_factory):
    site = tmp_path_factory.mktemp("lenet") / "site"
    done = InProcess()(
        "microscope",
        "lenet5-mnist",
        digits,
        "-o",
        site,
        *SITE_ARGS,
        "--steps",
        "8",
        "--attack",
        "0.1,0.3",
        threads=1,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return site


def test_top_patches_equal_visualize_top_patches(lenet_site, digits, tmp_path):
    done = InProcess()(
        "visualize",
        "top-patches",
        "lenet5-mnist",
        digits,
        "--layer",
        "relu2",
        "--units",
        f"0-{UNITS - 1}",
        "--top",
        str(TOP),
        "--batch-size",
        "16",
        "-o",
        tmp_path,
        "-q",
        threads=1,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    expected = [json.loads(line) for line in done.stdout.splitlines()]
    page = _read(lenet_site / "layers/relu2.json")
    shown = [
        {
            "unit": u["index"],
            "rank": rank,
            "path": p["source_path"],
            "box": p["box"],
            "value": p["value"],
            "index": p["source_index"],
        }
        for u in page["units"]
        for rank, p in enumerate(u["patches"])
    ]
    assert len(shown) == UNITS * TOP
    assert shown == [
        {k: r[k] for k in ("unit", "rank", "path", "box", "value", "index")} for r in expected
    ]


def test_statistics_equal_diagnose(lenet_site, digits):
    done = InProcess()(
        "diagnose",
        "lenet5-mnist",
        digits,
        "--layers",
        "relu1,relu2,relu3",
        "--batch-size",
        "16",
        "-q",
        threads=1,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    records = {r["measured_at"]: r for r in map(json.loads, done.stdout.splitlines()) if r["layer"]}
    index = {layer["name"]: layer for layer in _read(lenet_site / "index.json")["layers"]}
    for name in ("relu1", "relu2", "relu3"):
        record, summary = records[name], index[name]
        assert summary["dead"] == record["dead"] and summary["constant"] == record["constant"]
        assert summary["mean_abs_r"] == pytest.approx(record["mean_abs_r"], rel=1e-6)
        for unit in _read(lenet_site / f"layers/{name}.json")["units"]:
            u, stats = unit["index"], unit["stats"]
            assert stats["mean"] == pytest.approx(record["unit_mean"][u], rel=1e-6, abs=1e-12)
            assert stats["max"] == pytest.approx(record["unit_max"][u], rel=1e-6)
            assert stats["active"] == pytest.approx(record["unit_active"][u], rel=1e-6)
            sparsity = record["unit_lifetime_sparsity"][u]
            assert stats["lifetime_sparsity"] == (
                None if sparsity is None else pytest.approx(sparsity, rel=1e-6)
            )
            assert stats["dead"] == (u in record["dead_units"])
            if unit["patches"]:  # the top hit is the unit's maximum
                assert unit["patches"][0]["value"] == pytest.approx(record["unit_max"][u], rel=1e-5)
    messages = {f["message"] for f in _read(lenet_site / "index.json")["findings"]}
    for record in records.values():
        assert {f["message"] for f in record["findings"]} <= messages


def test_accuracy_equals_predict(lenet_site, digits):
    done = InProcess()("predict", "lenet5-mnist", digits, "--top", "1", "-q", threads=1, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    data = _read(lenet_site / "index.json")["data"]
    assert data["images"] == data["labelled"] == len(rows) == 10 * DIGITS_PER_CLASS
    assert data["accuracy"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
    points = _read(lenet_site / "embedding.json")["points"]
    wrong = {r["path"] for r in rows if not r["correct"]}
    assert {p["path"] for p in points if p["correct"] is False} == wrong


def test_attack_page_equals_the_attack_sweep(lenet_site, digits):
    done = InProcess()(
        "attack", "fgsm", "lenet5-mnist", digits, "--eps", "0.1,0.3", "-q", threads=1, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    sweep = [json.loads(line) for line in done.stdout.splitlines()]
    attack = _read(lenet_site / "attack.json")
    assert attack["eps"] == [0.1, 0.3]
    assert attack["accuracy"] == pytest.approx([r["adv_accuracy"] for r in sweep], abs=1e-6)
    assert attack["accuracy"][1] < attack["accuracy"][0] < 1
    assert 1 <= len(attack["triptychs"]) <= 3


def _assert_filter_sheet(sheet: np.ndarray) -> None:
    """The first layer page's filters: `visualize filters --tiles outputs`'s sheet of LeNet's
    conv1 (one input channel): each 3×3 filter a blue–white–red tile of 16-px squares scaled
    by its own largest |weight|, the title in DejaVu Sans and a colour bar beside them."""
    from cnntool.core.loading.zoo import load_builtin
    from cnntool.io.figure_style import colorize
    from cnntool.io.grids import symmetric_scale
    from tests.pixels import colour_bars, find, find_styled_text

    weights = load_builtin("lenet5-mnist").conv1.weight.detach().numpy()
    assert find_styled_text(sheet[:40], "lenet5-mnist conv1 · 3×3", 17, bold=True)
    for k in (0, 31):
        tile = np.rint(colorize(symmetric_scale(weights[k, 0]), "RdBu_r") * 255).astype(np.uint8)
        assert len(find(sheet, np.kron(tile, np.ones((16, 16, 1), np.uint8)), tolerance=1)) == 1
    assert colour_bars(sheet, "RdBu_r")


def test_site_records_and_size(lenet_site):
    from cnntool.io.site import LayerPage, Site

    site = Site.from_dict(_read(lenet_site / "index.json"))
    assert [layer.name for layer in site.layers] == ["relu1", "relu2", "relu3", "linear2"]
    assert site.layers[0].filters_image == "layers/relu1/filters.png"
    _assert_filter_sheet(png(lenet_site / "layers/relu1/filters.png"))
    for name in ("relu1", "relu2", "relu3"):
        page = LayerPage.from_dict(_read(lenet_site / f"layers/{name}.json"))
        assert [u.index for u in page.units] == list(range(UNITS)) and page.top == TOP
        cards = _cards((lenet_site / f"layers/{name}.html").read_text(encoding="utf-8"))
        for unit in page.units:
            assert (
                unit.visualization is None
            ) == unit.stats.dead  # a dead unit has nothing to draw
            assert (lenet_site / f"layers/{name}/unit_{unit.index:04d}.html").is_file()
            # a picture that failed its check is marked on its card, never shown as a result
            assert ("did not converge" in cards[unit.index]) == (
                unit.visualization_failure is not None
            )
            if unit.visualization is not None and unit.visualization_failure is None:
                shown = (
                    np.asarray(
                        Image.open(lenet_site / unit.visualization).convert("L"), dtype=float
                    )
                    / 255
                )
                assert (
                    np.percentile(shown, 99) - np.percentile(shown, 1) > 0.5
                )  # stretched, not flat
            if unit.stats.dead:  # never on: no top patches, no votes
                assert unit.patches == () and unit.votes == ()
                continue
            assert 1 <= len(unit.patches) <= TOP and all(p.value > 0 for p in unit.patches)
            assert [p.projection is not None for p in unit.patches] == [True, True, False, False][
                : len(unit.patches)
            ]
        assert any(u.votes for u in page.units) == (name == "relu3")  # only relu3 feeds the logits
    assert any(u["stats"]["dead"] for u in _read(lenet_site / "layers/relu3.json")["units"])
    assert (lenet_site / "index.html").stat().st_size < 2_000_000
    assert not list(lenet_site.glob(".microscope*"))  # no resume state or spool left behind


# ---------------------------------------------------------------------------------------------
# resume and torchrun


def _site_json(site: Path) -> dict:
    return {
        str(p.relative_to(site)): json.loads(p.read_text()) for p in sorted(site.rglob("*.json"))
    }


def test_an_interrupted_scan_resumes_to_the_same_site(digits, tmp_path, monkeypatch):
    from cnntool.cli.main import main
    from cnntool.core.session import ScanSession

    args = [
        "microscope",
        "lenet5-mnist",
        str(digits),
        *SITE_ARGS,
        "--no-maximize",
        "--checkpoint-every",
        "1",
    ]
    with pytest.raises(SystemExit) as fresh:
        main([*args, "-o", str(tmp_path / "fresh")])
    assert fresh.value.code == 0
    batches = ScanSession.batches

    def interrupted(self, title, **options):
        for count, batch in enumerate(batches(self, title, **options)):
            if count == 2:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(ScanSession, "batches", interrupted)
    with pytest.raises(SystemExit) as stopped:
        main([*args, "-o", str(tmp_path / "resumed")])
    assert stopped.value.code == 130
    assert (tmp_path / "resumed/.microscope-state.pt").is_file()
    assert not (tmp_path / "resumed/index.html").exists()
    monkeypatch.setattr(ScanSession, "batches", batches)
    with pytest.raises(SystemExit) as resumed:
        main([*args, "-o", str(tmp_path / "resumed"), "--resume"])
    assert resumed.value.code == 0
    assert _site_json(tmp_path / "resumed") == _site_json(tmp_path / "fresh")
    assert not (tmp_path / "resumed/.microscope-state.pt").exists()


@pytest.mark.torchrun
@pytest.mark.slow
def test_torchrun_two_cpu_ranks_write_the_site_one_process_writes(digits, tmp_path, cnntool):
    """Batches of one image: a CPU matmul rounds a row differently in batches of another size,
    and t-SNE magnifies a last-bit difference in the features into another map. With every
    image alone in its forward, the ranks' features are the one process's, bit for bit, and
    what is left to compare is the merge: top-K, moments, histograms, predictions, attack."""
    args = [
        "microscope",
        "lenet5-mnist",
        digits,
        *SITE_ARGS,
        "--batch-size",
        "1",
        "--no-maximize",
        "--attack",
        "0.2",
    ]
    single = cnntool(*args, "-o", tmp_path / "one", threads=1, cwd=ROOT)
    assert single.returncode == 0, single.stderr
    double = cnntool.torchrun(*args, "-o", tmp_path / "two", cwd=ROOT)
    assert double.returncode == 0, double.stderr
    one, two = _site_json(tmp_path / "one"), _site_json(tmp_path / "two")
    assert one.keys() == two.keys() and len(one) == 1 + 3 + 3 * UNITS + 2
    for name in one:
        assert _same(one[name], two[name]), name
    assert json.loads(double.stdout)["images"] == 10 * DIGITS_PER_CLASS  # rank 0 alone writes


def _same(a, b) -> bool:
    """Equal records: numbers to 1e-5 (float64 moments merged in another order), the rest
    exactly."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert len(a) == len(b)
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6)
        return True
    assert a == b
    return True


# ---------------------------------------------------------------------------------------------
# the real LeNet-5 site in headless Chromium

ARTIFACTS = Path(ROOT) / ".pytest-artifacts" / "microscope"
browser, tab = chromium.browser, chromium.tab  # the fixtures, for the tests below


@pytest.fixture(scope="module")
def browser_site(browser, lenet_site):
    """The LeNet-5 site (after `browser`, so that a missing Chromium skips before the build)."""
    return lenet_site


@pytest.mark.browser
def test_real_site_opens_cleanly_every_link_and_image_resolves(browser_site, tab):
    root = browser_site.resolve()
    reached = chromium.crawl(tab, root)
    assert reached == set(root.rglob("*.html"))
    assert len(reached) == 1 + 3 + 3 * UNITS + 2  # index, layers, units, map, attack


@pytest.mark.browser
def test_real_site_cards_map_and_screenshots(browser_site, tab):
    from tests.chromium import MAP_BACKGROUND, open_map, screenshot_array

    tab.open(browser_site / "layers/relu2.html")
    counts = tab.page.evaluate(
        "Array.from(document.querySelectorAll('.unit-card')).map(c => "
        "c.querySelectorAll('img.patch').length)"
    )
    assert counts == [TOP] * UNITS
    open_map(tab, browser_site / "embedding.html")
    pixels = screenshot_array(tab.page.locator("#map"))
    assert (np.abs(pixels - MAP_BACKGROUND).sum(axis=2) > 30).mean() > 0.02, (
        "the map is (almost) blank"
    )
    x, y = tab.page.evaluate("window.cnntoolMap.screenPosition(0)")
    tab.page.mouse.move(x, y)
    tab.page.locator("#tip").wait_for(state="visible")
    assert "/0/" in tab.page.locator("#tip").inner_text()  # the first image is a 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, page in {
        "index": "index.html",
        "layer": "layers/relu2.html",
        "unit": "layers/relu3/unit_0001.html",
        "map": "embedding.html",
        "attack": "attack.html",
    }.items():
        if name == "map":
            open_map(tab, browser_site / page)
        else:
            tab.open(browser_site / page)
            tab.load_images()
        if name == "attack":  # the ε column header is shown as ε, not upper-cased to Ε
            assert tab.page.locator("table.attack thead th").first.inner_text() == "ε"
        path = ARTIFACTS / f"{name}.png"
        tab.page.screenshot(path=str(path), full_page=name != "map")
        assert np.asarray(Image.open(path).convert("L"), dtype=np.float64).std() > 20, (
            f"{name}.png is blank"
        )
    print(f"\nscreenshots of the LeNet-5 microscope: {ARTIFACTS}")
    assert not tab.errors
