"""`visualize cam` and `visualize occlusion` (#23), held to the reference libraries:
- every CAM method equals pytorch-grad-cam's map (resnet18 with random weights, seed 0, and the
  trained efficientnet_lite0) after the same ReLU, upsampling and per-image min-max;
- occlusion equals captum's `Occlusion` attribution (same window, stride and baseline);
- a hand-set model whose answer is known: Grad-CAM lights the top-left quadrant only, and
  occluding that quadrant is what drops the class's probability;
- the command line end to end, its figures judged by their pixels.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnntool.core.data import BatchStream, open_data
from cnntool.core.hooks import hook_count
from cnntool.core.loading.models import load_model
from cnntool.tasks.cam import METHODS, cam_maps, default_layer, unit_target, upsample_normalized
from cnntool.tasks.occlusion import occlusion_maps
from cnntool.tasks.projection import Target
from tests.pixels import find_plot_text, png, spread

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def samples(lite0):
    """The first 3 imagenet-samples photos as lite0 takes them (normalized, 224×224)."""
    dataset = open_data("imagenet-samples").head(3)
    return next(iter(BatchStream(dataset, lite0.preprocessing, batch_size=3))).inputs


@pytest.fixture(scope="module")
def resnet18():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18(weights=None).eval()


def _minmax(maps: np.ndarray) -> np.ndarray:
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0.0)


def _reference(method: str, model, layer: str, x: torch.Tensor) -> np.ndarray:
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM

    kind = {
        "gradcam": GradCAM,
        "gradcam++": GradCAMPlusPlus,
        "scorecam": ScoreCAM,
        "layercam": LayerCAM,
        "eigencam": EigenCAM,
        "hirescam": HiResCAM,
    }[method]
    with kind(model=model, target_layers=[dict(model.named_modules())[layer]]) as cam:
        if method == "scorecam":
            cam.batch_size = 64
        return _minmax(cam(input_tensor=x, targets=None))


# Score-CAM runs one forward pass per channel: on a narrower layer of a smaller input.
CASES = {"resnet18": ("layer4", ("layer2", 64)), "lite0": ("_relu1", ("_blocks.4", 96))}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_method_equals_pytorch_grad_cam(name, resnet18, lite0, samples, capsys):
    model = resnet18 if name == "resnet18" else lite0.module
    layer, (score_layer, score_size) = CASES[name]
    found = {}
    for method in METHODS:
        x, where = samples[:2], layer
        if method == "scorecam":
            x = F.interpolate(samples[:2], size=(score_size, score_size), mode="bilinear")
            where = score_layer
        reference = _reference(method, model, where, x)
        # pytorch-grad-cam adds 1e-6 to Grad-CAM++'s denominator; the paper (our default) does not
        ours = cam_maps(
            model, x, where, method, plusplus_eps=1e-6 if method == "gradcam++" else 0.0
        )
        shown = np.stack([m.upsampled(x.shape[2:]).numpy() for m in ours])
        if method == "eigencam":
            # an SVD's sign is arbitrary and pytorch-grad-cam keeps LAPACK's: compare with either
            # orientation, per image (ours: the singular vector's components sum to >= 0)
            flipped = np.stack(
                [upsample_normalized((-m.raw).clamp(min=0), x.shape[2:]).numpy() for m in ours]
            )
            per_image = [
                min(np.abs(reference[i] - shown[i]).max(), np.abs(reference[i] - flipped[i]).max())
                for i in range(len(ours))
            ]
            found[method] = max(per_image)
        else:
            found[method] = float(np.abs(reference - shown).max())
            assert all(m.target.kind == "class" for m in ours)
        assert not any(m.flat for m in ours), method
    with capsys.disabled():
        print(
            f"\n{name}: max |Δ| vs pytorch-grad-cam: "
            + ", ".join(f"{m} {d:.1e}" for m, d in found.items())
        )
    assert max(found.values()) <= TOLERANCE, found
    assert hook_count(model) == 0


def test_gradcam_plusplus_follows_the_paper_without_epsilon(resnet18, samples):
    """The paper's Eq. 19 has no ε: α = g² / (2g² + Σ A g³), 0 where g = 0 (computed here by
    hand)."""
    from cnntool.core.hooks import capture

    x = samples[:1]
    with capture(resnet18, ["layer4"], gradients=True) as cap:
        logits = resnet18(x.requires_grad_())
        torch.autograd.grad(logits[0, logits[0].argmax()], x)
    A, g = cap.activations["layer4"].double(), cap.gradients["layer4"].double()
    alpha = g**2 / (2 * g**2 + A.sum((2, 3), keepdim=True) * g**3)
    alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
    expected = ((alpha * g.clamp(min=0)).sum((2, 3), keepdim=True) * A).sum(1)[0]
    ours = cam_maps(resnet18, x, "layer4", "gradcam++")[0]
    assert torch.allclose(
        ours.raw.double(), expected, rtol=1e-5, atol=1e-7 * float(expected.abs().max())
    )


def test_default_layer_is_the_last_spatial_one(resnet18, lite0):
    assert default_layer(resnet18, (3, 224, 224)) == "layer4"
    assert default_layer(lite0.module, (3, 224, 224)) == "_relu1"


class QuadrantCopy(nn.Module):
    """Channel 0: the input's top-left quadrant (zero elsewhere); channel 1: the rest."""

    def __init__(self, size: int = 8):
        super().__init__()
        mask = torch.zeros(1, 1, size, size)
        mask[..., : size // 2, : size // 2] = 1
        self.register_buffer("mask", mask)

    def forward(self, x):
        return torch.cat([x * self.mask, x * (1 - self.mask)], dim=1)


def quadrant_model() -> nn.Module:
    """Logit 1 = the mean of channel 0 (the top-left quadrant), logit 0 = the mean of channel 1."""
    head = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    return nn.Sequential(
        OrderedDict(
            features=QuadrantCopy(), pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), head=head
        )
    ).eval()


