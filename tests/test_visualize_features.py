"""visualize filters / activations / top-patches: tasks against brute force and hand-built
networks, and the commands as a user runs them."""

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from cnntool.core.data import BatchStream, open_data
from cnntool.core.hooks import capture, hook_count
from cnntool.core.preprocessing import Preprocessing
from cnntool.core.receptive_field import receptive_fields
from cnntool.errors import CnnToolError
from cnntool.io.figure_style import FRAME
from cnntool.io.figures import to_uint8
from cnntool.io.patches import STYLE
from cnntool.tasks.activations import feature_maps
from cnntool.tasks.filters import filters
from cnntool.tasks.top_patches import TopK, original_box, scan, top_patches
from tests.pixels import (
    colour_bars,
    find,
    find_styled_text,
    grid_cells,
    grid_size,
    ink_height,
    png,
    spread,
)
from tests.tiny_models import seeded_tiny_net


def cli(*args):
    from cnntool.cli.main import cli as group

    return CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)


# ---------------------------------------------------------------------------------------------
# filters


def _conv_bn(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 4, 3, bias=False),
        nn.BatchNorm2d(4),
    )
    for bn in (model[1], model[4]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-1, 1)
    return model.eval()


def test_folded_filters_equal_conv_then_batchnorm():
    model = _conv_bn()
    x = torch.randn(2, 3, 9, 9)
    for layer, bn, inputs in (("0", model[1], x), ("3", model[4], model[2](model[1](model[0](x))))):
        result = filters(model, layer, fold_bn=True)
        assert result.folded == str(int(layer) + 1)
        conv = model[int(layer)]
        folded = nn.functional.conv2d(inputs, result.weights, result.bias, padding=conv.padding)
        assert torch.allclose(folded, bn(conv(inputs)), atol=1e-5)


def test_filters_default_is_first_conv_and_stats():
    model = _conv_bn()
    result = filters(model)
    assert result.layer == "0" and result.folded is None
    assert torch.equal(result.weights, model[0].weight.detach())
    w = model[0].weight.detach().reshape(6, -1).double()
    assert result.stats[2].norm == pytest.approx(float(w[2].norm()))
    corr = torch.corrcoef(w)
    corr.fill_diagonal_(0)
    assert result.stats[0].max_abs_corr == pytest.approx(float(corr[0].abs().max()))
    with pytest.raises(CnnToolError, match="not a Conv2d"):
        filters(model, "2")
    with pytest.raises(CnnToolError, match="no BatchNorm2d follows"):
        filters(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), fold_bn=True)


def test_fold_lite0_stem_matches_the_network(tmp_path):
    """lite0's Conv2dSame pads in forward; folding is about weights only, so compare the
    stem+BN output with the folded filters applied through the same padded forward."""
    from cnntool.core.loading.models import load_model

    loaded = load_model("efficientnet_lite0", device="cpu")
    m = loaded.module
    result = filters(m, fold_bn=True)
    assert (result.layer, result.folded) == ("_conv_stem", "_bn0")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = m._bn0(m._conv_stem(x))
        stem = m._conv_stem
        weight, bias = stem.weight.data.clone(), stem.bias
        stem.weight.data.copy_(result.weights)
        stem.bias = nn.Parameter(result.bias)
        try:
            got = stem(x)
        finally:
            stem.weight.data.copy_(weight)
            stem.bias = bias
    assert torch.allclose(got, expected, atol=1e-4)
    out = tmp_path / "stem.png"
    r = cli(
        "visualize",
        "filters",
        "efficientnet_lite0",
        "--fold-bn",
        "-o",
        out,
        "--format",
        "jsonl",
        "-q",
    )
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(records) == 32 and {"norm", "mean", "std", "max_abs_corr"} <= set(records[0])
    # 32 RGB filters of 3×3, each kernel pixel an exact 16×16 block (48-px tiles, nearest
    # neighbour, no blur), labelled 0..31 in DejaVu Sans, under a title ≥ 11 px high
    pixels = png(out)
    assert find_styled_text(
        pixels[:40],
        "efficientnet_lite0 _conv_stem (+_bn0 folded) · 3×3, RGB (0 = mid-grey)",
        17,
        bold=True,
    )
    limits = np.abs(result.weights.numpy()).reshape(32, -1).max(axis=1)
    for n in (0, 7, 31):
        tile = to_uint8(result.weights[n].numpy().transpose(1, 2, 0) / (2 * limits[n]) + 0.5)
        hits = find(pixels, np.kron(tile, np.ones((16, 16, 1), dtype=np.uint8)))
        assert len(hits) == 1, n
        x, y = hits[0]
        assert find_styled_text(pixels[y + 48 : y + 48 + 22, x - 10 : x + 58], str(n), 15), n
        assert (pixels[y - 1, x : x + 48] == FRAME).all()  # a grey frame round the tile, outside it
    assert ink_height(pixels[6 : 6 + 24]) >= 11 and not colour_bars(pixels, "RdBu_r")  # RGB: no bar


