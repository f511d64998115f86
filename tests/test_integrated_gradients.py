"""Integrated gradients (`visualize deconv --method ig`) against captum's IntegratedGradients and
against models whose answer is known by hand; SmoothGrad's captum convention
(`--smooth-abs per-sample`) against captum's NoiseTunnel(Saliency) given the same noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import NoiseTunnel, Saliency
from torch import nn

from cnntool.core.data import BatchStream, open_data
from cnntool.core.hooks import capture, hook_count
from cnntool.core.loading.models import load_model
from cnntool.errors import CnnToolError
from cnntool.tasks.integrated_gradients import (
    IntegratedGradients,
    baseline_input,
    integrate,
    quadrature,
)
from cnntool.tasks.projection import SmoothGrad, project
from tests.backward_reference import make, norm_close, quiet_captum
from tests.pixels import png

STEPS = 16  # both sides use the same count, 5 per forward, so the chunks are uneven
# Both sides chunk alike: a CPU convolution rounds differently with another batch size, and
# lite0's map moves by 3e-4 of its largest value between 5 and 16 points per forward (captum's
# own maps with internal_batch_size 5 and None differ by as much).
CHUNK = 5


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def photos(lite0):
    """Two imagenet-samples photos at 112×112, normalized as lite0 takes them."""
    dataset = open_data("imagenet-samples").head(2)
    x = next(iter(BatchStream(dataset, lite0.preprocessing, batch_size=2))).inputs
    return nn.functional.interpolate(x, size=(112, 112), mode="bilinear", antialias=True)


@quiet_captum
@pytest.mark.parametrize("name", ["resnet18", "lite0"])
def test_ig_equals_captum_and_so_does_its_completeness_gap(name, lite0, photos):
    """resnet18 (random init, seed 0) from a zero model input (captum's default baseline);
    lite0 from black pixels (−1 after its (x − 0.5) / 0.5). Two photos, class 7 and the top one."""
    model = make("resnet18") if name == "resnet18" else lite0.module
    baseline_name = "0" if name == "resnet18" else "black"
    captum = CaptumIG(model)
    for x, wanted in zip(photos, (7, None), strict=True):
        x = x[None]
        ours = project(
            model,
            x,
            "ig",
            target_class=wanted,
            preprocessing=lite0.preprocessing,
            ig=IntegratedGradients(steps=STEPS, baseline=baseline_name, batch_size=CHUNK),
        )
        target = ours.target.class_index
        baseline = torch.full_like(x, -1.0) if name == "lite0" else None  # None: captum's zero
        theirs, delta = captum.attribute(
            x,
            baselines=baseline,
            target=target,
            n_steps=STEPS,
            method="gausslegendre",
            internal_batch_size=CHUNK,
            return_convergence_delta=True,
        )
        scale = float(theirs.abs().max())
        # |Δ| relative to the map's largest magnitude (the maps' values are ~1e-2 to 1e-1)
        assert (ours.map - theirs[0]).abs().max() <= 1e-5 * scale, name
        c = ours.completeness
        assert c.steps == STEPS and c.rule == "gausslegendre" and c.baseline == baseline_name
        # to 1e-5 of |F(x) − F(b)| (≈ 6 on lite0, whose gaps at 16 steps are 0.8 and 2.1):
        # captum sums the map in float32, ours in float64
        tolerance = 1e-5 * max(1.0, abs(c.difference))
        assert c.gap == pytest.approx(abs(float(delta)), abs=tolerance)
        recomputed = captum.compute_convergence_delta(
            ours.map[None], baseline if baseline is not None else 0.0, x, target=target
        )
        assert c.delta == pytest.approx(float(recomputed), abs=tolerance)
        assert c.f_input == pytest.approx(ours.value, rel=1e-5)
        assert c.relative_gap == pytest.approx(c.gap / abs(c.f_input - c.f_baseline))
        record = ours.to_record()["ig"]
        assert record["gap"] == c.gap and record["steps"] == STEPS
    assert hook_count(model) == 0


@quiet_captum
def test_ig_of_a_unit_equals_captum_on_the_unit_as_a_model():
    model, x = (
        make("resnet18"),
        torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)),
    )
    ours = project(model, x, "ig", layer="layer3", ig=IntegratedGradients(steps=8, baseline="0"))
    target = ours.target
    assert target.layer == "layer3" and target.position is not None
    row, col = target.position

    def wrapped(batch):  # the unit as a 1-output model, for captum
        with capture(model, ["layer3"], detach=False, stop_early=True) as cap:
            cap.run(batch)
        return cap.outputs["layer3"][:, target.unit, row, col, None]

    theirs, delta = CaptumIG(wrapped).attribute(
        x, target=0, n_steps=8, return_convergence_delta=True
    )
    assert (ours.map - theirs[0]).abs().max() <= 1e-5 * theirs.abs().max()
    assert ours.completeness.gap == pytest.approx(abs(float(delta)), abs=1e-5)
    assert hook_count(model) == 0


class Linear(nn.Module):
    def __init__(self, weight, bias=0.5):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x):
        return ((x * self.weight).flatten(1).sum(1) + self.bias)[:, None]


@pytest.mark.parametrize(
    "rule,steps", [("gausslegendre", 50), ("riemann_left", 1), ("riemann_trapezoid", 7)]
)
def test_a_linear_model_gets_x_minus_baseline_times_w_and_no_gap(rule, steps):
    generator = torch.Generator().manual_seed(3)
    w, x, b = (torch.randn(1, 2, 4, 4, generator=generator) for _ in range(3))
    result = project(
        Linear(w),
        x,
        "ig",
        target_class=0,
        ig=IntegratedGradients(steps=steps, rule=rule, baseline=b, batch_size=4),
    )
    assert torch.allclose(result.map, ((x - b) * w)[0], atol=1e-6)
    assert result.completeness.gap <= 1e-5 and result.completeness.baseline == "tensor"
    assert result.completeness.f_input - result.completeness.f_baseline == pytest.approx(
        float(((x - b) * w).sum()), abs=1e-5
    )


def test_a_relu_unit_gets_its_hand_computed_ig_and_the_gap_shrinks_with_steps():
    """F(x) = relu(w·x − θ) from baseline 0: the path crosses the kink at α* = θ / (w·x), so
    IG_i = x_i w_i (1 − α*) exactly, summing to F(x) − F(0). The quadrature steps over the
    kink: it misses by at most the weight of one point (times x_i w_i; times w·x for the sum),
    so more steps narrow the gap — steadily for a Riemann sum, unevenly for Gauss-Legendre,
    whose error depends on where the kink falls between its points."""
    w = torch.tensor([1.0, 2.0, -0.5, 0.25])
    x = torch.tensor([[0.8, 0.6, -0.4, 1.2]])
    theta = 1.0
    score = lambda batch: torch.relu(batch @ w - theta)  # noqa: E731
    dot = float(x[0] @ w)  # 2.5, so α* = 0.4 and F(x) = 1.5
    exact = x[0] * w * (1 - theta / dot)
    gaps = {}
    for rule in ("riemann_middle", "gausslegendre"):
        for steps in (4, 16, 64, 256):
            ig, completeness = integrate(
                score,
                x,
                torch.zeros_like(x),
                IntegratedGradients(steps=steps, rule=rule, baseline=0.0),
            )
            assert completeness.difference == pytest.approx(dot - theta)
            widest = max(quadrature(steps, rule)[0])
            assert ((ig[0] - exact).abs() <= (x[0] * w).abs() * widest + 1e-6).all(), (rule, steps)
            assert completeness.gap <= dot * widest + 1e-6
            gaps[rule, steps] = completeness.gap
    assert [gaps["riemann_middle", n] for n in (4, 16, 64, 256)] == pytest.approx(
        [0.25, 0.0625, 0.015625, 0.00390625], abs=1e-6
    )  # (1 − α*)... off by 1/n of a step
    assert gaps["gausslegendre", 256] < gaps["gausslegendre", 4] / 10


def test_quadrature_rules_and_baselines(lite0):
    for rule in (
        "gausslegendre",
        "riemann_trapezoid",
        "riemann_middle",
        "riemann_left",
        "riemann_right",
    ):
        weights, alphas = quadrature(9, rule)
        assert sum(weights) == pytest.approx(1.0) and all(0 <= a <= 1 for a in alphas)
        # exact for α² with the Gauss-Legendre nodes, close for the others
        assert sum(w * a * a for w, a in zip(weights, alphas, strict=True)) == pytest.approx(
            1 / 3, abs=0.06
        )
    with pytest.raises(CnnToolError, match="unknown integration rule"):
        IntegratedGradients(rule="simpson")
    with pytest.raises(CnnToolError, match="unknown baseline"):
        IntegratedGradients(baseline="white")
    x = torch.rand(1, 3, 20, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    prep = lite0.preprocessing  # (p − 0.5) / 0.5
    assert torch.equal(baseline_input("black", x, prep), torch.full_like(x, -1.0))
    assert torch.equal(baseline_input("0", x), torch.zeros_like(x))
    mean = baseline_input("mean", x)
    assert torch.allclose(mean[0, :, 3, 5], x.mean(dim=(2, 3))[0])
    blurred = baseline_input("blur", x)
    assert blurred.shape == x.shape and blurred.std() < x.std() / 2
    assert torch.allclose(baseline_input("blur", torch.full_like(x, 0.3)), torch.full_like(x, 0.3))
    noise = baseline_input("noise", x, prep, seed=4)
    assert torch.equal(noise, baseline_input("noise", x, prep, seed=4)) and noise.min() >= -1
    with pytest.raises(CnnToolError, match="needs the model's preprocessing"):
        baseline_input("black", x)
    with pytest.raises(CnnToolError, match="drop --times-input"):
        project(Linear(torch.ones(1, 3, 20, 24)), x, "ig", times_input=True)


@quiet_captum
def test_smoothgrad_per_sample_equals_captum_noisetunnel_with_the_same_noise(lite0, photos):
    """captum draws all its noise with one torch.normal(0, σ) on the global generator; ours draws
    a sample at a time from a private generator. Seeded alike, the draws are the same numbers
    (checked first), so the maps compare directly. Captum runs one sample per forward, as ours
    does (nt_samples_batch_size=1: a convolution rounds differently with another batch size)."""
    model, x, samples, seed = make("resnet18"), photos[:1], 6, 11
    sigma = 0.15 * float(x.max() - x.min())
    torch.manual_seed(seed)
    captum_noise = torch.normal(0, torch.tensor(sigma).repeat((samples, *x.shape[1:])))
    drawn = []
    SmoothGrad(samples, 0.15, seed)(lambda noisy: drawn.append(noisy - x) or noisy, x)
    assert torch.allclose(torch.cat(drawn), captum_noise, atol=1e-6)

    ours = project(
        model, x, "saliency", target_class=7, smooth=SmoothGrad(samples, 0.15, seed, "per-sample")
    )
    torch.manual_seed(seed)
    theirs = NoiseTunnel(Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=samples, stdevs=sigma, target=7, nt_samples_batch_size=1
    )[0]
    assert norm_close(ours.map, theirs)
    assert ours.to_record()["smooth_abs"] == "per-sample"
    ours_default = project(
        model, x, "saliency", target_class=7, smooth=SmoothGrad(samples, 0.15, seed)
    )
    assert ours_default.to_record()["smooth_abs"] == "after-mean"
    assert not norm_close(ours_default.map, theirs, 1e-2)  # |mean| ≤ mean |·|, and it shows
    assert (ours_default.map <= ours.map + 1e-6).all()
    with pytest.raises(CnnToolError, match="maps are signed"):
        project(model, x, "guided", smooth=SmoothGrad(2, abs="per-sample"))


def test_smoothgrad_fixes_the_target_with_one_forward_and_no_extra_backward():
    counts = {"forward": 0, "backward": 0}

    class Counted(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)

        def forward(self, x):
            counts["forward"] += 1
            x.register_hook(
                lambda g: counts.__setitem__("backward", counts["backward"] + 1)
            ) if x.requires_grad else None
            return self.linear(x.flatten(1))

    project(Counted(), torch.ones(1, 1, 2, 2), "saliency", smooth=SmoothGrad(5))
    assert counts == {"forward": 6, "backward": 5}


def test_cli_ig_writes_the_figure_and_the_completeness_gap(cnntool, tmp_path):
    from cnntool.core.samples import imagenet_samples

    photo, _ = imagenet_samples()[0]
    out = tmp_path / "ig.png"
    result = cnntool(
        "visualize", "deconv", "efficientnet_lite0", photo, "--method", "ig", "-o", out, threads=1
    )
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    ig = record["ig"]
    assert record["method"] == "ig" and ig["baseline"] == "black" and ig["steps"] == 50
    assert ig["rule"] == "gausslegendre"
    assert ig["gap"] == pytest.approx(abs(ig["sum"] - (ig["f_input"] - ig["f_baseline"])), abs=1e-6)
    assert ig["relative_gap"] < 0.05 and record["value"] == pytest.approx(ig["f_input"], abs=1e-5)
    assert "completeness gap" in result.stderr
    pixels = png(out)
    assert pixels.shape[1] > 2 * 224  # the signed map and the overlay, side by side
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50  # not blank
    bad = cnntool(
        "visualize",
        "deconv",
        "efficientnet_lite0",
        photo,
        "--method",
        "ig",
        "--smooth",
        "4",
        "-o",
        out,
    )
    assert bad.returncode == 2 and "not integrated gradients" in bad.stderr
