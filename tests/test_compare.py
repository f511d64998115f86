"""`compare`: minibatch CKA (Kornblith et al. 2019; Nguyen et al. 2021) with the unbiased HSIC of
Song et al. 2012.

- the estimator equals its definition (a U-statistic over distinct quadruples) and the
  U-centred Gram matrices of Székely & Rizzo;
- hand-checkable cases: CKA(X, X) = 1, invariance to rotations and isotropic scaling,
  independent features near 0, the RBF bandwidth;
- on LeNet-5 (clean vs adversarially trained): one minibatch equals the direct full-batch
  computation, torch-cka's minibatch CKA on the same minibatches, and at 5,000 digits the
  minibatch value is within 0.01 of the full-batch one;
- the CLI (records, table, heat map pixels, errors) and 2 torchrun ranks equal to one process.
"""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import cnntool
from cnntool.core.data import BatchStream, open_data
from cnntool.core.loading.models import load_model
from cnntool.core.sharding import Shard
from cnntool.tasks.compare import (
    CompareSettings,
    HsicSums,
    LayerRows,
    Minibatches,
    layer_rows,
    minibatch_hsic,
)
from cnntool.tasks.compare.cka import GramStack, gram_matrices, hsic_pairs, rbf_gram
from cnntool.tasks.compare.minibatches import paired
from tests.helpers import ROOT, same_records

LENET_LAYERS = ["relu1", "relu2", "relu3", "linear2"]


def cka(x: torch.Tensor, y: torch.Tensor, kernel: str = "linear", sigma: float = 1.0) -> float:
    """CKA of two representations of the same images from one minibatch (ours)."""
    part = minibatch_hsic(0, [x], [y], (kernel,), sigma)
    return float(HsicSums.of([part], (kernel,)).cka(kernel)[0, 0])


# --- the estimator ----------------------------------------------------------------------------


def test_hsic1_equals_its_u_statistic_over_distinct_quadruples():
    """Song et al. 2012, Theorem 2: HSIC₁ is the U-statistic of
    h = k_tu l_tu + k_tu l_vw − 2 k_tu l_tv over ordered quadruples of distinct images."""
    generator = torch.Generator().manual_seed(0)
    n = 7
    k = torch.rand(n, n, generator=generator, dtype=torch.float64)
    k = k + k.T
    m = torch.rand(n, n, generator=generator, dtype=torch.float64)
    m = m + m.T  # L
    total, count = 0.0, 0
    for t, u, v, w in itertools.permutations(range(n), 4):
        total += float(k[t, u] * m[t, u] + k[t, u] * m[v, w] - 2 * k[t, u] * m[t, v])
        count += 1
    ours = hsic_pairs(GramStack.of([k]), GramStack.of([m]))[0, 0]
    assert float(ours) == pytest.approx(total / count, rel=1e-12)


def u_centred(gram: np.ndarray) -> np.ndarray:
    """Székely & Rizzo's U-centring of a Gram matrix (its diagonal ignored)."""
    n = gram.shape[0]
    a = gram.copy()
    np.fill_diagonal(a, 0)
    rows = a.sum(axis=1)
    out = a - rows[:, None] / (n - 2) - rows[None, :] / (n - 2) + a.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(out, 0)
    return out