def _lenet_conv2(tmp_path, *args):
    out = tmp_path / "f.png"
    r = cli(
        "visualize",
        "filters",
        "lenet5-mnist",
        "--layer",
        "conv2",
        "--max-filters",
        "4",
        "--max-inputs",
        "3",
        "-o",
        out,
        "-q",
        *args,
    )
    assert r.exit_code == 0, r.output
    return png(out)


def test_filters_cli_pairs_and_outputs(tmp_path):
    """conv2 of LeNet-5 (3×3 kernels, 32 inputs): 4 filters × 3 input slices labelled
    output:input, or each filter's mean over its inputs, labelled 0..3; each tile the kernel in
    RdBu_r (0 white) enlarged 16× exactly, beside a colour bar of RdBu_r with its labels."""
    from matplotlib import colormaps

    weights = filters(
        __import__("cnntool.core.loading.models", fromlist=["x"])
        .load_model("lenet5-mnist", device="cpu")
        .module,
        "conv2",
    ).weights.numpy()

    def drawn(kernel, limit):
        return to_uint8(colormaps["RdBu_r"](np.clip(kernel / (2 * limit) + 0.5, 0, 1))[..., :3])

    expected = {
        "pairs": [
            (f"{o}:{i}", weights[o, i], np.abs(weights[o]).max())
            for o in range(4)
            for i in range(3)
        ],
        "outputs": [
            (str(o), weights[o].mean(axis=0), np.abs(weights[o].mean(axis=0)).max())
            for o in range(4)
        ],
    }
    for tiles, cells in expected.items():
        pixels = _lenet_conv2(tmp_path, "--tiles", tiles)
        assert find_styled_text(pixels[:40], "lenet5-mnist conv2 · 3×3", 17, bold=True)
        for label, kernel, limit in cells:
            hits = find(
                pixels,
                np.kron(drawn(kernel, limit), np.ones((16, 16, 1), dtype=np.uint8)),
                tolerance=1,
            )
            assert len(hits) == 1, (tiles, label)
            x, y = hits[0]
            assert find_styled_text(pixels[y + 48 : y + 70, x - 10 : x + 58], label, 15), (
                tiles,
                label,
            )
        bars = colour_bars(pixels, "RdBu_r")
        assert bars, tiles
        x, top, bottom = bars[0]
        beside_bar = pixels[top:bottom, x + 4 :]
        assert (beside_bar.min(axis=-1) < 100).sum() > 50  # tick labels and the bar's title
        assert find_styled_text(pixels[:, x:], "+max", 13) and find_styled_text(
            pixels[:, x:], "0", 13
        )


def test_filters_global_scale_states_its_numbers_and_scale_2_doubles(tmp_path):
    """--normalize global: the bar's ends are ±the layer's largest |weight|; --scale 2: twice
    the size, text included."""
    from cnntool.io.figure_style import number

    pixels = _lenet_conv2(tmp_path, "--normalize", "global")
    ((x, _, _),) = colour_bars(pixels, "RdBu_r")[:1]
    from cnntool.core.loading.models import load_model

    limit = float(
        np.abs(
            filters(load_model("lenet5-mnist", device="cpu").module, "conv2").weights.numpy()
        ).max()
    )
    assert find_styled_text(pixels[:, x:], number(limit), 13) and find_styled_text(
        pixels[:, x:], number(-limit), 13
    )
    one, two = _lenet_conv2(tmp_path), _lenet_conv2(tmp_path, "--scale", "2")
    assert abs(two.shape[0] - 2 * one.shape[0]) <= 2 and abs(two.shape[1] - 2 * one.shape[1]) <= 4
    assert ink_height(two[12 : 12 + 48]) >= 22 and 11 <= ink_height(one[6 : 6 + 24]) <= 14
    assert colour_bars(two, "RdBu_r", min_length=120)
    assert (
        cli(
            "visualize", "filters", "lenet5-mnist", "--scale", "3", "-o", tmp_path / "x.png"
        ).exit_code
        == 2
    )