def test_hand_set_model_grad_cam_lights_the_top_left_quadrant_and_occluding_it_drops_the_class():
    model = quadrant_model()
    x = torch.ones(1, 1, 8, 8)
    quadrant = torch.zeros(8, 8, dtype=torch.bool)
    quadrant[:4, :4] = True
    for method in ("gradcam", "gradcam++", "layercam", "hirescam"):
        cam = cam_maps(model, x, "features", method, Target.logit(1))[0]
        assert cam.target.class_index == 1 and cam.score == pytest.approx(0.25)
        assert (cam.map[quadrant] > 0).all() and (cam.map[~quadrant] == 0).all(), method
    # Grad-CAM exactly: the weight of channel 0 is d mean / d A = 1/64, channel 1's is 0
    assert torch.allclose(
        cam_maps(model, x, "features", "gradcam", Target.logit(1))[0].raw, quadrant.float() / 64
    )
    # Score-CAM weighs both channels (softmax), but the quadrant's more
    score = cam_maps(model, x, "features", "scorecam", Target.logit(1))[0].map
    assert score[quadrant].min() > score[~quadrant].max()

    occluded = occlusion_maps(
        model,
        x[0],
        size=4,
        stride=4,
        fill=0.0,
        target=Target.logit(1),
        unit=unit_target("features:0"),
    )
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731  two classes: p1 = sigmoid(l1 - l0)
    assert occluded.clean_probability == pytest.approx(sigmoid(0.25 - 0.75))
    expected = [[sigmoid(0.0 - 0.75), sigmoid(0.25 - 0.5)], [sigmoid(0.25 - 0.5)] * 2]
    assert np.allclose(occluded.probability.numpy(), expected)
    assert occluded.probability[0, 0] < occluded.clean_probability < occluded.probability[1, 1]
    assert np.allclose(occluded.unit_map.numpy(), [[0.0, 0.25], [0.25, 0.25]])  # channel 0's mean
    assert occluded.top_class.tolist() == [[0, 0], [0, 0]]


def test_occlusion_equals_captum(lite0, samples):
    from captum.attr import Occlusion

    model = lite0.module
    x = F.interpolate(samples[1:2], size=(96, 96), mode="bilinear")[0]
    grey = (0.5 - torch.tensor(lite0.preprocessing.mean)) / torch.tensor(lite0.preprocessing.std)
    # 20-px windows every 12 px: the last ones reach past the border and are clipped
    ours = occlusion_maps(model, x, size=20, stride=12, fill=grey, batch_size=32)
    assert ours.rows == ours.cols == (0, 12, 24, 36, 48, 60, 72, 84)
    baseline = grey[:, None, None].expand_as(x)[None].contiguous()
    captum = Occlusion(lambda inputs: torch.softmax(model(inputs), 1)).attribute(
        x[None],
        sliding_window_shapes=(3, 20, 20),
        strides=(3, 12, 12),
        baselines=baseline,
        target=ours.target.class_index,
        perturbations_per_eval=32,
    )[0]
    delta = float((ours.pixel_drop() - captum[0].double()).abs().max())
    print(f"\nocclusion vs captum: max |Δ| {delta:.1e}")
    assert delta <= TOLERANCE
    assert torch.equal(captum[0], captum[1]) and torch.equal(captum[0], captum[2])
    assert hook_count(model) == 0


