"""`visualize check` (#23): which attribution map to trust.

- the sanity check (Adebayo et al. 2018) tells guided backprop (known to fail) from saliency and
  Grad-CAM (known to pass) on the trained efficientnet_lite0 and imagenet-samples photos, on a
  copy: the user's model keeps its weights;
- deletion and insertion equal torchcam's DeletionInsertionMetric on the same maps;
- ROAD's imputation equals a direct solve of its linear system, and each imputed pixel is the
  weighted mean of its neighbours;
- SSIM equals scikit-image's, Spearman scipy's;
- the command line end to end: table, records, figures.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch

from cnntool.core.data import BatchStream, open_data
from cnntool.core.hooks import hook_count
from cnntool.core.loading.models import load_model
from cnntool.tasks.check import (
    NEIGHBOURS,
    CheckSettings,
    attribution_maps,
    cascade_stages,
    check_batch,
    deletion_insertion,
    impute,
    rise_blur,
    spearman,
    ssim,
    verdicts,
)
from tests.pixels import png, spread


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def pixels(lite0):
    """The first 2 imagenet-samples photos as lite0 takes them, [0, 1] pixels (224×224)."""
    dataset = open_data("imagenet-samples").head(2)
    return next(
        iter(BatchStream(dataset, lite0.preprocessing, batch_size=2, normalize=False))
    ).inputs


def test_sanity_check_fails_guided_backprop_and_passes_saliency_and_gradcam(lite0, pixels):
    settings = CheckSettings(
        methods=("saliency", "guided", "gradcam"), checks=("sanity",), stages=4
    )
    before = {k: v.clone() for k, v in lite0.module.state_dict().items()}
    part = check_batch(lite0.module, pixels, [0, 1], settings, lite0.preprocessing)
    assert all(torch.equal(before[k], v) for k, v in lite0.module.state_dict().items())  # a copy
    assert hook_count(lite0.module) == 0 and not lite0.module.training
    result = {v.method: v for v in verdicts([part], settings)}
    guided, saliency, gradcam = result["guided"], result["saliency"], result["gradcam"]
    # measured: guided 0.96, 0.74, 0.49, 0.18 over the 4 stages (mean 0.59); saliency 0.42, 0.36,
    # 0.34, 0.07 (0.30); Grad-CAM −0.07, 0.31, 0.23, 0.29 (0.19)
    assert guided.passed is False and saliency.passed and gradcam.passed
    assert guided.rank_correlation[0] > 0.9 > 0.5 > saliency.rank_correlation[0]
    assert guided.mean_correlation > saliency.mean_correlation + 0.2
    assert guided.mean_correlation > gradcam.mean_correlation + 0.25
    assert [v.method for v in sorted(result.values(), key=lambda v: v.rank)][-1] == "guided"
    assert len(guided.ssim) == 4 and guided.ssim[0] > saliency.ssim[0]
    assert part.cascade[-1] == "_conv_stem" and len(cascade_stages(lite0.module, 4)) == 4


class _GivenMaps:
    """A torchcam CAM extractor that hands out maps computed beforehand (their metric only needs
    `model`, the call, `fuse_cams` and `_hooks_off`)."""

    def __init__(self, model, maps):
        self.model, self.maps = model, maps

    def __call__(self, class_idx=None, scores=None, normalized=True, **kwargs):
        return [self.maps]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        return contextlib.nullcontext()


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_deletion_and_insertion_equal_torchcam(lite0, pixels, method):
    from torchcam.metrics import DeletionInsertionMetric

    model = lite0.module
    x = lite0.preprocessing.normalize(pixels)
    with torch.no_grad():
        targets = model(x).argmax(1)
    maps = attribution_maps(model, x, method, targets)
    ours = deletion_insertion(model, x, maps, targets, steps=7)
    softmax = lambda logits: torch.softmax(logits, dim=-1)  # noqa: E731
    deletion = DeletionInsertionMetric(_GivenMaps(model, maps), softmax, steps=7)  # zeros
    deletion.update(x)
    insertion = DeletionInsertionMetric(
        _GivenMaps(model, maps), softmax, steps=7, baseline=rise_blur
    )
    insertion.update(x)
    assert ours.fractions.tolist() == pytest.approx([k / 7 for k in range(8)], abs=1e-4)
    assert float(ours.deletion_auc.mean()) == pytest.approx(
        deletion.summary()["deletion_auc"], abs=1e-5
    )
    assert float(ours.insertion_auc.mean()) == pytest.approx(
        insertion.summary()["insertion_auc"], abs=1e-5
    )
    # and the curves mean something: removing the map's top pixels first hurts more than inserting
    assert float(ours.deletion_auc.mean()) < float(ours.insertion_auc.mean())


def _direct_solve(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's system written out densely, one equation per removed pixel."""
    c, h, w = image.shape
    where = [tuple(p) for p in np.argwhere(removed)]
    position = {p: i for i, p in enumerate(where)}
    A, b = np.eye(len(where)), np.zeros((len(where), c))
    for i, (y, x) in enumerate(where):
        near = [
            (y + dy, x + dx, wt) for dy, dx, wt in NEIGHBOURS if 0 <= y + dy < h and 0 <= x + dx < w
        ]
        total = sum(wt for *_, wt in near)
        for ny, nx, wt in near:
            if removed[ny, nx]:
                A[i, position[(ny, nx)]] -= wt / total
            else:
                b[i] += wt / total * image[:, ny, nx]
    out = image.copy()
    solved = np.linalg.solve(A, b)
    for i, (y, x) in enumerate(where):
        out[:, y, x] = solved[i]
    return out


