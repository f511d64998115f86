"""diagnose: streaming statistics vs stored activations, planted pathologies found in the right
layer, no unverified alarms on the trained built-ins, the CLI, and torchrun = one process."""

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from cnntool.cli.followups import Commands
from cnntool.core.data import BatchStream, open_data
from cnntool.core.hooks import capture, hook_count
from cnntool.core.loading.models import load_model
from cnntool.tasks.diagnose import (
    RunningStats,
    default_points,
    diagnose,
    merge_states,
    named_points,
    scan,
)
from cnntool.tasks.diagnose.filters import filter_report, high_frequency_mask
from cnntool.tasks.diagnose.findings import HIGH_R, gradient_finding
from cnntool.tasks.diagnose.stats import Bounds
from tests.helpers import same_records
from tests.pixels import axes_frame, colour_bars, colour_mask, find_plot_text, png, runs
from tests.tiny_models import seeded_tiny_net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROKEN = os.path.join(ROOT, "examples", "broken_lenet.py")
MNIST_IMAGES = 500


# ---------------------------------------------------------------------------------------------
# streaming statistics against a reference computed from stored activations


def _activations(seed=0, shape=(37, 6, 5, 4)):
    """ReLU6-like maps with a dead unit (0), a constant unit (2.5) and a copy (unit 4 = 2·unit
    3)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3 + 1).clamp(0, 6)
    x[:, 1] = 0.0
    x[:, 2] = 2.5
    x[:, 4] = x[:, 3] * 2
    return x


def _reference(x: torch.Tensor, bounds: Bounds):
    samples = x.movedim(1, -1).reshape(-1, x.shape[1]).double().numpy()
    mean, var = samples.mean(0), samples.var(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(samples, rowvar=False)
        second = (samples**2).mean(0)
        lifetime = (1 - mean**2 / second) / (1 - 1 / len(samples))
        units = samples.shape[1]
        per_sample = (1 - (samples.mean(1) ** 2) / (samples**2).mean(1)) / (1 - 1 / units)
    heard = (samples > 0).any(1)
    return dict(
        mean=mean,
        var=var,
        corr=corr,
        active=(samples > 0).sum(0),
        lifetime=lifetime,
        minimum=samples.min(0),
        maximum=samples.max(0),
        at_bound=(samples >= bounds.upper - bounds.margin).sum(0),
        population=per_sample[heard].mean(),
        silent=int((~heard).sum()),
    )


def _check(stats: RunningStats, ref: dict):
    np.testing.assert_allclose(stats.mean.numpy(), ref["mean"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats.variance().numpy(), ref["var"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats.correlation_matrix().numpy(), ref["corr"], atol=1e-6)
    np.testing.assert_array_equal(stats.active.numpy(), ref["active"])
    np.testing.assert_array_equal(stats.at_bound.numpy(), ref["at_bound"])
    np.testing.assert_array_equal(stats.minimum.numpy(), ref["minimum"])
    np.testing.assert_array_equal(stats.maximum.numpy(), ref["maximum"])
    np.testing.assert_allclose(stats.lifetime_sparsity().numpy(), ref["lifetime"], atol=1e-9)
    # per-sample sums over the units run in float32 (short sums); their mean in float64
    assert stats.population_sparsity() == pytest.approx(ref["population"], abs=1e-6)
    assert stats.silent_samples == ref["silent"]


@pytest.mark.parametrize("shape", [(37, 6, 5, 4), (41, 6)])
def test_streaming_stats_equal_stored_reference_in_unequal_batches_and_shards(shape):
    bounds = Bounds(0.0, 6.0, two_sided=False)
    x = _activations(shape=shape)
    ref = _reference(x, bounds)
    whole = RunningStats(shape[1], bounds=bounds)
    for part in torch.split(x, [5, 1, 17, shape[0] - 23]):
        whole.update(part)
    _check(whole, ref)
    assert whole.images == shape[0]
    # two strided shards (as under torchrun), each fed in its own batches, merged via state dicts
    shards = []
    for rank in range(2):
        stats = RunningStats(shape[1], bounds=bounds)
        for part in torch.split(x[rank::2], 7):
            stats.update(part)
        shards.append({"layer": stats.state_dict()})
    _check(merge_states(shards)["layer"], ref)
    # the dead and the constant unit have no r; the copy has r = 1 with its original
    r = whole.correlation_matrix()
    assert torch.isnan(r[1]).all() and torch.isnan(r[:, 2]).all()
    assert r[3, 4] == pytest.approx(1.0, abs=1e-12)


def test_wide_layers_keep_variances_without_correlation():
    x = _activations()
    stats = RunningStats(6, correlation=False)
    for part in torch.split(x, [20, 17]):
        stats.update(part)
    ref = _reference(x, Bounds(0, 6, False))
    np.testing.assert_allclose(stats.variance().numpy(), ref["var"], rtol=1e-9, atol=1e-9)
    assert stats.correlation_matrix() is None


# ---------------------------------------------------------------------------------------------
# where to measure


def test_default_points_follow_each_layer_to_its_activation():
    lenet = load_model("lenet5-mnist", device="cpu").module
    assert [(p.layer, p.module, p.activation.kind) for p in default_points(lenet)] == [
        ("conv1", "relu1", "relu"),
        ("conv2", "relu2", "relu"),
        ("linear1", "relu3", "relu"),
    ]
    import torchvision

    resnet = torchvision.models.resnet18()
    points = {p.layer: p for p in default_points(resnet)}
    assert "fc" not in points  # the logits are not hidden units
    assert points["conv1"].module == "relu"
    assert points["layer1.0.conv1"].module == "layer1.0.relu"  # its first call: after bn1
    # the shared relu is claimed; conv2's ReLU comes after the residual add: pre-activation
    assert points["layer1.0.conv2"].module == "layer1.0.bn2"
    assert points["layer1.0.conv2"].activation.kind == "linear"


def test_in_place_activation_does_not_overwrite_a_measured_pre_activation():
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(inplace=True)).eval()
    points = named_points(net, ["0"])
    assert points[0].activation.kind == "pre-relu" and points[0].activation.rectified
    x = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    stats = scan(net, points, [x[:3], x[3:]])["0"]
    with torch.no_grad():
        reference = net[0](x)
    assert stats.minimum.min() < 0  # the values before the in-place ReLU
    np.testing.assert_allclose(
        stats.mean.numpy(), reference.double().mean(dim=(0, 2, 3)).numpy(), rtol=1e-5, atol=1e-7
    )
    assert hook_count(net) == 0


def test_scan_removes_its_hooks_when_the_model_raises():
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu = nn.Conv2d(3, 2, 1), nn.ReLU()

        def forward(self, x):
            self.relu(self.conv(x))
            raise RuntimeError("boom")

    model = Exploding().train()
    with pytest.raises(RuntimeError, match="boom"):
        scan(model, default_points(model), [torch.zeros(1, 3, 4, 4)])
    assert hook_count(model) == 0 and model.training


def test_saturated_and_constant_units_are_found():
    conv = nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        conv.weight.normal_(0, 0.1)
        conv.bias.zero_()
        conv.weight[0].zero_()
        conv.bias[0] = 1.0  # ignores the input: always 1 after the ReLU6
        conv.bias[1] = 100.0  # always past 6: stuck at the ReLU6 bound
    model = nn.Sequential(conv, nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    points = default_points(model)
    assert [(p.layer, p.module, p.activation.kind) for p in points] == [("0", "1", "relu6")]
    x = torch.randn(20, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    diagnosis = diagnose(model, points, scan(model, points, [x[:7], x[7:]]), Commands("m", "d"))
    layer = diagnosis.layers[0]
    # both ignore the input; unit 1 is also at the bound
    assert layer.saturated == (1,) and layer.constant == (0, 1) and layer.at_bound[1] == 1.0
    kinds = {f.kind for f in diagnosis.findings}
    assert {"saturated", "constant"} <= kinds
    message = next(f.message for f in diagnosis.findings if f.kind == "saturated")
    assert "25% of units stuck at the relu6 bound" in message and "threshold 10%" in message


# ---------------------------------------------------------------------------------------------
# filters


def test_noise_score_and_redundancy_definitions():
    # 3×3: the four diagonal bins are above 0.4 cycles/pixel, so white noise scores 4/9
    assert int(high_frequency_mask((3, 3)).sum()) == 4
    conv = nn.Conv2d(2, 4, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0] = 1.0  # flat: all energy at DC
        grid = torch.arange(3.0)
        # a diagonal wave at (1/3, 1/3) cycles/pixel: all energy above the cut
        conv.weight[1] = torch.cos(2 * torch.pi * (grid[:, None] + grid[None, :]) / 3)
        conv.weight[2] = conv.weight[0] * 3  # the same direction as filter 0
        conv.weight[3] = -conv.weight[1]
    report = filter_report(nn.Sequential(conv), "0")
    assert report.white_noise_score == pytest.approx(4 / 9)
    assert report.noise[0] == pytest.approx(0.0, abs=1e-12)
    assert report.noise[1] == pytest.approx(1.0)
    assert report.redundancy[0] == pytest.approx(1.0) and report.most_similar[0] == 2
    assert report.redundancy[3] < 0.5  # a negated copy is not a duplicate
    one_by_one = filter_report(nn.Sequential(nn.Conv2d(3, 4, 1)), "0")
    assert one_by_one.noise is None and one_by_one.white_noise_score is None
    depthwise = filter_report(nn.Sequential(nn.Conv2d(4, 4, 3, groups=4)), "0")
    assert depthwise.redundancy is None


# ---------------------------------------------------------------------------------------------
# planted pathologies in the trained LeNet-5, and the clean one


@pytest.fixture(scope="module")
def mnist():
    return open_data("mnist-5k")


@pytest.fixture(scope="module")
def clean_lenet(mnist):
    return _diagnose("lenet5-mnist", mnist)


def _diagnose(spec, dataset, images=MNIST_IMAGES):
    loaded = load_model(spec, device="cpu", trust_code=True)
    points = default_points(loaded.module)
    stream = BatchStream(dataset, loaded.preprocessing, batch_size=125, indices=range(images))
    states = scan(loaded.module, points, stream)
    return loaded, diagnose(loaded.module, points, states, Commands(spec, "mnist-5k"))


def _kinds(diagnosis):
    return {(f.kind, f.layer) for f in diagnosis.findings}


def _example_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("broken_lenet_example", BROKEN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "factory, expected, layer",
    [
        ("dead_conv2", {"dead"}, "conv2"),
        ("duplicated_conv1", {"duplicate-units", "duplicate-filters"}, "conv1"),
        ("noisy_conv2", {"noisy-filters"}, "conv2"),
    ],
)
def test_planted_pathologies_are_found_in_the_right_layer(
    mnist, clean_lenet, factory, expected, layer
):
    _, broken = _diagnose(f"{BROKEN}:{factory}", mnist)
    new = _kinds(broken) - _kinds(clean_lenet[1])  # what the planted fault added
    assert {(kind, layer) for kind in expected} <= new, new
    assert {other for _, other in new} == {layer}, new
    measured = {x.point.layer: x for x in broken.layers}
    if factory == "dead_conv2":
        assert measured["conv2"].dead == _example_module().DEAD_UNITS
        assert any(
            f.severity == "error"
            and "50% of units dead (32 of 64" in f.message
            and "over 500 images" in f.message
            for f in broken.findings
        )
    if factory == "duplicated_conv1":
        assert measured["conv1"].high_r_pairs == 16
        assert measured["conv1"].top_pairs[0][2] == pytest.approx(1.0)
        assert measured["conv1"].filters.redundancy == pytest.approx([1.0] * 32)


def _stored(model, dataset, layers, indices, preprocessing):
    """Every activation of `layers` over the images, stored (the brute-force reference)."""
    stored = {name: [] for name in layers}
    with capture(model, layers) as cap:
        for batch in BatchStream(dataset, preprocessing, batch_size=50, indices=indices):
            cap.run(batch.inputs)
            for name in layers:
                stored[name].append(cap.activations[name])
    return {name: torch.cat(parts) for name, parts in stored.items()}


def _verify_alarms(loaded, dataset, diagnosis, indices):
    """Every dead-unit and duplicate-unit finding is true on the stored activations."""
    alarmed = [
        x
        for x in diagnosis.layers
        if (x.dead and any(f.kind == "dead" and f.layer == x.name for f in diagnosis.findings))
        or x.high_r_pairs
    ]
    stored = _stored(
        loaded.module, dataset, [x.point.module for x in alarmed], indices, loaded.preprocessing
    )
    for layer in alarmed:
        values = stored[layer.point.module].movedim(1, -1).reshape(-1, layer.units).double()
        if layer.dead:
            never = (values <= 0).all(dim=0)
            assert never.nonzero().flatten().tolist() == list(layer.dead), layer.label
        if layer.high_r_pairs:
            with np.errstate(invalid="ignore", divide="ignore"):  # constant units: r is NaN
                r = torch.from_numpy(np.corrcoef(values.numpy(), rowvar=False))
            upper = torch.triu(torch.ones_like(r, dtype=torch.bool), diagonal=1)
            assert int((r.nan_to_num(-2)[upper] >= HIGH_R - 1e-9).sum()) >= layer.high_r_pairs
            for i, j, value in layer.top_pairs:
                assert float(r[i, j]) == pytest.approx(value, abs=1e-6)
    return alarmed


def test_clean_lenet5_alarms_only_what_is_true(mnist, clean_lenet):
    loaded, clean = clean_lenet
    kinds = _kinds(clean)
    assert not {k for k, _ in kinds} & {"noisy-filters", "duplicate-filters", "duplicate-units"}
    assert ("dead", "conv2") not in kinds and ("dead", "conv1") not in kinds
    _verify_alarms(loaded, mnist, clean, range(MNIST_IMAGES))


@pytest.mark.slow
def test_lite0_alarms_only_what_is_true():
    dataset, images = open_data("imagenet-samples"), range(4)  # 4 of 20: a 2-core test budget
    loaded = load_model("efficientnet_lite0", device="cpu")
    points = default_points(loaded.module)
    stream = BatchStream(dataset, loaded.preprocessing, batch_size=3, indices=images)
    diagnosis = diagnose(
        loaded.module,
        points,
        scan(loaded.module, points, stream),
        Commands("efficientnet_lite0", "imagenet-samples"),
    )
    assert len(diagnosis.layers) == 49 and diagnosis.images == len(images)
    assert _verify_alarms(loaded, dataset, diagnosis, images)  # there are some
    # vanished filters are real: their weights are (almost) zero
    for finding in (f for f in diagnosis.findings if f.kind == "vanishing-filters"):
        report = next(
            x.filters for x in diagnosis.layers if x.filters and x.filters.layer == finding.layer
        )
        assert min(report.norms) < 0.01 * sorted(report.norms)[len(report.norms) // 2]


# ---------------------------------------------------------------------------------------------
# gradients folded in


def test_gradcheck_verdict_becomes_a_finding():
    from cnntool.tasks.gradcheck import gradcheck

    commands = Commands("tiny", "data")
    good = gradient_finding(gradcheck(seeded_tiny_net(), (3, 6, 6)), commands)
    assert good.severity == "info" and "agree" in good.message
    buggy = load_model(f"{ROOT}/examples/buggy_layer.py:buggy_net", device="cpu", trust_code=True)
    bad = gradient_finding(
        gradcheck(buggy.module, buggy.input_shape, params=False, directions=1, coordinates=0),
        commands,
    )
    assert bad.severity == "error" and "wrong gradients" in bad.message
    assert bad.command == "cnntool gradcheck tiny --per-layer"


# ---------------------------------------------------------------------------------------------
# the command


def test_cli_writes_jsonl_figures_and_the_report(tmp_path, cnntool):
    done = cnntool(
        "diagnose",
        f"{BROKEN}:broken_lenet5",
        "mnist-5k",
        "--trust-code",
        "--limit",
        "200",
        "-o",
        str(tmp_path),
        threads=1,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["layer"] for r in records] == ["conv1", "conv2", "linear1", None]
    assert records[1]["dead_units"] == list(range(0, 64, 2)) and records[1]["images"] == 200
    assert any(f["kind"] == "duplicate-filters" for f in records[0]["findings"])
    assert records[-1]["counts"]["error"] >= 1
    layers = records[:-1]
    assert_unit_bars_show(png(tmp_path / "units.png"), layers)
    worst = max(layers, key=lambda r: r["mean_abs_r"])
    heat = png(tmp_path / "correlation.png")
    assert find_plot_text(
        heat,
        f"broken_lenet5 {worst['layer']} (at {worst['measured_at']}): r between "
        f"units, mean |r| {worst['mean_abs_r']:.2f}",
        fontsize=10,
    )
    r = read_heat_map(heat, worst["units"])
    off_diagonal = ~np.eye(worst["units"], dtype=bool)
    assert (np.diag(r) > 0.9).all() and np.abs(r - r.T).max() < 0.1
    assert np.abs(r[off_diagonal]).mean() == pytest.approx(worst["mean_abs_r"], abs=0.05)
    assert_correlation_axes(heat)
    assert "50% of units dead" in done.stderr and "advice:" in done.stderr
    assert "--trust-code" in done.stderr  # follow-up commands repeat the loading flags


def assert_correlation_axes(heat: np.ndarray) -> None:
    """A heat map of r: a colour bar of the diverging RdBu_r from +1 (top) to −1 with its
    ticks, white at 0 halfway down, and both axes titled."""
    from matplotlib import colormaps

    bars = colour_bars(heat, "RdBu_r", min_length=200)
    assert bars, "no RdBu_r colour bar"
    x, top, bottom = bars[len(bars) // 2]
    white = np.rint(np.array(colormaps["RdBu_r"](0.5)[:3]) * 255)
    assert np.abs(heat[(top + bottom) // 2, x] - white).max() <= 12  # 0 in the middle
    for tick in ("1.0", "0.5", "0.0", "−0.5", "−1.0"):
        assert find_plot_text(heat[:, x:], tick), tick
    assert find_plot_text(heat, "unit (channel index)")


def test_correlation_heat_map_hatches_units_without_r(tmp_path):
    """A constant unit has no r (NaN): its row and column are hatched grey, not a colour of the
    map (before, coolwarm's grey 0 and the grey of NaN looked the same), and the legend says
    what the hatching means; r = 0.0 is the map's white."""
    from cnntool.io.unit_charts import save_correlation_heatmap

    r = np.zeros((6, 6))
    np.fill_diagonal(r, 1.0)
    r[2, :] = r[:, 2] = np.nan
    save_correlation_heatmap(tmp_path / "r.png", r, title="planted: unit 2 is constant")
    heat = png(tmp_path / "r.png")
    assert find_plot_text(heat, "no r (a constant unit)", fontsize=9)
    assert_correlation_axes(heat)
    bar_x = colour_bars(heat, "RdBu_r", min_length=200)[0][0]
    left, top, right, bottom = axes_frame(heat[:, : bar_x - 2])  # the map's, not the bar's
    cell = (right - left) / 6

    def middle(row, col, half=int(cell // 3)):
        y, x = int(top + (row + 0.5) * cell), int(left + (col + 0.5) * cell)
        return heat[y - half : y + half, x - half : x + half].astype(int)

    for row, col in ((2, 0), (0, 2), (2, 2), (5, 2)):  # hatched: white with grey strokes
        cell_pixels = middle(row, col)
        grey = (cell_pixels.max(-1) < 200) & (cell_pixels.max(-1) - cell_pixels.min(-1) < 10)
        assert 0.1 < grey.mean() < 0.6, (row, col)
    zero = middle(0, 1)
    assert (zero.max(-1) - zero.min(-1) < 12).all() and (zero.min(-1) > 235).all()  # white
    assert (np.abs(middle(0, 0) - (103, 0, 31)) <= 2).all()  # +1: RdBu_r's dark red


def assert_unit_bars_show(pixels: np.ndarray, layers: list[dict]) -> None:
    """units.png: a row of bars per layer, as long as the records' shares of dead units
    (matplotlib's first colour) and of samples ≤ 0 (its fourth), on an axis from 0 to 100%."""
    assert pixels.shape == (238, 900, 3)  # 9 × (1.6 + 0.26 per layer) inches at 100 dpi
    assert find_plot_text(pixels, "broken_lenet5: unit health over 200 images")
    left, top, right, bottom = axes_frame(pixels)
    plot = pixels[top:bottom]
    for colour, shares in (
        ((31, 119, 180), [layer["dead"] for layer in layers]),
        ((214, 39, 40), [1 - layer["mean_active"] for layer in layers]),
    ):
        mask = colour_mask(plot, colour, 10)
        lengths = [
            mask[(start + stop) // 2].sum() / (right - left)
            for start, stop in runs(mask.any(axis=1))
        ]
        assert lengths == pytest.approx([share for share in shares if share], abs=0.01), colour


def read_heat_map(pixels: np.ndarray, units: int) -> np.ndarray:
    """correlation.png read back: each cell's colour looked up on the colour bar beside the map
    (top +1, bottom -1)."""
    coloured = pixels.max(axis=-1).astype(int) - pixels.min(axis=-1) > 40
    (x0, x1), (b0, b1) = runs(coloured.any(axis=0))  # the map, then the colour bar
    rows = runs(coloured[:, x0:x1].any(axis=1))
    y0, y1 = rows[0][0], rows[-1][1]
    bar_rows = runs(coloured[:, b0:b1].any(axis=1))
    bar = pixels[bar_rows[0][0] : bar_rows[-1][1], (b0 + b1) // 2].astype(int)
    centres = (np.arange(units) + 0.5) / units
    cells = pixels[(y0 + centres * (y1 - y0)).astype(int)][
        :, (x0 + centres * (x1 - x0)).astype(int)
    ]
    nearest = (
        ((cells[:, :, None, :].astype(int) - bar[None, None]) ** 2).sum(axis=-1).argmin(axis=-1)
    )
    return np.linspace(1, -1, len(bar))[nearest]


def test_cli_missing_data_is_one_sentence_exit_1(tmp_path, cnntool):
    done = cnntool("diagnose", "lenet5-mnist", str(tmp_path / "nowhere"), "-q", threads=1, cwd=ROOT)
    assert done.returncode == 1 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error:") and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.torchrun
def test_torchrun_two_cpu_ranks_equal_one_process(cnntool):
    args = ["diagnose", "lenet5-mnist", "mnist-5k", "--limit", "61", "--batch-size", "8", "-q"]
    single = cnntool(*args, threads=1, cwd=ROOT)
    assert single.returncode == 0, single.stderr
    double = cnntool.torchrun(*args, cwd=ROOT)
    assert double.returncode == 0, double.stderr
    one = [json.loads(line) for line in single.stdout.splitlines()]
    two = [json.loads(line) for line in double.stdout.splitlines()]  # rank 0 alone writes
    assert len(one) == 4 and len(two) == 4
    for a, b in zip(one, two, strict=True):
        assert same_records(a, b, rel=1e-5, abs=1e-9)  # float64 merges in another order


def test_correlation_over_fewer_samples_than_units_is_not_judged():
    """Over 2 samples every r between two non-constant units is ±1: without the guard, 16
    independent random units would be "duplicates" and "correlated". Over 300 samples the same
    units are judged, and they are not correlated."""
    generator = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 16), nn.Tanh()).eval()
    with torch.no_grad():
        net[0].weight.copy_(
            torch.randn(16, 32, generator=generator) / 32**0.5 / 2
        )  # tanh unsaturated
        net[0].bias.zero_()
    points = named_points(net, ["1"])
    commands = Commands("net.py:net", "data")
    few = scan(net, points, [torch.randn(2, 32, generator=generator)])
    layer_few = diagnose(net, points, few, commands)
    assert layer_few.layers[0].mean_abs_r == pytest.approx(1.0, abs=1e-9)
    assert [(f.severity, f.kind) for f in layer_few.findings] == [("info", "too-few-samples")]
    assert (
        "2 sample(s)" in layer_few.findings[0].message
        and "at least 30" in layer_few.findings[0].message
    )
    many = scan(net, points, [torch.randn(300, 32, generator=generator)])
    layer_many = diagnose(net, points, many, commands)
    assert layer_many.layers[0].mean_abs_r < 0.3
    assert not {f.kind for f in layer_many.findings} & {
        "too-few-samples",
        "correlated",
        "duplicate-units",
    }
