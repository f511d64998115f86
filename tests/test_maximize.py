"""visualize maximize: the quality bars on the built-in models, the parameterizations, the
transforms and regularizers, and the command line. Step counts are cut to keep this fast."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cnntool.core.hooks import capture, hook_count
from cnntool.core.images import load_image
from cnntool.core.models import load_model
from cnntool.core.samples import photos
from cnntool.errors import CnnToolError
from cnntool.tasks.maximize import (MaximizeConfig, gaussian_blur, imagenet_defaults, maximize,
                                    objective, small_defaults, with_overrides)
from tests.test_cli import ENV


@pytest.fixture(scope="module")
def lenet():
    return load_model("lenet5-mnist")


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet_lite0")


def test_lenet_class_logits_give_images_of_their_class(lenet):
    classes = [0, 3, 7, 8]
    goal = objective(lenet.module, "class", classes)
    results = maximize(lenet.module, lenet.preprocessing, goal,
                       with_overrides(small_defaults(), steps=64), seed=1)
    batch = torch.stack([r.pixels for r in results])
    assert batch.shape == (4, 1, 28, 28) and 0 <= batch.min() and batch.max() <= 1
    with torch.no_grad():
        probs = torch.softmax(lenet.module(lenet.preprocessing.normalize(batch)), 1)
    assert (probs[range(4), classes] > 0.9).all(), probs[range(4), classes]
    assert all(r.history[-1] > r.history[0] for r in results)
    assert hook_count(lenet.module) == 0


def test_lite0_channels_beat_their_best_activation_on_the_sample_photos(lite0):
    layer, units = "_blocks.5", [3, 10]
    x = torch.stack([lite0.preprocessing(load_image(p)) for p in photos()])
    with torch.no_grad(), capture(lite0.module, [layer], stop_early=True) as cap:
        cap.run(x)
    best_on_photos = cap.activations[layer].flatten(2).mean(2).amax(0)[units]
    goal = objective(lite0.module, "channel", units, layer)
    results = maximize(lite0.module, lite0.preprocessing, goal,
                       with_overrides(imagenet_defaults(), steps=24))
    values = torch.tensor([r.value for r in results])
    assert (values > best_on_photos).all(), (values, best_on_photos)


def test_fourier_start_image_is_reproduced_and_neuron_objective(lite0):
    start = lite0.preprocessing.to_pixels(load_image(photos()[1]))[:, :64, :64]
    small = type(lite0.preprocessing)(crop=(64, 64), resize=64, mean=(0.5,) * 3, std=(0.5,) * 3)
    still = MaximizeConfig(steps=1, lr=1e-12, pad=0, jitter=0, scales=(1.0, 1.0), rotate=0.0)
    goal = objective(lite0.module, "neuron", [2], "_blocks.3", position=(1, 1))
    for param in ("fourier", "pixel"):
        result = maximize(lite0.module, small, goal, with_overrides(still, param=param),
                          start=start)[0]
        inside = (start > 0.02) & (start < 0.98)
        assert torch.allclose(result.pixels[inside], start[inside], atol=1e-4), param
    with pytest.raises(CnnToolError, match="outside layer"):
        maximize(lite0.module, small, objective(lite0.module, "neuron", [2], "_blocks.3",
                                                position=(99, 0)), still)


def test_transforms_and_regularizers_run_and_are_seeded(lenet):
    config = MaximizeConfig(param="pixel", steps=6, lr=0.1, pad=3, jitter=2, scales=(0.8, 1.2),
                            rotate=20.0, l2=0.01, tv=0.01, blur_every=2, blur_sigma=1.0)
    goal = objective(lenet.module, "channel", [1, 2], "conv2")
    a = maximize(lenet.module, lenet.preprocessing, goal, config, seed=4)
    b = maximize(lenet.module, lenet.preprocessing, goal, config, seed=4)
    c = maximize(lenet.module, lenet.preprocessing, goal, config, seed=5)
    assert torch.equal(a[0].pixels, b[0].pixels) and not torch.equal(a[0].pixels, c[0].pixels)
    flat = torch.full((1, 3, 9, 9), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat)


def test_defaults_follow_the_input_size_and_mistakes_are_errors(lenet):
    assert MaximizeConfig.for_input((1, 28, 28)) == small_defaults()
    assert MaximizeConfig.for_input((3, 224, 224)).param == "fourier"
    with pytest.raises(CnnToolError, match="needs a layer"):
        objective(lenet.module, "channel", [0])
    with pytest.raises(CnnToolError, match="out of range"):
        maximize(lenet.module, lenet.preprocessing, objective(lenet.module, "class", [10]),
                 with_overrides(small_defaults(), steps=1))


def test_cli_writes_grid_unit_images_and_records(tmp_path):
    out = tmp_path / "digits.png"
    result = subprocess.run(
        [sys.executable, "-m", "cnntool", "visualize", "maximize", "lenet5-mnist",
         "--class", "3", "--class", "8", "--steps", "48", "-o", str(out)],
        capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["unit"], r["name"], r["param"]) for r in records] == [(3, "3", "pixel"),
                                                                      (8, "8", "pixel")]
    assert all(r["value"] > 5 for r in records)
    assert Image.open(out).size == (2 * (28 + 2) + 2, 28 + 2 + 2)  # two tiles, 2-px gaps
    assert np.asarray(Image.open(tmp_path / "digits_unit8.png")).shape == (28, 28)
    bad = subprocess.run([sys.executable, "-m", "cnntool", "visualize", "maximize",
                          "lenet5-mnist", "--layer", "conv2", "-o", str(out)],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert bad.returncode == 1 and "--unit" in bad.stderr and "Traceback" not in bad.stderr


def test_hand_written_penalty_gradient_equals_autograd():
    from cnntool.tasks.maximize import penalized

    pixels = torch.rand(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    config = MaximizeConfig(l2=0.3, tv=0.07)
    weights = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    (penalized(pixels, config) * weights).sum().backward()
    ours = pixels.grad.clone()
    pixels.grad = None
    reference = (0.3 * ((pixels - 0.5) ** 2).sum()
                 + 0.07 * ((pixels[:, :, 1:] - pixels[:, :, :-1]).abs().sum()
                           + (pixels[..., 1:] - pixels[..., :-1]).abs().sum()))
    (reference + (pixels * weights).sum()).backward()
    assert torch.allclose(ours, pixels.grad, atol=1e-12)


def test_blur_equals_a_separable_convolution():
    import torch.nn.functional as F

    x = torch.rand(2, 3, 12, 10, dtype=torch.float64)
    for sigma in (0.5, 1.0, 1.7):
        radius = int(math.ceil(2 * sigma))
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
        taps = taps / taps.sum()
        padded = F.pad(x, (radius,) * 4, mode="reflect")
        rows = F.conv2d(padded, taps.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
        expected = F.conv2d(rows, taps.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        assert torch.allclose(gaussian_blur(x, sigma), expected, atol=1e-12), sigma


def test_views_shift_the_same_way_with_and_without_resampling():
    from cnntool.tasks.maximize import view

    x = torch.rand(1, 2, 16, 20, dtype=torch.float64)
    shifted = view(x, shift=(2, -3), pad=4)
    assert torch.equal(shifted[:, :, 2:, :-3], x[:, :, :-2, 3:])  # moved down 2, left 3
    assert torch.equal(shifted[:, :, 1, 5], x[:, :, 1, 8])  # row -1 mirrors row 1
    assert torch.equal(view(x, shift=(2, -3)), torch.roll(x, (2, -3), (2, 3)))
    # a resampled view (tiny rotation) moves the same way; borders differ (symmetric mirror)
    warped = view(x, shift=(2, -3), degrees=1e-9)
    assert torch.allclose(warped[:, :, 2:, :-3], x[:, :, :-2, 3:], atol=1e-6)
    # rotations turn about the centre: 180° flips both axes of a non-square image, and 90°
    # turns a square one as rot90 does
    assert torch.allclose(view(x, degrees=180.0), x.flip(2, 3), atol=1e-6)
    square = torch.rand(1, 1, 9, 9, dtype=torch.float64)
    assert torch.allclose(view(square, degrees=90.0), torch.rot90(square, 1, (2, 3)), atol=1e-6)


def test_our_adam_is_torch_adam():
    from cnntool.tasks.maximize import _Adam

    ours = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    theirs = ours.detach().clone().requires_grad_()
    ours_step, theirs_step = _Adam(ours, lr=0.05), torch.optim.Adam([theirs], lr=0.05)
    for k in range(6):
        grad = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(k))
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        ours_step.step()
        theirs_step.step()
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