def u_gram(z: np.ndarray, kernel: str = "linear", sigma: float = 1.0) -> np.ndarray:
    """The U-centred Gram matrix of one representation, float64, written without our code."""
    z = np.asarray(z, dtype=np.float64)
    gram = z @ z.T
    if kernel == "rbf":
        norms = np.diag(gram)
        squared = np.clip(norms[:, None] + norms[None, :] - 2 * gram, 0, None)
        np.fill_diagonal(squared, 0)
        upper = np.sqrt(squared[np.triu_indices(len(z), 1)])
        median = np.sort(upper)[(len(upper) - 1) // 2]  # the lower median
        gram = np.exp(-squared / (2 * (sigma * median) ** 2))
    return u_centred(gram)


def aligned(k: np.ndarray, m: np.ndarray) -> float:
    """CKA of two U-centred Gram matrices: their normalized inner product."""
    return float((k * m).sum() / np.sqrt((k * k).sum() * (m * m).sum()))


def direct_cka(x, y, kernel: str = "linear", sigma: float = 1.0) -> float:
    """Full-batch CKA of two representations from their U-centred Gram matrices."""
    return aligned(u_gram(x, kernel, sigma), u_gram(y, kernel, sigma))


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_one_minibatch_equals_u_centred_gram_matrices(kernel):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(60, 9, generator=generator) + 3.0  # offsets, as after a ReLU
    y = torch.tanh(x @ torch.randn(9, 5, generator=generator)) + 0.1 * torch.randn(
        60, 5, generator=generator
    )
    assert cka(x, y, kernel) == pytest.approx(direct_cka(x.numpy(), y.numpy(), kernel), abs=1e-6)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cka_of_a_representation_with_itself_is_one(kernel):
    x = torch.randn(50, 12, generator=torch.Generator().manual_seed(2))
    assert cka(x, x, kernel) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cka_ignores_rotations_isotropic_scaling_and_shifts(kernel):
    """Kornblith et al. 2019, §3: CKA is invariant to orthogonal transforms and isotropic
    scaling (the RBF kernel too: its σ follows the median distance)."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(80, 10, generator=generator, dtype=torch.float64)
    y = torch.relu(x @ torch.randn(10, 6, generator=generator, dtype=torch.float64))
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=generator, dtype=torch.float64))
    moved = 7.5 * x @ q + 2.0
    assert cka(x, moved, kernel) == pytest.approx(1.0, abs=1e-6)
    assert cka(moved, y, kernel) == pytest.approx(cka(x, y, kernel), abs=1e-6)
    assert cka(x, 0.01 * y, kernel) == pytest.approx(cka(x, y, kernel), abs=1e-6)
    assert cka(x, y, kernel) < 0.95  # a real comparison, not a constant


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_cka_of_independent_features_is_near_zero(kernel):
    """The unbiased estimator centres on 0 for independent features; the biased full-batch one
    (Kornblith et al.) does not: 0.17 for these 500 images of 100 random values."""
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(500, 100, generator=generator)
    y = torch.randn(500, 100, generator=generator)
    assert abs(cka(x, y, kernel)) < 0.02
    assert biased_linear_cka(x.double().numpy(), y.double().numpy()) > 0.15
    assert cka(x, torch.cat([x[:, :50], y[:, :50]], dim=1), kernel) > 0.3  # half shared


def test_rbf_bandwidth_is_the_median_distance_of_the_minibatch():
    """Points at 0, 1 and 3 on a line: distances 1, 3, 2, median 2; σ = 0.5 × 2 = 1."""
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    gram = rbf_gram(x @ x.T, rbf_sigma=0.5)
    expected = np.exp(-np.array([[0, 1, 9], [1, 0, 4], [9, 4, 0]]) / 2.0)
    np.testing.assert_allclose(gram.numpy(), expected, rtol=1e-12)


def test_rbf_of_a_layer_that_does_not_vary_is_undefined_not_an_error():
    x = torch.randn(20, 4, generator=torch.Generator().manual_seed(5))
    constant = torch.ones(20, 3)
    assert np.isnan(cka(x, constant, "rbf")) and np.isnan(cka(x, constant, "linear"))


def test_gram_matrices_in_float32_keep_the_float64_value():
    """Post-ReLU features with a large mean: centring before the float32 product keeps the
    value of a float64 computation."""
    generator = torch.Generator().manual_seed(6)
    x = torch.relu(torch.randn(200, 3000, generator=generator)) * 40 + 100
    y = x[:, :1000] ** 0.5
    ours = cka(x, y)
    assert ours == pytest.approx(direct_cka(x.double().numpy(), y.double().numpy()), abs=1e-6)
    assert gram_matrices(x)["linear"].dtype == torch.float64


def test_sums_are_the_same_in_any_order_of_arrival():
    generator = torch.Generator().manual_seed(7)
    parts = [
        minibatch_hsic(k, [torch.randn(30, 5, generator=generator)], None, ("linear",))
        for k in range(6)
    ]
    shuffled = [parts[i] for i in (3, 0, 5, 1, 4, 2)]
    a, b = HsicSums.of(parts, ("linear",)), HsicSums.of(shuffled, ("linear",))
    assert a.cross["linear"].tobytes() == b.cross["linear"].tobytes()


# --- minibatches and rows ---------------------------------------------------------------------


def test_minibatches_are_strided_and_ranks_take_them_whole():
    split = Minibatches.of(10, 4)
    assert split.count == 3
    assert [list(split.members(k)) for k in range(3)] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert split.indices_for(Shard(0, 2)) == [0, 3, 6, 9, 2, 5, 8]
    assert split.indices_for(Shard(1, 2)) == [1, 4, 7]
    assert split.describe() == "3 minibatches of 3–4 images"
    assert Minibatches.of(5000, 256).describe() == "20 minibatches of 250 images"


def test_large_maps_are_pooled_to_the_budget_small_ones_kept():
    assert layer_rows("a", (32, 28, 28)).grid is None  # LeNet's relu1: 25,088 values
    big = layer_rows("b", (256, 56, 56))  # ResNet's layer1: 802,816 values
    assert big.grid == (11, 11) and big.width == 256 * 121
    assert layer_rows("c", (4096, 7, 7)).grid == (2, 2)
    assert layer_rows("d", (64, 14, 14), 4).grid == (4, 4)
    assert layer_rows("e", (64, 3, 3), 4).grid is None  # already smaller
    assert layer_rows("f", (256, 56, 56), "none").grid is None
    assert layer_rows("g", (200,)).describe() == "g 200, as it is (200 values)"
    # adaptive average pooling, then C·g·g values per image, channel-major
    maps = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    rows = torch.full((2, 12), float("nan"))
    LayerRows("h", (3, 4, 4), (2, 2)).write(rows, maps.to(memory_format=torch.channels_last))
    assert rows[0, 0] == pytest.approx(float(maps[0, 0, :2, :2].mean()))
    assert rows[1, 11] == pytest.approx(float(maps[1, 2, 2:, 2:].mean()))
    whole = torch.full((2, 48), float("nan"))
    LayerRows("i", (3, 4, 4)).write(whole, maps.to(memory_format=torch.channels_last))
    assert torch.equal(whole, maps.flatten(1))


def test_settings_and_layer_names_are_checked():
    from cnntool.errors import CnnToolError
    from cnntool.tasks.compare.layers import resolved_layers

    module = load_model("lenet5-mnist").module
    assert resolved_layers(module, ["logits", "relu1"]) == ["linear2", "relu1"]
    assert resolved_layers(module, None) == LENET_LAYERS
    with pytest.raises(CnnToolError, match="layer relu1 is named twice"):
        resolved_layers(module, ["relu1", "relu1"])
    with pytest.raises(CnnToolError, match="at least 4 images"):
        CompareSettings(minibatch=3)
    with pytest.raises(CnnToolError, match="unknown kernel 'cosine'"):
        CompareSettings(kernels=("cosine",))


def test_paired_batches_leave_out_a_chunk_one_model_could_not_read():
    class B:
        def __init__(self, indices):
            self.indices = indices

    order = [0, 3, 6, 1, 4, 7]
    a = [B([0, 3]), B([6, 1]), B([4, 7])]
    b = [B([0, 3]), B([4, 7])]  # B read nothing of the second chunk
    pairs = list(paired(a, b, order, 2))
    assert [(x.indices, y.indices if y else None) for x, y in pairs] == [
        ([0, 3], [0, 3]),
        ([6, 1], None),
        ([4, 7], [4, 7]),
    ]


# --- LeNet-5 on MNIST: the goals ----------------------------------------------------------------


def digits(count: int) -> tuple[object, torch.Tensor]:
    data = open_data("mnist-5k").spread(count)
    model = load_model("lenet5-mnist")
    batch = next(iter(BatchStream(data, model.preprocessing, batch_size=count, workers=0)))
    return data, batch.inputs


def features(name: str, inputs: torch.Tensor, grid=None, dtype=torch.float64) -> list[np.ndarray]:
    """LeNet's LENET_LAYERS outputs, computed in `dtype` (float64 by default), by plain forward
    hooks (not our scan), 500 images at a time; maps average-pooled to `grid` if given."""
    module = load_model(name).module.to(dtype).eval()
    found: dict[str, list] = {layer: [] for layer in LENET_LAYERS}

    def keep(layer, output):
        if grid and output.ndim == 4:
            output = torch.nn.functional.adaptive_avg_pool2d(output, grid)
        found[layer].append(output.flatten(1).double().numpy().copy())

    hooks = [
        getattr(module, layer).register_forward_hook(lambda _m, _i, out, _n=layer: keep(_n, out))
        for layer in LENET_LAYERS
    ]
    with torch.no_grad():
        for chunk in inputs.split(500):
            module(chunk.to(dtype))
    for hook in hooks:
        hook.remove()
    return [np.concatenate(found[layer]) for layer in LENET_LAYERS]


@pytest.fixture(scope="module")
def four_hundred():
    data, inputs = digits(400)
    result = cnntool.compare(
        "lenet5-mnist",
        "lenet5-mnist-adv",
        data,
        kernels=("linear",),
        minibatch=200,
        batch_size=64,
        workers=0,
    )
    return data, inputs, result


def test_lenet_one_minibatch_equals_the_direct_full_batch_computation():
    data, inputs = digits(200)
    result = cnntool.compare(
        "lenet5-mnist", "lenet5-mnist-adv", data, minibatch=200, batch_size=50, workers=0
    )
    assert result.minibatches == 1 and result.images == 200
    a, b = features("lenet5-mnist", inputs), features("lenet5-mnist-adv", inputs)
    for kernel in ("linear", "rbf"):
        grams_a, grams_b = [u_gram(x, kernel) for x in a], [u_gram(y, kernel) for y in b]
        expected = np.array([[aligned(k, m) for m in grams_b] for k in grams_a])
        np.testing.assert_allclose(result.values[kernel], expected, atol=1e-4)
        assert np.abs(result.values[kernel] - expected).max() < 1e-5  # in fact
    assert result.values["linear"].min() > 0.3 and result.values["linear"].max() < 0.999


def test_lenet_linear_cka_equals_torch_cka_on_the_same_minibatches(four_hundred):
    """torch-cka (AntixK/PyTorch-Model-Compare) averages HSIC₁ over a DataLoader's batches:
    given our two strided minibatches of 200 digits, it gives our values to 1e-4 (it works in
    float32 on uncentred features: its own rounding is most of the difference)."""
    torch_cka = pytest.importorskip("torch_cka")
    data, inputs, result = four_hundred
    split = Minibatches.of(len(data), 200)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs, torch.zeros(len(inputs))),
        batch_sampler=[list(split.members(k)) for k in range(split.count)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its progress bar and "same name" warnings
        anchor = torch_cka.CKA(
            load_model("lenet5-mnist").module,
            load_model("lenet5-mnist-adv").module,
            "clean",
            "adversarial",
            model1_layers=LENET_LAYERS,
            model2_layers=LENET_LAYERS,
        )
        anchor.compare(loader)
    theirs = anchor.export()["CKA"].numpy()
    np.testing.assert_allclose(result.values["linear"], theirs, atol=1e-4)
    assert result.minibatches == 2 and result.names_a == LENET_LAYERS


def unbiased_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Full-batch linear CKA with HSIC₁, in feature space (no n × n matrix): with centred
    features, tr(K̃L̃) = ‖XᵀY‖² − Σ k_ii l_ii, 1ᵀK̃1 = −tr K and K̃1 = −diag K."""

    def hsic(a, b):
        n = len(a)
        da, db = (a * a).sum(axis=1), (b * b).sum(axis=1)
        traces = ((a.T @ b) ** 2).sum() - (da * db).sum()
        return (
            traces + da.sum() * db.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (da * db).sum()
        ) / (n * (n - 3))

    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    return float(hsic(x, y) / np.sqrt(hsic(x, x) * hsic(y, y)))


def biased_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. 2019's full-batch linear CKA (HSIC of HKH, HLH)."""
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    return float(((x.T @ y) ** 2).sum() / np.sqrt(((x.T @ x) ** 2).sum() * ((y.T @ y) ** 2).sum()))


@pytest.mark.slow
def test_lenet_minibatch_cka_is_within_001_of_the_full_batch_at_5000_digits():
    """20 strided minibatches of 250 digits against all 5,000 at once (the maps average-pooled
    to 4×4 so that the full-batch reference is cheap; the estimator is what is tested)."""
    data, inputs = digits(5000)
    result = cnntool.compare(
        "lenet5-mnist", "lenet5-mnist-adv", data, kernels=("linear",), pool=4, workers=0
    )
    assert result.minibatches == 20 and result.images == 5000
    # float32 features (CKA itself in float64): the bound is 0.01, float64 convolutions cost 3×
    a = features("lenet5-mnist", inputs, grid=(4, 4), dtype=torch.float32)
    b = features("lenet5-mnist-adv", inputs, grid=(4, 4), dtype=torch.float32)
    full = np.array([[unbiased_linear_cka(x, y) for y in b] for x in a])
    biased = np.array([[biased_linear_cka(x, y) for y in b] for x in a])
    assert np.abs(result.values["linear"] - full).max() < 0.01
    assert np.abs(result.values["linear"] - biased).max() < 0.01


def test_a_model_against_itself_is_symmetric_with_ones_on_the_diagonal(four_hundred):
    data = four_hundred[0]
    result = cnntool.compare("lenet5-mnist", None, data, minibatch=200, workers=0)
    assert result.self_compare and result.names_b == LENET_LAYERS
    for kernel in ("linear", "rbf"):
        values = result.values[kernel]
        np.testing.assert_allclose(np.diag(values), 1.0, atol=1e-12)
        np.testing.assert_allclose(values, values.T, atol=1e-12)
        best = result.best_matches(kernel)
        assert all(j != i for i, j in enumerate(best))  # the best *other* layer
        assert best[0] == 1  # relu1's closest neighbour is relu2
    # other rows and columns of the same model: the same numbers, from one forward pass
    part = cnntool.compare(
        "lenet5-mnist", None, data, ["relu1", "relu2"], ["relu2", "linear2"], minibatch=200
    )
    assert not part.self_compare and part.names_b == ["relu2", "linear2"]
    np.testing.assert_allclose(part.values["linear"], result.values["linear"][:2, [1, 3]])


def test_two_preprocessings_read_the_images_twice_and_match_a_direct_computation():
    """B fed differently (resize 36, centre crop 28: another geometry) reads the images with its
    own preprocessing; the result equals CKA on features from each model's own inputs."""
    data = open_data("mnist-5k").spread(64)
    a = load_model("lenet5-mnist")
    b = load_model("lenet5-mnist-adv", preprocessing=cnntool.PreprocessingOptions(resize=36))
    assert a.preprocessing != b.preprocessing
    result = cnntool.compare(
        a, b, data, ["relu3"], ["relu3"], minibatch=64, batch_size=16, workers=0
    )
    inputs_a = next(iter(BatchStream(data, a.preprocessing, batch_size=64, workers=0))).inputs
    inputs_b = next(iter(BatchStream(data, b.preprocessing, batch_size=64, workers=0))).inputs
    assert not torch.equal(inputs_a, inputs_b)
    x = features("lenet5-mnist", inputs_a)[2]
    y = features("lenet5-mnist-adv", inputs_b)[2]
    for kernel in ("linear", "rbf"):
        assert result.values[kernel][0, 0] == pytest.approx(direct_cka(x, y, kernel), abs=1e-5)
    assert result.unpaired == 0


# --- the command ------------------------------------------------------------------------------


def test_cli_records_table_and_heat_map(tmp_path, cnntool):
    out = tmp_path / "cka.png"
    done = cnntool(
        "compare", "lenet5-mnist", "lenet5-mnist-adv", "mnist-5k", "--limit", "120",
        "--minibatch", "60", "--layers", "relu2,relu3,logits", "-o", out, threads=1, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == 9
    assert [(r["layer_a"], r["layer_b"]) for r in records[:3]] == [
        ("relu2", "relu2"),
        ("relu2", "relu3"),
        ("relu2", "linear2"),
    ]
    assert {r["images"] for r in records} == {120} and {r["minibatches"] for r in records} == {2}
    for kernel in ("linear", "rbf"):
        rows = [[r[f"{kernel}_cka"] for r in records[i * 3 : i * 3 + 3]] for i in range(3)]
        for i, row in enumerate(rows):  # the flag marks each row's largest value
            flags = [r[f"best_{kernel}"] for r in records[i * 3 : i * 3 + 3]]
            assert flags == [v == max(row) for v in row]
    # stderr says how each model is fed, how layers become rows, and the minibatches
    assert "A = lenet5-mnist: preprocessing: 1×28×28" in done.stderr
    assert "B = lenet5-mnist-adv: preprocessing:" in done.stderr
    assert "A: relu2 64×14×14, flattened (12,544 values)" in done.stderr
    assert "120 images in 2 minibatches of 60 images" in done.stderr
    assert "same preprocessing" in done.stderr
    assert "best matches over 120 images" in done.stderr
    # the heat map: each cell in the colour of its value (away from the text and the frame)
    from cnntool.io.compare import heatmap
    from cnntool.io.figure_style import colorize

    image = np.asarray(Image.open(out).convert("RGB"))
    values = {
        k: np.array([[r[f"{k}_cka"] for r in records[i * 3 : i * 3 + 3]] for i in range(3)])
        for k in ("linear", "rbf")
    }
    layout = heatmap_layout(records, heatmap)
    for kernel, cells in layout.cells.items():
        for (i, j), (left, top, _right, _bottom) in cells.items():
            pixel = image[top + 5, left + 5].astype(int)
            expected = np.rint(colorize(np.array([[values[kernel][i, j]]]), "viridis")[0, 0] * 255)
            assert np.abs(pixel - expected).max() <= 3, (kernel, i, j)


def heatmap_layout(records, heatmap):
    """The layout the command drew (the same result rebuilt from its records)."""
    from cnntool.tasks.compare import CkaResult

    names = list(dict.fromkeys(r["layer_a"] for r in records))
    values = {
        k: np.array([[r[f"{k}_cka"] for r in records if r["layer_a"] == n] for n in names])
        for k in ("linear", "rbf")
    }
    result = CkaResult(
        model_a=records[0]["model_a"],
        model_b=records[0]["model_b"],
        layers_a=tuple(LayerRows(n, (1,)) for n in names),
        layers_b=tuple(LayerRows(n, (1,)) for n in names),
        self_compare=False,
        settings=CompareSettings(),
        values=values,
        images=records[0]["images"],
        minibatches=records[0]["minibatches"],
        dropped=0,
        unpaired=0,
    )
    from cnntool.io.compare import title

    return heatmap(result, title(result, "mnist-5k"))[1]


def test_heat_map_pixels_frames_and_undefined_cells():
    from cnntool.io.compare import BEST, UNDEFINED, heatmap
    from cnntool.io.figure_style import colorize

    values = np.array([[0.1, 0.9], [0.6, 0.2], [np.nan, np.nan]])
    result = cnntool.CkaResult(
        model_a="a",
        model_b="b",
        layers_a=tuple(LayerRows(n, (4,)) for n in ("x", "y", "dead")),
        layers_b=tuple(LayerRows(n, (4,)) for n in ("p", "q")),
        self_compare=False,
        settings=CompareSettings(kernels=("linear",)),
        values={"linear": values},
        images=10,
        minibatches=1,
        dropped=0,
        unpaired=0,
    )
    assert result.best_matches("linear") == [1, 0, None]
    assert result.undefined_layers() == ["dead"]
    image, layout = heatmap(result, "test")
    pixels = np.asarray(image.convert("RGB")).astype(int)
    cells = layout.cells["linear"]
    for (i, j), (left, top, right, bottom) in cells.items():
        inside = pixels[top + 5, left + 5]
        if np.isnan(values[i, j]):
            assert tuple(inside) == UNDEFINED
            written = 3  # "–"
        else:
            written = 10
            expected = np.rint(colorize(np.array([[values[i, j]]]), "viridis")[0, 0] * 255)
            assert np.abs(inside - expected).max() <= 1
        framed = (i, j) in ((0, 1), (1, 0))
        assert (tuple(pixels[top, (left + right) // 2]) == BEST) == framed
        # the value is written in the middle: ink of another colour than the cell
        middle = pixels[top + 6 : bottom - 5, left + 8 : right - 7].reshape(-1, 3)
        assert (np.abs(middle - inside).max(axis=1) > 60).sum() > written
    # a row label left of the first cell, column labels under the grid
    left, top, _, bottom = cells[(0, 0)]
    assert (pixels[top:bottom, left - 30 : left - 4] < 100).any()
    _, _, right, bottom = cells[(2, 1)]
    assert (pixels[bottom + 8 : bottom + 40, right - 40 : right] < 100).any()


def test_cli_a_model_against_itself(tmp_path, cnntool):
    done = cnntool(
        "compare", "lenet5-mnist", "mnist-5k", "--limit", "40", "--minibatch", "40",
        "--kernel", "linear", "--format", "csv", threads=1, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("model_a,layer_a,model_b,layer_b,linear_cka,best_linear")
    assert len(lines) == 1 + 16
    assert "rbf" not in lines[0]
    assert "best other layer (linear)" in done.stderr


@pytest.mark.parametrize(
    "args, sentence",
    [
        (["lenet5-mnist"], "compare takes MODEL_A MODEL_B DATA, or MODEL DATA"),
        (["lenet5-mnist", "mnist-5k", "--layers", "nope"], "unknown layer 'nope'"),
        (["lenet5-mnist", "mnist-5k", "--pool", "big"], "not auto, none or a grid side"),
    ],
)
def test_cli_bad_input_is_one_sentence(args, sentence, cnntool):
    done = cnntool("compare", *args, "--limit", "8", "-q", threads=1, cwd=ROOT)
    assert done.returncode != 0 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert sentence in done.stderr


@pytest.mark.torchrun
def test_torchrun_two_cpu_ranks_equal_one_process(cnntool):
    args = [
        "compare", "lenet5-mnist", "lenet5-mnist-adv", "mnist-5k", "--limit", "150",
        "--minibatch", "30", "--batch-size", "10", "-q",
    ]  # fmt: skip
    single = cnntool(*args, threads=1, cwd=ROOT)
    assert single.returncode == 0, single.stderr
    double = cnntool.torchrun(*args, cwd=ROOT)
    assert double.returncode == 0, double.stderr
    one = [json.loads(line) for line in single.stdout.splitlines()]
    two = [json.loads(line) for line in double.stdout.splitlines()]  # rank 0 alone writes
    assert len(one) == 16 and one[0]["minibatches"] == 5
    for a, b in zip(one, two, strict=True):
        assert same_records(a, b, rel=0, abs=1e-6)
