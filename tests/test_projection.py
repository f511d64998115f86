"""visualize deconv end to end: the task API against captum (where captum is right) and against
a hand-swapped activation (where captum silently returns the plain gradient), target selection,
gradient×input, SmoothGrad, the images and the command line.

tests/test_hooks.py already checks the backward rules themselves on full-size inputs; here the
inputs are small (64–112 px) and the targets go through `project`'s unit/class selection.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop, Saliency
from PIL import Image
from torch import nn

from cnntool.core.hooks import capture, hook_count
from cnntool.core.models import load_model
from cnntool.errors import CnnToolError, UnknownNameError
from cnntool.io import overlays
from cnntool.tasks.projection import Target, deconv, guided_backprop, project, saliency
from tests.backward_reference import hand_swapped, make, norm_close, quiet_captum
from cnntool.io.figures import to_uint8
from tests.pixels import colour_bars, colour_mask, find, find_styled_text, png

CAPTUM = {"guided": GuidedBackprop, "deconv": Deconvolution, "saliency": Saliency}


def image(size: int) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))


class UnitModel(nn.Module):
    """The output of one unit as a 1-logit model, so captum can attribute a unit."""

    def __init__(self, model, layer, unit, position):
        super().__init__()
        self.model, self.layer, self.unit, self.position = model, layer, unit, position

    def forward(self, x):
        with capture(self.model, [self.layer], detach=False, stop_early=True) as cap:
            cap.run(x)
        return cap.outputs[self.layer][:, self.unit, self.position[0], self.position[1], None]


@quiet_captum
@pytest.mark.parametrize("name,size", [("alexnet", 112), ("vgg16", 64), ("resnet18", 112)])
def test_class_projections_equal_captum(name, size):
    model, x = make(name), image(size)
    for method, captum_cls in CAPTUM.items():
        ours = project(model, x, method, target_class=7)
        theirs = captum_cls(model).attribute(x.clone(), target=7)[0]
        assert ours.target.class_index == 7
        assert ours.map.shape == (3, size, size) and ours.map.dtype == torch.float32
        assert norm_close(ours.map, theirs), method
    assert hook_count(model) == 0


@quiet_captum
def test_unit_projection_at_its_strongest_position_equals_captum():
    model, x = make("alexnet"), image(112)
    result = project(model, x, "guided", layer="conv4", unit=10)  # alias -> features.8
    with torch.no_grad(), capture(model, ["features.8"]) as cap:
        model(x)
    act = cap.activations["features.8"][0, 10]
    assert result.target.layer == "features.8"
    assert act[result.target.position] == act.max() and result.value == pytest.approx(float(act.max()))
    for method, captum_cls in CAPTUM.items():
        wrapped = UnitModel(model, "features.8", 10, result.target.position)
        theirs = captum_cls(wrapped).attribute(x.clone(), target=0)[0]
        ours = project(model, x, method, layer="conv4", unit=10)
        assert norm_close(ours.map, theirs), method


def _lite0() -> nn.Module:
    return load_model("efficientnet_lite0").module


# Units chosen in mid-network layers; each model's rectifiers are functional or ReLU6, which
# captum does not hook.
@pytest.mark.parametrize("name,layer,size", [
    ("googlenet", "inception4a", 112), ("mobilenet_v2", "features.10", 112),
    ("lite0", "_blocks.8", 112)])
def test_functional_relu_and_relu6_models_equal_a_hand_reference(monkeypatch, name, layer, size):
    model = _lite0() if name == "lite0" else make(name)
    x = image(size)
    plain = project(model, x, "saliency", layer=layer, times_input=False)
    plain_grad = _plain_gradient(model, x, layer, plain.target)
    for method in ("guided", "deconv"):
        ours = project(model, x, method, layer=layer)
        assert ours.target == plain.target  # the strongest unit, at its strongest position
        assert sum(ours.substituted.values()) > 0 and not ours.uncovered
        assert not norm_close(ours.map, plain_grad, 1e-2), method
        with monkeypatch.context() as patch:
            hand_swapped(patch, method)
            reference = _plain_gradient(model, x, layer, ours.target)
        assert norm_close(ours.map, reference), method


def _plain_gradient(model, x, layer, target):
    x = x.clone().requires_grad_()
    with capture(model, [layer], detach=False, stop_early=True) as cap:
        cap.run(x)
    value = cap.outputs[layer][0, target.unit][target.position]
    return torch.autograd.grad(value, x)[0][0]


def test_api_returns_raw_maps_and_gradient_times_input_and_smoothgrad():
    model, x = make("alexnet"), image(64)
    times = project(model, x, "saliency", target_class=3, times_input=True)
    xg = x.clone().requires_grad_()
    plain = torch.autograd.grad(model(xg)[0, 3], xg)[0][0]
    assert torch.allclose(times.map, plain * x[0], atol=1e-7)
    assert torch.allclose(saliency(model, x, target_class=3), plain.abs(), atol=1e-7)
    assert torch.equal(guided_backprop(model, x, target_class=3),
                       project(model, x, "guided", target_class=3).map)
    assert deconv(model, x, target_class=3).shape == (3, 64, 64)
    smooth = project(model, x, "guided", target_class=3, smooth_samples=3, seed=5)
    again = project(model, x, "guided", target_class=3, smooth_samples=3, seed=5)
    assert torch.equal(smooth.map, again.map)
    assert not torch.allclose(smooth.map, guided_backprop(model, x, target_class=3))
    assert smooth.to_record()["smooth_samples"] == 3


def test_target_mistakes_are_one_sentence_errors():
    loaded = load_model("lenet5-mnist")
    x = torch.zeros(1, 1, 28, 28)
    with pytest.raises(CnnToolError, match="out of range"):
        project(loaded.module, x, layer="conv2", unit=64)
    with pytest.raises(CnnToolError, match="outside layer"):
        project(loaded.module, x, layer="conv2", unit=0, position=(28, 0))
    with pytest.raises(CnnToolError, match="no spatial positions"):
        project(loaded.module, x, layer="linear1", unit=0, position=(0, 0))
    with pytest.raises(UnknownNameError, match="did you mean 'conv1'"):
        project(loaded.module, x, layer="conv11")
    with pytest.raises(UnknownNameError, match="did you mean '3'"):
        project(loaded.module, x, target_class="3.", class_names=loaded.class_names)
    lite0 = load_model("efficientnet_lite0")
    with pytest.raises(UnknownNameError, match="goldfish"):
        project(lite0.module, torch.zeros(1, 3, 64, 64), target_class="goldfsh",
                class_names=lite0.class_names)
    named = project(lite0.module, torch.zeros(1, 3, 64, 64), "saliency", target_class="Goldfish",
                    class_names=lite0.class_names)
    assert named.target.class_index == 1 and named.target.class_name == "goldfish"


def test_the_command_line_targets_are_units_of_a_layer_or_one_class():
    assert Target.chosen("conv2", [3, 5], (1, 2)) == [Target.unit_of("conv2", 3, (1, 2)),
                                                       Target.unit_of("conv2", 5, (1, 2))]
    assert Target.chosen("conv2") == [Target.unit_of("conv2")]  # its most active unit
    assert Target.chosen(None, class_="7") == [Target.logit(7)] and Target.chosen(None) == [Target.logit()]
    with pytest.raises(CnnToolError, match="need --layer"):
        Target.chosen(None, [3])
    with pytest.raises(CnnToolError, match="not both"):
        Target.chosen("conv2", class_="tabby cat")


def test_images_are_normalized_as_in_the_papers():
    raw = np.zeros((3, 8, 8), np.float32)
    raw[0, 2, 3], raw[1, 4, 4] = 2.0, -2.0
    signed = np.asarray(overlays.projection_image(raw, "guided"))
    assert tuple(signed[0, 0]) == (128, 128, 128)  # zero is mid-grey
    assert signed[2, 3, 0] == 255 and signed[4, 4, 1] == 0
    gray = overlays.projection_image(raw, "saliency")
    assert gray.mode == "L" and np.asarray(gray)[4, 4] == 255 and np.asarray(gray)[0, 0] == 0
    crop = overlays.crop_box(np.ones((1, 4, 4)), (-2, 2, 2, 6))
    assert crop.shape == (1, 4, 4) and crop[:, :2].sum() == 0 and crop[:, 2:, :2].sum() == 4


def test_cli_writes_panel_raw_maps_and_records(tmp_path, cnntool):
    from cnntool.core.samples import mnist_5k

    digits, labels = mnist_5k()
    Image.fromarray(np.asarray(digits[0]).squeeze().astype(np.uint8)).save(tmp_path / "d.png")
    out, raw = tmp_path / "p.png", tmp_path / "p.npy"
    result = cnntool("visualize", "deconv", "lenet5-mnist", tmp_path / "d.png", "--layer", "conv2",
                     "--unit", "3", "--unit", "7", "--method", "deconv", "-o", out, "--raw", raw)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["target"]["unit"] for r in records] == [3, 7]
    assert all(r["method"] == "deconv" and "box" in r and r["stats"]["l2"] > 0 for r in records)
    maps = np.load(raw)
    assert maps.shape == (2, 1, 28, 28) and maps.dtype == np.float32
    # Zeiler & Fergus's layout, a row per unit: the projection inside the unit's receptive
    # field, stretched to ±its 99th percentile (0 mid-grey) | the image patch of the same box |
    # the whole digit with the box outlined; all enlarged by whole numbers, nearest neighbour
    pixels = png(out)
    digit = np.asarray(Image.open(tmp_path / "d.png"), dtype=np.uint8)
    for record, projection in zip(records, maps):
        y0, x0, y1, x1 = record["box"]
        y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, 28), min(x1, 28)
        k = 224 // max(y1 - y0, x1 - x0)
        block = np.ones((k, k, 1), np.uint8)
        patch = np.kron(digit[y0:y1, x0:x1, None], block).repeat(3, axis=2)
        hits = find(pixels, patch)
        assert len(hits) == 1, record  # the image patch, exactly
        px, py = hits[0]
        crop = projection[0, y0:y1, x0:x1]
        limit = np.percentile(np.abs(crop[crop != 0]), 99)
        shown = np.kron(to_uint8(np.clip(crop / (2 * limit) + 0.5, 0, 1))[..., None], block).repeat(3, axis=2)
        left = find(pixels[py:py + patch.shape[0]], shown, tolerance=1)
        assert len(left) == 1 and left[0][0] < px, record  # the projection, to the patch's left
        whole = pixels[py:py + 224, px + patch.shape[1]:]
        ys, xs = np.nonzero(colour_mask(whole, (255, 220, 0), 30))
        assert ys.max() - ys.min() + 1 == (y1 - y0) * 8 and xs.max() - xs.min() + 1 == (x1 - x0) * 8
        assert find_styled_text(pixels[:py], f"unit {record['target']['unit']} at", 15)
    for title in ("projection", "image patch", "receptive field"):
        assert find_styled_text(pixels[:60], title, 17, bold=True), title
    bars = colour_bars(pixels, "gray")
    assert len({top for _, top, _ in bars}) == 2  # one colour bar per row, with its numbers
    x, top, bottom = bars[-1]
    assert (pixels[top:bottom, x + 4:].min(axis=-1) < 100).sum() > 50
    bad = cnntool("visualize", "deconv", "lenet5-mnist", tmp_path / "d.png", "--class", "ten", "-o", out)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


def test_deconv_figure_has_no_black_padding_and_keeps_a_class_whole(tmp_path, cnntool):
    """A field that reaches past the image is shown as the part inside it: on a digit with
    no black pixels, a unit at the corner leaves under 5% pure black (the padding was a third
    of the patch panel); a class target shows the whole image beside its heat map (inferno,
    with its colour bar); --scale 2 doubles the figure."""
    from cnntool.core.samples import mnist_5k

    digits, _ = mnist_5k()
    grey = (np.asarray(digits[0]).squeeze().astype(np.float32) * 0.5 + 100).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    out = tmp_path / "p.png"
    result = cnntool("visualize", "deconv", "lenet5-mnist", tmp_path / "g.png", "--layer", "conv2", "--unit", "3",
                     "--position", "0,0", "-o", out)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["box"][0] < 0  # the field reaches past the top
    pixels = png(out)
    assert (pixels.max(axis=-1) == 0).mean() < 0.05
    twice = tmp_path / "p2.png"
    assert cnntool("visualize", "deconv", "lenet5-mnist", tmp_path / "g.png", "--layer", "conv2", "--unit", "3",
                   "--position", "0,0", "--scale", "2", "-o", twice).returncode == 0
    assert abs(png(twice).shape[0] - 2 * pixels.shape[0]) <= 4
    assert cnntool("visualize", "deconv", "lenet5-mnist", tmp_path / "g.png", "--method", "saliency",
                   "-o", out).returncode == 0
    pixels = png(out)
    assert len(find(pixels, np.kron(grey[..., None], np.ones((8, 8, 1), np.uint8)).repeat(3, axis=2))) == 1
    assert colour_bars(pixels, "inferno") and find_styled_text(pixels[:60], "image", 17, bold=True)
