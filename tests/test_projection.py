"""visualize deconv end to end: the task API against captum (where captum is right) and against
a hand-swapped activation (where captum silently returns the plain gradient), target selection,
gradient×input, SmoothGrad, the images and the command line.

tests/test_hooks.py already checks the backward rules themselves on full-size inputs; here the
inputs are small (64–112 px) and the targets go through `project`'s unit/class selection.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop, Saliency
from PIL import Image
from torch import nn

from cnntool.core.hooks import capture, hook_count
from cnntool.core.loading.models import load_model
from cnntool.errors import CnnToolError, UnknownNameError
from cnntool.io import overlays
from cnntool.io.figures import to_uint8
from cnntool.tasks.projection import Target, deconv, guided_backprop, project, saliency
from tests.backward_reference import hand_swapped, make, norm_close, quiet_captum
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
    assert act[result.target.position] == act.max() and result.value == pytest.approx(
        float(act.max())
    )
    for method, captum_cls in CAPTUM.items():
        wrapped = UnitModel(model, "features.8", 10, result.target.position)
        theirs = captum_cls(wrapped).attribute(x.clone(), target=0)[0]
        ours = project(model, x, method, layer="conv4", unit=10)
        assert norm_close(ours.map, theirs), method


def _lite0() -> nn.Module:
    return load_model("efficientnet_lite0").module


# Units chosen in mid-network layers; each model's rectifiers are functional or ReLU6, which
# captum does not hook.
@pytest.mark.parametrize(
    "name,layer,size",
    [
        ("googlenet", "inception4a", 112),
        ("mobilenet_v2", "features.10", 112),
        ("lite0", "_blocks.8", 112),
    ],
)
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
    assert torch.equal(
        guided_backprop(model, x, target_class=3), project(model, x, "guided", target_class=3).map
    )
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
        project(
            lite0.module,
            torch.zeros(1, 3, 64, 64),
            target_class="goldfsh",
            class_names=lite0.class_names,
        )
    named = project(
        lite0.module,
        torch.zeros(1, 3, 64, 64),
        "saliency",
        target_class="Goldfish",
        class_names=lite0.class_names,
    )
    assert named.target.class_index == 1 and named.target.class_name == "goldfish"


def test_the_command_line_targets_are_units_of_a_layer_or_one_class():
    assert Target.chosen("conv2", [3, 5], (1, 2)) == [
        Target.unit_of("conv2", 3, (1, 2)),
        Target.unit_of("conv2", 5, (1, 2)),
    ]
    assert Target.chosen("conv2") == [Target.unit_of("conv2")]  # its most active unit
    assert Target.chosen(None, class_="7") == [Target.logit(7)] and Target.chosen(None) == [
        Target.logit()
    ]
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
    result = cnntool(
        "visualize",
        "deconv",
        "lenet5-mnist",
        tmp_path / "d.png",
        "--layer",
        "conv2",
        "--unit",
        "3",
        "--unit",
        "7",
        "--method",
        "deconv",
        "-o",
        out,
        "--raw",
        raw,
    )
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
    for record, projection in zip(records, maps, strict=True):
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
        shown = np.kron(to_uint8(np.clip(crop / (2 * limit) + 0.5, 0, 1))[..., None], block).repeat(
            3, axis=2
        )
        left = find(pixels[py : py + patch.shape[0]], shown, tolerance=1)
        assert len(left) == 1 and left[0][0] < px, record  # the projection, to the patch's left
        whole = pixels[py : py + 224, px + patch.shape[1] :]
        ys, xs = np.nonzero(colour_mask(whole, (255, 220, 0), 30))
        assert ys.max() - ys.min() + 1 == (y1 - y0) * 8 and xs.max() - xs.min() + 1 == (x1 - x0) * 8
        assert find_styled_text(pixels[:py], f"unit {record['target']['unit']} at", 15)
    for title in ("projection", "image patch", "receptive field"):
        assert find_styled_text(pixels[:60], title, 17, bold=True), title
    bars = colour_bars(pixels, "gray")
    assert len({top for _, top, _ in bars}) == 2  # one colour bar per row, with its numbers
    x, top, bottom = bars[-1]
    assert (pixels[top:bottom, x + 4 :].min(axis=-1) < 100).sum() > 50
    bad = cnntool(
        "visualize", "deconv", "lenet5-mnist", tmp_path / "d.png", "--class", "ten", "-o", out
    )
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
    result = cnntool(
        "visualize",
        "deconv",
        "lenet5-mnist",
        tmp_path / "g.png",
        "--layer",
        "conv2",
        "--unit",
        "3",
        "--position",
        "0,0",
        "-o",
        out,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["box"][0] < 0  # the field reaches past the top
    pixels = png(out)
    assert (pixels.max(axis=-1) == 0).mean() < 0.05
    twice = tmp_path / "p2.png"
    assert (
        cnntool(
            "visualize",
            "deconv",
            "lenet5-mnist",
            tmp_path / "g.png",
            "--layer",
            "conv2",
            "--unit",
            "3",
            "--position",
            "0,0",
            "--scale",
            "2",
            "-o",
            twice,
        ).returncode
        == 0
    )
    assert abs(png(twice).shape[0] - 2 * pixels.shape[0]) <= 4
    assert (
        cnntool(
            "visualize",
            "deconv",
            "lenet5-mnist",
            tmp_path / "g.png",
            "--method",
            "saliency",
            "-o",
            out,
        ).returncode
        == 0
    )
    pixels = png(out)
    assert (
        len(find(pixels, np.kron(grey[..., None], np.ones((8, 8, 1), np.uint8)).repeat(3, axis=2)))
        == 1
    )
    assert colour_bars(pixels, "inferno") and find_styled_text(pixels[:60], "image", 17, bold=True)


# ---------------------------------------------------------------------------------------------
# batches (#23)


@pytest.fixture(scope="module")
def four_photos():
    """Four imagenet-samples photos at 112×112, normalized as lite0 takes them."""
    from cnntool.core.data import BatchStream, open_data

    lite0 = load_model("efficientnet_lite0")
    x = next(
        iter(BatchStream(open_data("imagenet-samples").head(4), lite0.preprocessing, batch_size=4))
    ).inputs
    return lite0, nn.functional.interpolate(x, size=(112, 112), mode="bilinear", antialias=True)


def _batch_cases():
    from cnntool.tasks.integrated_gradients import IntegratedGradients
    from cnntool.tasks.projection import SmoothGrad

    return [
        ("guided", {}),
        ("deconv", {}),
        ("saliency", {}),
        ("saliency", {"times_input": True}),
        ("saliency", {"smooth": SmoothGrad(3, abs="per-sample")}),
        ("guided", {"smooth": SmoothGrad(3)}),
        ("ig", {"ig": IntegratedGradients(steps=6, baseline="0", batch_size=1)}),
    ]


def _relative(batch, single):
    return max(
        float((b.map - s.map).abs().max() / s.map.abs().max())
        for b, s in zip(batch, single, strict=True)
    )


@pytest.mark.parametrize("name", ["lite0", "resnet18"])
def test_a_batch_gives_the_maps_of_its_images_one_at_a_time(name, four_photos):
    """Every method on a batch of 4 photos against the same 4 one at a time, class targets
    (each image's own top class) and unit targets (each image's own strongest unit and
    position). Measured on the 2-core CPU: lite0 bit-identical (0) for every case here;
    resnet18 (random init) 1e-7 to 9e-7, the batched convolutions' rounding. Two rounding
    effects are left out, on purpose, and stated instead:
    - IG with several path points per forward (here 1): lite0's convolutions round otherwise
      with 16 rows (4 points × 4 images) than with 4, and its IG maps move by up to 8e-4;
    - SmoothGrad on resnet18: a noisy copy whose ReLU or max-pool decision lies within that
      rounding flips it, and the map moves by 1e-2 (one photo of four, seen here)."""
    from cnntool.tasks.projection import project_batch

    lite0, x = four_photos
    model = lite0.module if name == "lite0" else make("resnet18")
    for method, options in _batch_cases():
        if name == "resnet18" and ("smooth" in options or method == "ig"):
            continue
        for target in (
            Target.logit(),
            Target.unit_of("_blocks.8" if name == "lite0" else "layer3"),
        ):
            batch = project_batch(model, x, method, target, **options)
            single = [project(model, image[None], method, target, **options) for image in x]
            assert [b.target for b in batch] == [s.target for s in single]
            assert len({b.target for b in batch}) > 1 or target.kind == "unit"  # per-image targets
            assert [b.value for b in batch] == pytest.approx([s.value for s in single], rel=1e-5)
            assert _relative(batch, single) <= 1e-6, (method, options, target.kind)
    assert hook_count(model) == 0


@quiet_captum
def test_plain_gradient_methods_run_without_the_rectifier_routing(monkeypatch, four_photos):
    """Saliency, gradient×input, IG and SmoothGrad of saliency are plain autograd: the
    routing mode is never entered (a spy), and the maps still equal captum's on a batch."""
    from captum.attr import InputXGradient
    from captum.attr import IntegratedGradients as CaptumIG

    from cnntool.core import hooks
    from cnntool.tasks.integrated_gradients import IntegratedGradients
    from cnntool.tasks.projection import SmoothGrad, project_batch

    entered = []
    original = hooks._SubstitutionMode.__enter__
    monkeypatch.setattr(
        hooks._SubstitutionMode, "__enter__", lambda self: entered.append(self) or original(self)
    )
    model, x = make("resnet18"), four_photos[1]
    saliency_maps = project_batch(model, x, "saliency", Target.logit(7))
    times = project_batch(model, x, "saliency", Target.logit(7), times_input=True)
    ig = project_batch(
        model, x, "ig", Target.logit(7), ig=IntegratedGradients(steps=4, baseline="0", batch_size=4)
    )
    smooth = project_batch(
        model, x, "saliency", Target.logit(7), smooth=SmoothGrad(2, abs="per-sample")
    )
    assert entered == [] and saliency_maps[0].substituted == {} and ig[0].uncovered == {}
    stack = lambda projections: torch.stack([p.map for p in projections])  # noqa: E731
    assert norm_close(stack(saliency_maps), Saliency(model).attribute(x.clone(), target=7))
    assert norm_close(stack(times), InputXGradient(model).attribute(x.clone(), target=7))
    theirs = CaptumIG(model).attribute(
        x.clone(), target=7, n_steps=4, method="gausslegendre", internal_batch_size=16
    )
    assert (stack(ig) - theirs).abs().max() <= 1e-5 * theirs.abs().max()
    drawn = []
    SmoothGrad(2, abs="per-sample")(lambda noisy: drawn.append(noisy) or noisy, x)
    reference = sum(Saliency(model).attribute(d.clone(), target=7) for d in drawn) / 2
    assert norm_close(stack(smooth), reference)
    assert stack(smooth).shape == x.shape and len(drawn) == 2
    # guided backprop and deconvnet do need it
    project_batch(model, x[:1], "guided", Target.logit(7))
    assert len(entered) == 1


