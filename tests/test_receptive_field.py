"""Receptive fields: published figures, and the analytic field against a gradient probe.

The probe: with every weight and bias positive and a positive input, every ReLU is active and
every path carries gradient, so the input pixels with a nonzero gradient of one output unit are
exactly that unit's receptive field (clipped to the image). Max pooling routes gradient to one
element per window only, so the probe swaps it for average pooling of the same geometry.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnntool.core.hooks import hook_count
from cnntool.core.receptive_field import ReceptiveField, receptive_fields


def meta_model(name):
    with torch.device("meta"):
        return torchvision.models.get_model(name)


@pytest.mark.parametrize(
    "name, layer, size",
    [
        ("alexnet", "features.10", 163),  # conv5
        ("alexnet", "features.12", 195),  # pool5: "each pool5 unit has a 195×195 receptive field"
        ("vgg16", "features.28", 196),  # conv5_3
        ("vgg16", "features.30", 212),  # pool5
    ],
)
def test_published_figures(name, layer, size):
    assert receptive_fields(meta_model(name))[layer].size == (size, size)


def test_alexnet_pool5_geometry_and_input_box():
    pool5 = receptive_fields(meta_model("alexnet"))["features.12"]
    assert pool5 == ReceptiveField(size=(195, 195), jump=(32, 32), start=(31.0, 31.0))
    assert pool5.input_box(0, 0) == (-66, -66, 129, 129)
    assert pool5.input_box(5, 2) == (94, -2, 289, 193)  # centres 31 + 5·32 and 31 + 2·32, ± 97
    assert pool5.input_box(5, 2, clip_to=(224, 224)) == (94, 0, 224, 193)


def test_global_pooling_flatten_and_linear_have_no_local_field():
    fields = receptive_fields(meta_model("resnet18"))
    assert fields["layer4"].size == (435, 435)
    assert "avgpool" not in fields and "fc" not in fields


def test_squeeze_excitation_makes_the_field_global():
    class SqueezeExcite(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 4, 1), nn.Sigmoid())

        def forward(self, x):
            x = self.conv(x)
            return x * self.gate(x)

    fields = receptive_fields(SqueezeExcite(), (3, 16, 16))
    assert fields["conv"].size == (3, 3)
    assert "gate" not in fields and "" not in fields


class Branchy(nn.Module):
    """Four branches of different fields, concatenated, with a residual add and a channel MLP.

    After the stem (size 3, jump 2, start 0) the branches cover, in input pixels:
    a [-1, 1]; b [-7, 7]; c [-3, 3]; d (zero padding on the right/bottom only) [-1, 9].
    Their union is [-7, 9]: size 17, start 1; the 3×3 mix adds 2 jumps per side: size 21.
    """

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.a = nn.Conv2d(4, 4, 1)
        self.b = nn.Sequential(
            nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        )
        self.c = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), nn.Conv2d(4, 4, 1))
        self.d = nn.Conv2d(4, 4, 5)
        self.mix = nn.Conv2d(16, 8, 3, padding=1)
        self.skip = nn.Conv2d(4, 8, 1)
        self.mlp = nn.Linear(8, 8)

    def forward(self, x):
        x = F.relu(self.stem(x))
        d = self.d(F.pad(x, (0, 4, 0, 4)))
        y = F.relu(self.mix(torch.cat([self.a(x), self.b(x), self.c(x), d], dim=1)))
        y = y + self.skip(x)
        return self.mlp(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def test_multi_branch_fields_are_the_union_over_paths():
    fields = receptive_fields(Branchy(), (3, 64, 64))
    assert {
        name: fields[name].size[0] for name in ("stem", "a", "b.0", "b.2", "c", "d", "mix")
    } == {"stem": 3, "a": 3, "b.0": 7, "b.2": 15, "c": 7, "d": 11, "mix": 21}
    assert fields["d"].start == (4.0, 4.0)
    assert fields["mix"] == ReceptiveField(size=(21, 21), jump=(2, 2), start=(1.0, 1.0))
    assert fields["mlp"] == fields["mix"] == fields[""]  # the per-position Linear keeps it


def positive_weights(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.uniform_(0.5, 1.0).div_(module.weight[0].numel())
                if module.bias is not None:
                    module.bias.uniform_(0.1, 0.2)
    return model.double().eval()


def probed_box(network: nn.Module, input_shape, i: int, j: int) -> tuple[int, int, int, int]:
    """The bounding box of the input pixels whose gradient of unit (i, j) is nonzero."""
    x = torch.rand(1, *input_shape, dtype=torch.float64).add_(0.5).requires_grad_()
    network(x)[0, :, i, j].sum().backward()
    rows = x.grad[0].abs().sum(0).ne(0).any(1).nonzero().flatten()
    cols = x.grad[0].abs().sum(0).ne(0).any(0).nonzero().flatten()
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1


@pytest.fixture(scope="module")
def alexnet_with_average_pools() -> nn.Module:
    model = torchvision.models.alexnet()
    for index, module in enumerate(model.features):
        if isinstance(module, nn.MaxPool2d):
            model.features[index] = nn.AvgPool2d(module.kernel_size, module.stride, module.padding)
    return positive_weights(model)


@pytest.mark.parametrize(
    "layer, unit",
    [
        ("features.10", (7, 7)),
        ("features.10", (0, 0)),
        ("features.12", (3, 3)),
        ("features.12", (0, 6)),
    ],
)
def test_alexnet_fields_match_a_gradient_probe(alexnet_with_average_pools, layer, unit):
    model, shape = alexnet_with_average_pools, (3, 256, 256)
    field = receptive_fields(model, shape)[layer]
    prefix = model.features[: int(layer.split(".")[1]) + 1]
    assert probed_box(prefix, shape, *unit) == field.input_box(*unit, clip_to=shape[1:])
    assert hook_count(model) == 0


@pytest.mark.parametrize("unit", [(16, 16), (0, 0), (31, 5)])
def test_multi_branch_field_matches_a_gradient_probe(unit):
    model, shape = positive_weights(Branchy()), (3, 64, 64)
    field = receptive_fields(model, shape)[""]
    assert field.size == (21, 21)
    assert probed_box(model, shape, *unit) == field.input_box(*unit, clip_to=shape[1:])