def test_road_imputation_is_the_weighted_mean_of_the_neighbours():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 6, 7, generator=generator, dtype=torch.float64)
    removed = torch.rand(6, 7, generator=generator) < 0.45
    removed[0, 0] = removed[0, 1] = removed[1, 0] = removed[1, 1] = True  # a removed corner block
    out = impute(image, removed, noise=0.0)
    assert np.allclose(out.numpy(), _direct_solve(image.numpy(), removed.numpy()), atol=1e-12)
    assert torch.equal(out[:, ~removed], image[:, ~removed])
    # each imputed pixel is the weighted mean (1/6 direct, 1/12 diagonal) of its neighbours' final
    # values
    for y, x in np.argwhere(removed.numpy()):
        near = [
            (y + dy, x + dx, wt) for dy, dx, wt in NEIGHBOURS if 0 <= y + dy < 6 and 0 <= x + dx < 7
        ]
        mean = sum(wt * out[:, ny, nx] for ny, nx, wt in near) / sum(wt for *_, wt in near)
        assert torch.allclose(out[:, y, x], mean, atol=1e-12)
    # with noise: the same solution plus seeded N(0, σ²) on the removed pixels only
    noisy = impute(image, removed, noise=0.05, generator=torch.Generator().manual_seed(1))
    jitter = torch.randn(
        (3, int(removed.sum())), generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    assert torch.allclose(noisy[:, removed], out[:, removed] + 0.05 * jitter, atol=1e-12)
    assert torch.equal(noisy[:, ~removed], image[:, ~removed])


def test_ssim_and_spearman_equal_the_references():
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    for shape in [(32, 40), (64, 64)]:
        a = rng.random(shape)
        b = np.clip(a + 0.3 * rng.standard_normal(shape), 0, 1)
        reference = structural_similarity(
            a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert ssim(a, b) == pytest.approx(reference, abs=1e-10)
        b[:4] = 0.5  # ties
        assert spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-10)
    assert ssim(a, a) == pytest.approx(1.0) and spearman(a, np.zeros_like(a)) == 0.0


def test_cli_check_end_to_end(cnntool, tmp_path):
    out = tmp_path / "check"
    result = cnntool(
        "visualize",
        "check",
        "efficientnet_lite0",
        "imagenet-samples",
        "--limit",
        "2",
        "--methods",
        "saliency,guided,gradcam",
        "--steps",
        "5",
        "--road-fractions",
        "0.5",
        "--stages",
        "3",
        "-o",
        out,
        threads=1,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["rank"] for r in records] == [1, 2, 3]
    by_method = {r["method"]: r for r in records}
    assert by_method["guided"]["verdict"] == "fail" and by_method["saliency"]["verdict"] == "pass"
    assert by_method["guided"]["rank"] == 3
    for r in records:
        assert r["images"] == 2 and 0 <= r["deletion_auc"] <= 1 and 0 <= r["insertion_auc"] <= 1
        assert len(r["curves"]["deletion"]) == 6 and r["road"]["fraction"] == [0.5]
        assert (
            len(r["sanity"]["rank_correlation"]) == 3 and r["sanity"]["stages"][-1] == "_conv_stem"
        )
    assert "Which attribution to trust on efficientnet_lite0" in result.stderr
    assert "FAIL" in result.stderr and "Adebayo" in result.stderr
    cascade, curves = png(out / "cascade.png"), png(out / "curves.png")
    assert cascade.shape[1] > cascade.shape[0] and spread(cascade) > 100
    assert spread(curves) > 20  # mostly white paper, coloured lines


def test_cli_check_runs_the_model_as_the_scan_options_say(cnntool):
    """--fold-bn (the default) and --precision reach the check's forward passes, and stderr says
    so; the cascade randomizes a copy with its BatchNorms unfolded. Folded or not, the numbers
    agree to float rounding (measured: AUCs within 8e-4, rank correlations within 1e-4)."""
    args = ["visualize", "check", "efficientnet_lite0", "imagenet-samples", "--limit", "1"]
    args += ["--methods", "saliency", "--checks", "deletion,sanity", "--steps", "4"]
    args += ["--stages", "2", "--workers", "0"]
    runs = {flag: cnntool(*args, flag, threads=1) for flag in ("--fold-bn", "--no-fold-bn")}
    for result in runs.values():
        assert result.returncode == 0, result.stderr
    folded, unfolded = runs["--fold-bn"].stderr, runs["--no-fold-bn"].stderr
    assert "forward pass: channels-last, gradients, fp32, 49 BatchNorm folded" in folded
    assert "the cascade re-initializes a copy of the model as loaded" in folded
    assert "folded" not in unfolded and "forward pass: channels-last, gradients, fp32" in unfolded
    (a,), (b,) = ([json.loads(line) for line in r.stdout.splitlines()] for r in runs.values())
    assert a["deletion_auc"] == pytest.approx(b["deletion_auc"], abs=2e-3)
    assert a["insertion_auc"] == pytest.approx(b["insertion_auc"], abs=2e-3)
    correlation = a["sanity"]["rank_correlation"]
    assert correlation == pytest.approx(b["sanity"]["rank_correlation"], abs=1e-3)
    assert len(correlation) == 2 and correlation[0] < 0.5  # saliency follows the randomization