def test_maps_leave_no_hook_no_grad_and_the_mode_as_it_was(resnet18, samples):
    resnet18.zero_grad(set_to_none=True)  # pytorch-grad-cam's .backward() fills them; ours must not
    resnet18.train()
    try:
        cam_maps(resnet18, samples[:1], "layer4", "gradcam")
        with pytest.raises(Exception, match="does not depend"):  # a unit before the layer
            cam_maps(resnet18, samples[:1], "layer4", "gradcam", unit_target("layer1:0"))
        assert resnet18.training and hook_count(resnet18) == 0
        assert all(p.grad is None for p in resnet18.parameters())
    finally:
        resnet18.eval()


def _colour_bar_column(pixels: np.ndarray) -> np.ndarray:
    """The middle column of the colour bar (the figure's axes at x 0.82–0.86, y 0.04–0.80)."""
    height, width = pixels.shape[:2]
    x = int(0.84 * width)
    return pixels[int(0.20 * height) + 3 : int(0.96 * height) - 3, x].astype(int)


def test_cli_cam_over_imagenet_samples(cnntool, tmp_path):
    out = tmp_path / "cams"
    result = cnntool(
        "visualize",
        "cam",
        "efficientnet_lite0",
        "imagenet-samples",
        "-o",
        out,
        "--limit",
        "6",
        "--batch-size",
        "3",
        threads=1,
    )
    assert result.returncode == 0, result.stderr
    assert "layer: _relu1 (the last spatial layer)" in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 6 and sorted(out.glob("*.png")) == sorted(
        out / r["file"] for r in records
    )
    assert len(list(out.glob("*.npy"))) == 6
    first = records[0]
    assert first["target"] == {"kind": "class", "class": 243, "name": "bull mastiff"}
    assert (
        first["layer"] == "_relu1" and first["method"] == "gradcam" and first["map_shape"] == [7, 7]
    )
    assert np.load(first["raw"]).shape == (7, 7) and first["score"] > 5

    pixels = png(first["file"])
    # the colour bar: inferno from bright yellow on top to black at the bottom, monotonically
    bar = _colour_bar_column(pixels)
    brightness = bar.sum(axis=1)
    assert (np.diff(brightness) <= 3).all() and brightness[0] - brightness[-1] > 500
    assert np.abs(bar[0] - [252, 255, 164]).max() < 20 and np.abs(bar[-1] - [0, 0, 4]).max() < 20
    # the title band holds text, and the subtitle names the method and layer
    assert spread(pixels[: int(0.1 * pixels.shape[0]), : int(0.6 * pixels.shape[1])]) > 20
    assert find_plot_text(pixels, "Grad-CAM of _relu1", fontsize=9) is not None
    # the map sits on the dog (centre of the photo), not in a corner
    heat = upsample_normalized(torch.from_numpy(np.load(first["raw"])).clamp(min=0), (224, 224))
    row, col = divmod(int(heat.argmax()), 224)
    assert 50 < row < 170 and 40 < col < 150, (row, col)


def test_cli_occlusion_figure_and_record(cnntool, tmp_path):
    figure, raw = tmp_path / "occ.png", tmp_path / "occ.npz"
    result = cnntool(
        "visualize",
        "occlusion",
        "efficientnet_lite0",
        "imagenet-samples",
        "--size",
        "112",
        "--stride",
        "112",
        "--unit",
        "_blocks.10",
        "-o",
        figure,
        "--raw",
        raw,
        threads=1,
    )
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["positions"] == [2, 2] and record["target"]["name"] == "bull mastiff"
    assert (
        record["unit"]["layer"] == "_blocks.10"
        and record["min_probability"] < record["probability"]
    )
    saved = np.load(raw)
    assert saved["probability"].shape == (2, 2) and saved["unit"].shape == (2, 2)
    assert list(saved["rows"]) == [0, 112]
    pixels = png(figure)
    for title in ("most probable class, occluder centred here", "unoccluded: "):
        assert find_plot_text(pixels, title, fontsize=10) is not None, title


@pytest.mark.parametrize(
    "args",
    [
        ["cam", "resnet18", "x", "-o", "o", "--class", "1", "--unit", "layer4:1"],
        ["cam", "resnet18", "x", "-o", "o", "--method", "eigencam", "--class", "1"],
        ["cam", "resnet18", "x", "-o", "o", "--unit", "layer4"],
        ["occlusion", "resnet18", "x", "-o", "o.png", "--size", "8", "--stride", "9"],
    ],
)
def test_contradictions_are_usage_errors(args):
    from click.testing import CliRunner

    from cnntool.cli.main import cli

    result = CliRunner().invoke(cli, ["visualize", *args])
    assert result.exit_code == 2, result.output