def test_cli_over_a_folder_writes_a_figure_and_a_record_per_image(tmp_path, cnntool):
    from cnntool.core.samples import mnist_5k

    digits, _ = mnist_5k()
    data = tmp_path / "digits"
    data.mkdir()
    for i in range(5):
        Image.fromarray(np.asarray(digits[i]).squeeze().astype(np.uint8)).save(data / f"d{i}.png")
    (data / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "figures"
    result = cnntool(
        "visualize",
        "deconv",
        "lenet5-mnist",
        data,
        "--layer",
        "relu3",
        "--unit",
        "3",
        "-o",
        out,
        "--batch-size",
        "2",
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 5 and sorted(p.name for p in out.glob("*.png")) == sorted(
        Path(r["figure"]).name for r in records
    )
    assert [Path(r["image"]).name for r in records] == [f"d{i}.png" for i in range(5)]
    assert all(r["target"] == {"kind": "unit", "layer": "relu3", "unit": 3} for r in records)
    assert "skipped 1 unreadable image(s) of 6" in result.stderr
    # the maps equal the one-image command's
    single = cnntool(
        "visualize",
        "deconv",
        "lenet5-mnist",
        data / "d2.png",
        "--layer",
        "relu3",
        "--unit",
        "3",
        "-o",
        tmp_path / "one.png",
    )
    assert single.returncode == 0, single.stderr
    assert json.loads(single.stdout)["stats"] == pytest.approx(records[2]["stats"], rel=1e-5)
    inside = cnntool("visualize", "deconv", "lenet5-mnist", data, "-o", data / "out")
    assert (
        inside.returncode == 1
        and "inside DATA" in inside.stderr
        and "Traceback" not in inside.stderr
    )
    many = cnntool("visualize", "deconv", "lenet5-mnist", data, "-o", tmp_path / "x.png")
    assert many.returncode == 1 and "give -o a folder" in many.stderr
    raw = cnntool(
        "visualize", "deconv", "lenet5-mnist", data, "-o", out, "--raw", tmp_path / "r.npy"
    )
    assert raw.returncode == 2 and "--raw" in raw.stderr


@quiet_captum
def test_smoothgrad_forwards_what_captum_noise_tunnel_forwards():
    """Images forwarded, counted by a pre-hook on the model: with a class (or a unit at a
    position) given, exactly captum NoiseTunnel's samples × N; with the target chosen on the
    image (the predicted class, a unit's default position), one clean row per image more.
    The record's value is the target's mean over the very noisy copies the map averages."""
    from captum.attr import NoiseTunnel

    from cnntool.tasks.projection import SmoothGrad, project_batch

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU6(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
    ).eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    samples, rows = 4, []
    handle = model.register_forward_pre_hook(lambda _m, args: rows.append(len(args[0])))

    def forwarded(run):
        rows.clear()
        run()
        return list(rows)

    smooth, class_2 = SmoothGrad(samples, abs="per-sample"), Target.logit(2)
    theirs = forwarded(
        lambda: NoiseTunnel(Saliency(model)).attribute(
            x.clone(), nt_type="smoothgrad", nt_samples=samples, target=2, nt_samples_batch_size=1
        )
    )
    assert theirs == [3] * samples
    given = {}
    for method in ("saliency", "guided"):

        def run(method=method):
            options = {"smooth": smooth if method == "saliency" else SmoothGrad(samples)}
            given[method] = project_batch(model, x, method, class_2, **options)

        assert forwarded(run) == theirs, method
    unit = Target.unit_of("0", 1, (2, 3))
    assert (
        forwarded(lambda: project_batch(model, x, "guided", unit, smooth=SmoothGrad(samples)))
        == theirs
    )
    # chosen on the image: one clean forward of the N images, no backward
    assert (
        forwarded(lambda: project_batch(model, x, "saliency", Target.logit(), smooth=smooth))
        == [3] + theirs
    )
    default_position = Target.unit_of("0", 1)
    assert (
        forwarded(lambda: project_batch(model, x, "deconv", default_position, smooth=SmoothGrad(4)))
        == [3] + theirs
    )
    handle.remove()
    # the value: class 2's logit averaged over the noisy copies SmoothGrad draws
    drawn = []
    smooth(lambda noisy: drawn.append(noisy) or noisy, x)
    with torch.no_grad():
        expected = sum(model(d)[:, 2].double() for d in drawn) / samples
    assert [p.value for p in given["saliency"]] == pytest.approx(expected.tolist(), rel=1e-6)
    assert [p.target.class_index for p in given["saliency"]] == [2, 2, 2]
    # the parameters are frozen while it runs, and get their flags back, also on an error
    model[0].bias.requires_grad_(False)
    with pytest.raises(CnnToolError, match="out of range"):
        project_batch(model, x, "saliency", Target.logit(9), smooth=smooth)
    assert [p.requires_grad for p in model.parameters()] == [True, False, True, True]