# ---------------------------------------------------------------------------------------------
# activations


def test_feature_maps_equal_the_layer_output_and_top_orders_by_mean():
    model = seeded_tiny_net()
    x = torch.randn(3, 16, 16)
    expected = torch.relu(model.conv(x[None]))[0]
    result = feature_maps(model, x, "relu")
    assert torch.allclose(result.maps, expected) and result.channels == (0, 1, 2, 3)
    top = feature_maps(model, x, "relu", top=2)
    order = torch.sort(expected.mean(dim=(1, 2)), descending=True, stable=True).indices[:2].tolist()
    assert list(top.channels) == order and torch.allclose(top.maps, expected[order])
    assert feature_maps(model, x, "conv", channels=[3, 1]).channels == (3, 1)
    assert feature_maps(model, x, "relu", at_most=2).channels == top.channels
    assert feature_maps(model, x, "relu", at_most=4).channels == (0, 1, 2, 3)
    with pytest.raises(CnnToolError, match="channel 9 does not exist"):
        feature_maps(model, x, "conv", channels=[9])
    assert hook_count(model) == 0


def test_activations_cli(tmp_path):
    """lenet5 conv1 on digit 7 (a signed layer): the input an exact 8× block upscale of the
    digit; 8 maps of 28×28, each an exact 3× block upscale on one shared blue–white–red scale
    centred on 0 whose ends are ± the 99.5th percentile of |a| over the maps (the colour bar's
    numbers; the values beyond in the end colours and an arrow past each end they pass),
    labelled with channel and mean (the records' numbers)."""
    from matplotlib import colormaps

    from cnntool.core.loading.models import load_model
    from cnntool.io.figure_style import number

    out = tmp_path / "maps.png"
    r = cli(
        "visualize",
        "activations",
        "lenet5-mnist",
        "mnist-5k",
        "--index",
        "7",
        "--layer",
        "conv1",
        "--channels",
        "0-7",
        "-o",
        out,
        "--format",
        "jsonl",
        "-q",
    )
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [record["channel"] for record in records] == list(range(8))
    pixels = png(out)
    digit = open_data("mnist-5k").arrays[7].astype(np.uint8)
    assert (
        len(find(pixels, np.kron(digit, np.ones((8, 8), np.uint8))[..., None].repeat(3, axis=2)))
        == 1
    )
    loaded = load_model("lenet5-mnist", device="cpu")
    dataset = open_data("mnist-5k")
    x, _ = dataset.load_pixels(7, loaded.preprocessing)
    maps = feature_maps(
        loaded.module, loaded.preprocessing.normalize(x), "conv1", channels=range(8)
    ).maps.numpy()
    low, high = maps.min(), maps.max()
    top = float(np.percentile(np.abs(maps), 99.5))
    assert low < 0 and top < 0.9 * max(high, -low)  # signed, and a few values are clipped
    for c, record in enumerate(records):
        shown = np.clip((maps[c] + top) / (2 * top), 0, 1)
        tile = to_uint8(colormaps["RdBu_r"](shown)[..., :3])
        hits = find(pixels, np.kron(tile, np.ones((3, 3, 1), np.uint8)), tolerance=1)
        assert len(hits) == 1, c
        x0, y0 = hits[0]
        assert find_styled_text(
            pixels[y0 + 84 : y0 + 106, x0 - 20 : x0 + 104],
            f"{record['channel']}: {record['mean']:.2g}",
            15,
        ), record
    bars = colour_bars(pixels, "RdBu_r")
    bx, bar_top, bar_bottom = bars[len(bars) // 2]  # the bar's middle column
    assert find_styled_text(pixels[:, bx:], number(top), 13) and find_styled_text(
        pixels[:, bx:], number(-top), 13
    )
    ends = to_uint8(colormaps["RdBu_r"](np.array([1.0, 0.0]))[:, :3])
    for clipped, y, end in (
        (high > top, bar_top - 6, ends[0]),
        (low < -top, bar_bottom + 5, ends[1]),
    ):
        assert (np.abs(pixels[y, bx].astype(int) - end).max() <= 2) == clipped  # the arrow
    assert (pixels[bar_top:bar_bottom, bx + 4 :].min(axis=-1) < 100).sum() > 50  # the bar's label
    title = "lenet5-mnist conv1: 8 of 32 feature maps (one colour scale, to the 99.5th percentile"
    assert find_styled_text(pixels[:40], title, 17, bold=True)
    # --percentile 100: the ends are ± the largest |a|, nothing clipped, no arrow
    whole = tmp_path / "whole.png"
    args = ["visualize", "activations", "lenet5-mnist", "mnist-5k", "--index", "7"]
    args += ["--layer", "conv1", "--channels", "0-7", "--percentile", "100", "-q"]
    assert cli(*args, "-o", whole).exit_code == 0
    whole = png(whole)
    bars = colour_bars(whole, "RdBu_r")
    bx, bar_top, bar_bottom = bars[len(bars) // 2]
    largest = float(np.abs(maps).max())
    assert find_styled_text(whole[:, bx:], number(largest), 13)
    assert (whole[bar_top - 6, bx] == 255).all() and (whole[bar_bottom + 5, bx] == 255).all()
    tile = to_uint8(colormaps["RdBu_r"]((maps[2] + largest) / (2 * largest))[..., :3])
    assert len(find(whole, np.kron(tile, np.ones((3, 3, 1), np.uint8)), tolerance=1)) == 1
    # --normalize map: each map on its own; the bar says min … max instead of numbers
    each = tmp_path / "each.png"
    assert (
        cli(
            "visualize",
            "activations",
            "lenet5-mnist",
            "mnist-5k",
            "--index",
            "7",
            "--layer",
            "conv1",
            "--channels",
            "0-7",
            "--normalize",
            "map",
            "-o",
            each,
            "-q",
        ).exit_code
        == 0
    )
    each = png(each)
    tile = to_uint8(colormaps["viridis"]((maps[1] - maps[1].min()) / np.ptp(maps[1]))[..., :3])
    assert len(find(each, np.kron(tile, np.ones((3, 3, 1), np.uint8)), tolerance=1)) == 1
    ((bx, _, _),) = colour_bars(each, "viridis")[:1]
    assert find_styled_text(each[:, bx:], "max", 13) and not find_styled_text(
        each[:, bx:], number(high), 13
    )
    with pytest.raises(CnnToolError, match="unknown layer 'nope'"):
        cli("visualize", "activations", "lenet5-mnist", "mnist-5k", "--layer", "nope", "-o", out)


def test_one_hot_pixel_no_longer_washes_the_shared_scale_out():
    """16 maps of unit noise and one pixel at 1000: on the maps' min … max every map is one
    flat colour (the old shared scale); on ± the 99.5th percentile of |a| they keep their
    contrast, the values beyond it are counted at each end (an arrow on the bar for each end
    passed) and the bar's label says how many and how far they go."""
    from cnntool.io.figure_style import number
    from cnntool.io.layer_grids import shared_range

    maps = np.random.default_rng(0).normal(size=(16, 12, 12))
    maps[3, 5, 5] = 1000.0
    shared = shared_range(maps)
    top = float(np.percentile(np.abs(maps), 99.5))
    assert shared.high == pytest.approx(top) and top < 3.5 and shared.low == -shared.high
    assert (shared.above, shared.below) == ((maps > top).sum(), (maps < -top).sum())
    assert shared.above >= 1 and shared.below >= 1 and shared.extend == "both"
    share = 100 * (shared.above + shared.below) / maps.size
    assert 0.4 < share < 0.6 and shared.largest == 1000.0
    assert shared.description == (
        f"activation, one scale ±{number(top)}; {share:.2g}% beyond it, up to ±1e+03"
    )
    old = (maps[0] - maps.min()) / (maps.max() - maps.min())
    assert old.std() < 0.002 and shared.scaled(maps[0]).std() > 0.1
    assert shared.scaled(maps)[3, 5, 5] == 1.0 and shared.scaled(maps).min() >= 0
    rectified = shared_range(np.maximum(maps, 0))  # no negative value: from 0, one arrow
    assert rectified.low == 0 and rectified.extend == "max" and not rectified.signed
    assert "one scale 0 … " in rectified.description
    none = shared_range(maps, 100.0)  # the largest |a|: nothing beyond, no arrow
    assert (none.high, none.extend, none.above + none.below) == (1000.0, "neither", 0)
    flat = shared_range(np.zeros((2, 4, 4)))  # nothing to scale: a range of 1, no arrow
    assert (flat.low, flat.high, flat.extend) == (0.0, 1.0, "neither")


# ---------------------------------------------------------------------------------------------
# top patches: brute force


def _brute_force(full: torch.Tensor, indices, top: int, per_image: int = 1):
    """Python loops over every unit, image and position: the obvious answer."""
    batch, units, height, width = full.shape
    answer = []
    for u in range(units):
        candidates = []
        for b in range(batch):
            flat = full[b, u].flatten().tolist()
            best = sorted(range(len(flat)), key=lambda p: (-flat[p], p))[:per_image]
            candidates += [(-flat[p], indices[b], p) for p in best]
        candidates.sort()
        answer.append([(-v, i, (p // width, p % width)) for v, i, p in candidates[:top]])
    return answer


def _as_list(state: TopK):
    out = []
    for u in range(state.values.shape[0]):
        out.append(
            [
                (v, i, tuple(p))
                for v, i, p in zip(
                    state.values[u].tolist(),
                    state.indices[u].tolist(),
                    state.positions[u].tolist(),
                    strict=True,
                )
                if i >= 0
            ]
        )
    return out


@pytest.mark.parametrize("signed", [False, True], ids=["relu", "signed"])
@pytest.mark.parametrize("per_image", [1, 3])
def test_topk_equals_brute_force_with_ties(per_image, signed):
    torch.manual_seed(0)
    # rounded random values: many exact ties (zeros, repeats; -0.0 and 0.0 when signed)
    full = torch.randn(23, 5, 4, 6).mul(4).round()
    full = full.mul(-1).mul(-1) if signed else torch.relu(full)
    if signed:
        full[::3] = -full[::3] * 0.0 - 1e-30  # tiny negatives below zero
        full[1::5] = -0.0
    indices = list(range(100, 123))
    state = TopK(5, 7)
    for start in range(0, 23, 4):  # uneven batches
        part = slice(start, start + 4)
        state.update(full[part], indices[part], [(10, 10)] * len(indices[part]), per_image)
    assert _as_list(state) == _brute_force(full, indices, 7, per_image)
    # shards merged in any order give the same
    shards = [TopK(5, 7) for _ in range(3)]
    for b in range(23):
        shards[b % 3].update(full[b : b + 1], indices[b : b + 1], [(10, 10)], per_image)
    merged = shards[2]
    merged.merge(shards[0])
    merged.merge(shards[1])
    assert _as_list(merged) == _as_list(state)


def test_scan_equals_brute_force_over_full_activations_of_photos():
    model = seeded_tiny_net(3)
    dataset = open_data("photos")
    prep = Preprocessing(crop=(40, 40), resize=48)
    stream = BatchStream(dataset, prep, batch_size=3, indices=range(7))
    state = scan(model, "relu", stream, units=[3, 0, 2], top=4)
    fulls, indices = [], []
    with torch.no_grad(), capture(model, ["relu"]) as cap:
        # the same batches: convolution results may differ in the last bit with the batch size
        for batch in BatchStream(dataset, prep, batch_size=3, indices=range(7)):
            model(batch.inputs)
            fulls.append(cap.activations["relu"][:, [3, 0, 2]])
            indices += batch.indices
    assert _as_list(state) == _brute_force(torch.cat(fulls), indices, 4)
    assert hook_count(model) == 0


# ---------------------------------------------------------------------------------------------
# top patches: a planted pattern found in original coordinates


class SquareDetector(nn.Module):
    """Fires most where a bright square sits: mean of 5x5, max-pool 2, a peaked 5x5 kernel."""

    def __init__(self):
        super().__init__()
        self.smooth = nn.Conv2d(3, 1, 5, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.peak = nn.Conv2d(1, 2, 5, padding=2, bias=False)
        with torch.no_grad():
            self.smooth.weight.fill_(1 / 75)
            g = torch.exp(-((torch.arange(5.0) - 2) ** 2) / 2)
            self.peak.weight[0, 0] = g[:, None] * g[None, :]
            self.peak.weight[1, 0] = -self.peak.weight[0, 0]  # a unit that hates the square

    def forward(self, x):
        return self.peak(self.pool(self.smooth(x)))


def _planted(tmp_path, name, size, square):
    """A dark noisy image of `size` (w, h) with a white square (x0, y0, x1, y1); every square
    lies inside the centre crop of both preprocessings."""
    torch.manual_seed(len(name))
    noise = (torch.rand(size[1], size[0], 3) * 40).to(torch.uint8).numpy()
    image = Image.fromarray(noise)
    image.paste((255, 255, 255), square)
    path = tmp_path / name
    image.save(path)
    return str(path)


@pytest.mark.parametrize(
    "prep",
    [
        Preprocessing(crop=(64, 64), resize=64, mean=(0, 0, 0), std=(1, 1, 1)),
        Preprocessing(crop=(64, 64), resize=80, mean=(0, 0, 0), std=(1, 1, 1)),
    ],
    ids=["identity", "resize-and-crop"],
)
def test_planted_square_is_boxed_in_original_pixels(tmp_path, prep):
    squares = {
        "a.png": ((300, 200), (150, 100, 170, 120)),
        "b.png": ((200, 320), (60, 180, 84, 204)),
        "c.png": ((64, 64), (10, 40, 18, 48)),
    }
    paths = [_planted(tmp_path, name, size, box) for name, (size, box) in squares.items()]
    model = SquareDetector().eval()
    field = receptive_fields(model, prep.input_shape)["peak"]
    dataset = open_data(str(tmp_path))
    state = scan(model, "peak", BatchStream(dataset, prep, batch_size=2), units=[0], top=len(paths))
    result = top_patches(state, layer="peak", units=[0], field=field, preprocessing=prep)
    assert len(result.hits[0]) == len(paths)
    for hit in result.hits[0]:
        size, (sx0, sy0, sx1, sy1) = squares[os.path.basename(dataset.paths[hit.index])]
        x0, y0, x1, y1 = hit.box
        scale = size[0] / prep.resized_size(*size)[0]
        # the field (5 + 1 + 4*2 = 14 input px) scaled back, centred on the square within a jump
        assert x1 - x0 == pytest.approx(14 * scale, abs=2) and y1 - y0 == pytest.approx(
            14 * scale, abs=2
        )
        centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
        assert abs(centre_x - (sx0 + sx1) / 2) <= 2 * scale + 1
        assert abs(centre_y - (sy0 + sy1) / 2) <= 2 * scale + 1


def test_original_box_maps_resize_crop_and_whole_input():
    prep = Preprocessing(crop=(224, 224), resize=256)
    # a 512x1024 (w, h) image: resized to 256x512, crop offset (16, 144); scale 2
    assert original_box(None, (0, 0), (512, 1024), prep) == (32, 288, 480, 736)
    field = receptive_fields(seeded_tiny_net(), prep.input_shape)["conv"]
    # unit (0, 0) of a 3x3 pad-1 conv sees input (-1..1): zero padding reaches past the crop
    assert original_box(field, (0, 0), (512, 1024), prep) == (30, 286, 36, 292)


# ---------------------------------------------------------------------------------------------
# top patches: the command


def _records(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_top_patches_cli_outputs_skips_bad_files_and_resumes(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    for n, path in enumerate(open_data("imagenet-samples").paths[:6]):
        Image.open(path).save(data / f"img{n}.png")
    (data / "broken.png").write_bytes(b"not a png")
    args = [
        "visualize",
        "top-patches",
        "lenet5-mnist",
        data,
        "--layer",
        "conv2",
        "--units",
        "0-3,9",
        "--top",
        "3",
        "--batch-size",
        "2",
    ]
    r = cli(*args, "-o", tmp_path / "full")
    assert r.exit_code == 0, r.output
    records = _records(r.stdout)
    assert len(records) == 5 * 3 and {"unit", "rank", "path", "box", "value"} <= set(records[0])
    assert sorted({rec["unit"] for rec in records}) == [0, 1, 2, 3, 9]
    assert "skipped 1 unreadable" in r.stderr and "6 images scanned" in r.stderr
    # unit 9's grid: its 3 patches (96 px) labelled with the records' values, best first
    # drawn in the one figure style (io.figure_style): bold 17-px titles, 15-px labels
    style, title_rows = STYLE, slice(0, STYLE.title_height)
    unit9 = png(tmp_path / "full" / "unit_0009.png")
    assert find_styled_text(unit9[title_rows], "lenet5-mnist conv2 unit 9", 17, bold=True)
    values = [rec["value"] for rec in records if rec["unit"] == 9]
    # one row of K cells (a regular layout whatever the number of hits)
    for (tile, strip), value in zip(
        grid_cells(unit9, (96, 96), 3, 3, style=style), values, strict=True
    ):
        assert spread(tile) > 1 and find_styled_text(strip, f"{value:.3g}", 15), value
    # the overview: a row of 3 patches (64 px) per unit, the first labelled u0 ... u9
    overview = png(tmp_path / "full" / "overview.png")
    assert overview.shape[0] == grid_size((64, 64), 15, 3, style=style)[1]
    assert find_styled_text(
        overview[title_rows], "lenet5-mnist conv2: top 3 per unit, 5 units", 17, bold=True
    )
    cells = grid_cells(overview, (64, 64), 15, 3, style=style)
    assert all(spread(tile) > 1 for tile, _ in cells)
    for row, unit in enumerate([0, 1, 2, 3, 9]):
        assert find_styled_text(cells[3 * row][1], f"u{unit}", 15), unit
    assert not list((tmp_path / "full").glob(".*state*"))

    # interrupted after 2 batches (a checkpoint after each), then resumed: the same result
    calls = {"n": 0}
    original = TopK.update

    def interrupted(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(TopK, "update", interrupted)
    from cnntool.cli.main import cli as group

    r = CliRunner().invoke(
        group, [str(a) for a in args + ["-o", tmp_path / "part", "--checkpoint-every", "1"]]
    )
    assert r.exit_code != 0
    assert (tmp_path / "part" / ".top-patches-state.pt").exists()
    assert not (tmp_path / "part" / "overview.png").exists()
    monkeypatch.setattr(TopK, "update", original)
    r = cli(*args, "-o", tmp_path / "part", "--resume")
    assert r.exit_code == 0, r.output
    assert "resuming after 4 images" in r.stderr and "6 images scanned" in r.stderr
    assert _records(r.stdout) == records
    r = cli(*args, "-o", tmp_path / "part", "--units", "0-2", "--resume")
    assert r.exit_code == 0  # no state left: starts afresh, with a warning
    assert "no state file" in r.stderr


def test_top_patches_cli_user_mistakes(tmp_path, cnntool):
    # through `python -m cnntool`: one sentence on stderr, exit code 1, no traceback
    base = [
        "visualize",
        "top-patches",
        "lenet5-mnist",
        "photos",
        "--layer",
        "conv2",
        "-o",
        tmp_path,
        "--units",
    ]
    for units, message in (("70", "unit 70 does not exist"), ("a-b", "not a list of indices")):
        r = cnntool(*base, units)
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------
# top patches that tell units apart (#22): positive hits only, one per image, peak crops at
# depth, a regular grid whose title states the real K


def _hand_set_state(activations, top):
    """A TopK over hand-set (B, U, H, W) activations, images 0..B-1, each 64x64."""
    state = TopK(activations.shape[1], top)
    state.update(activations, list(range(activations.shape[0])), [(64, 64)] * activations.shape[0])
    return state


def test_only_positive_hits_are_listed_and_a_dead_unit_is_dead():
    prep = Preprocessing(crop=(8, 8), resize=8, mean=(0, 0, 0), std=(1, 1, 1))
    maps = torch.zeros(9, 3, 2, 2)  # unit 0 fires on 3 images, unit 1 never (dead), unit 2 on all
    maps[[1, 4, 7], 0, 0, 1] = torch.tensor([1.0, 3.0, 2.0])
    maps[:, 1] = -1.0
    maps[:, 2, 1, 1] = torch.arange(1.0, 10.0)
    result = top_patches(
        _hand_set_state(maps, 9), layer="x", units=[0, 1, 2], field=None, preprocessing=prep
    )
    assert [hit.index for hit in result.hits[0]] == [4, 7, 1]  # not 6 zero-valued images after them
    assert result.hits[1] == () and result.dead == (1,)
    assert len(result.hits[2]) == 9
    from cnntool.io.patches import counter

    assert [counter(len(h), 9) for h in result.hits] == ["3 of 9", "dead", ""]


def test_one_hit_per_image_by_default_even_where_one_image_has_the_top_positions():
    prep = Preprocessing(crop=(8, 8), resize=8, mean=(0, 0, 0), std=(1, 1, 1))
    maps = torch.zeros(4, 1, 3, 3)
    maps[0, 0] = torch.tensor(
        [[9.0, 8, 7], [0, 0, 0], [0, 0, 0]]
    )  # image 0 holds the top 3 positions
    maps[1:, 0, 2, 2] = torch.tensor([3.0, 2.0, 1.0])
    result = top_patches(
        _hand_set_state(maps, 3), layer="x", units=[0], field=None, preprocessing=prep
    )
    assert [(hit.index, hit.value) for hit in result.hits[0]] == [(0, 9.0), (1, 3.0), (2, 2.0)]


def test_overview_title_states_k_and_counts_and_tiles_have_gaps(tmp_path, monkeypatch):
    import cnntool.io.patches as patches
    from cnntool.tasks.top_patches import Hit, TopPatches

    titles = []
    real_grid = patches.grid
    monkeypatch.setattr(
        patches, "grid", lambda *a, **k: titles.append(k["title"]) or real_grid(*a, **k)
    )
    hits = tuple(Hit(0, r, r, 9.0 - r, (0, 0), (0, 0, 16, 16)) for r in range(9))
    result = TopPatches(layer="conv", units=(0, 1), top=9, hits=(hits, ()))
    colours = [(200, 30, 30), (30, 200, 30)]
    patches.write_top_patches(
        tmp_path,
        result,
        lambda i: Image.new("RGB", (16, 16), colours[i % 2]),
        title="m conv",
        tile_size=32,
    )
    assert titles == ["m conv: top 9 per unit, 2 units, 1 dead"]
    overview = np.asarray(Image.open(tmp_path / "overview.png").convert("RGB"))
    gap, top = patches.STYLE.gap, patches.STYLE.title_height + patches.STYLE.gap
    assert overview.shape[1] >= 9 * (32 + gap)  # nine cells in a row, not eight
    # between the first and second tile (cells 32 px) a background column as wide as the gap
    rows = slice(top + 2, top + 30)
    assert (overview[rows, gap + 32 : gap + 32 + gap] == 255).all()
    assert (overview[rows, gap + 16] == colours[0]).all()  # the tile itself
    assert tuple(overview[top + 16, gap]) == patches.BORDER  # bordered


def test_deep_units_show_distinct_images_cropped_round_their_peak():
    """lite0 `_blocks.15` (field 851 px on a 224-px input): the patches of 16 units are 16
    different image sets and, wherever the unit's map is not constant, smaller than the image."""
    from cnntool.core.loading.models import load_model
    from cnntool.tasks.top_patches import hit_maps

    loaded = load_model("efficientnet_lite0", device="cpu")
    prep, module, units = loaded.preprocessing, loaded.module.eval(), list(range(16))
    field = receptive_fields(module, prep.input_shape)["_blocks.15"]
    dataset = open_data("imagenet-samples")
    state = scan(
        module, "_blocks.15", BatchStream(dataset, prep, batch_size=10), units=units, top=9
    )
    result = top_patches(state, layer="_blocks.15", units=units, field=field, preprocessing=prep)
    sets = [frozenset(hit.index for hit in hits) for hits in result.hits]
    assert len(set(sets)) == len(units)
    maps = hit_maps(module, "_blocks.15", units, (h.index for h in result.records()), dataset, prep)
    checked = 0
    for row, hits in enumerate(result.hits):
        for hit in hits:
            (x0, y0, x1, y1), (w, h) = hit.box, dataset.load(hit.index).size
            view = original_box(None, (0, 0), (w, h), prep)  # what the model sees of the image
            activation = maps[hit.index][1][row]
            if activation.max() > activation.min():
                checked += 1
                assert (x1 - x0) * (y1 - y0) <= 0.3 * (view[2] - view[0]) * (view[3] - view[1])
                assert view[0] <= x0 and x1 <= view[2] and view[1] <= y0 and y1 <= view[3]
    assert checked == sum(map(len, result.hits)) > 100
