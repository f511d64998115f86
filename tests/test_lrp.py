"""Layer-wise relevance propagation (`visualize deconv --method lrp-…`, core/relevance.py):
relevances computed by hand on a tiny network, conservation on bias-free networks, and equality
with zennit 0.5.1 (the LRP reference implementation) on torchvision's vgg16_bn and resnet18
(random weights) and on efficientnet_lite0 (its real weights), each with zennit's canonizers."""

from __future__ import annotations

import json
import types

import pytest
import torch
import torchvision
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import AttributeCanonizer, CompositeCanonizer, SequentialMergeBatchNorm
from zennit.composites import (
    EpsilonAlpha2Beta1Flat,
    EpsilonPlusFlat,
    SpecialFirstLayerMapComposite,
    layer_map_base,
)
from zennit.layer import Sum
from zennit.rules import Epsilon, Flat
from zennit.torchvision import ResNetCanonizer, VGGCanonizer
from zennit.types import Convolution, Linear

from cnntool.core.relevance import Composite, propagate_relevance
from cnntool.errors import CnnToolError
from cnntool.tasks.lrp import LRP, class_relevance, relevance_batch
from cnntool.tasks.projection import project, project_batch
from tests.pixels import colour_bars, find_styled_text, png

# ---------------------------------------------------------------------------------------------
# by hand


def hand_model() -> nn.Sequential:
    """x (a 2×1×1 "image") -> flatten -> linear [[1, −2], [3, 1]] + [0, 1] -> ReLU -> linear
    [1, 0.25] − 0.5. At x = (2, −1): hidden (4, 6), output 5."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 1.0]]))
        model[1].bias.copy_(torch.tensor([0.0, 1.0]))
        model[3].weight.copy_(torch.tensor([[1.0, 0.25]]))
        model[3].bias.copy_(torch.tensor([-0.5]))
    return model.eval()


X = torch.tensor([2.0, -1.0]).view(1, 2, 1, 1)


def hand_relevance(rule: str, first: str | None = None, epsilon: float = 0.0) -> torch.Tensor:
    model = hand_model()
    composite = Composite(conv=rule, dense=rule, first=first or rule, epsilon=epsilon)
    x = X.clone().requires_grad_()
    with propagate_relevance(model, composite):
        y = model(x)[:, 0]
    return torch.autograd.grad(y, x, y.detach())[0].flatten()


def test_hand_computed_epsilon_zplus_and_alphabeta_relevances():
    """Relevance starts at the output, 5.
    ε (ε = 0, LRP-0): hidden R = h·w·5/5 = (4, 1.5); input: neuron 1 (z 4) gives x·w·4/4 =
    (2, 2), neuron 2 (z 6) x·w·1.5/6 = (1.5, −0.25): (3.5, 1.75), which is gradient × input.
    z+: hidden (4, 1.5)·5/5.5 (the bias −0.5 is not positive); input: neuron 1's positive
    contributions are x⁺w⁺ = 2 and x⁻w⁻ = (−1)(−2) = 2 (z⁺ 4), neuron 2's 6 and the bias 1
    (z⁺ 7): (20/11 + 6/7·15/11, 20/11) = (230/77, 20/11).
    α-β (2, 1): hidden 2·(40/11, 15/11) (no negative contribution but the bias); input: neuron
    1 gives 2·(2, 2)·(80/11)/4 and has no negative part; neuron 2 gives 2·(6, 0)·(30/11)/7 and
    takes back β·(0, −1)·(30/11)/(−1) for x₂ = −1 times w = 1: (920/77, 50/11)."""
    assert hand_relevance("epsilon").tolist() == pytest.approx([3.5, 1.75], abs=1e-6)
    assert hand_relevance("zplus").tolist() == pytest.approx([230 / 77, 20 / 11], rel=1e-5)
    assert hand_relevance("alphabeta").tolist() == pytest.approx([920 / 77, 50 / 11], rel=1e-5)
    # flat first layer: each hidden unit splits its relevance evenly over its two inputs
    assert hand_relevance("zplus", "flat").tolist() == pytest.approx([2.5, 2.5], rel=1e-5)
    # zbox with x in [−3, 3]: z = w⁺(x − l) + w⁻(x − h), the bias cancels. Neuron 1 (R 40/11):
    # 1·5 + (−2)(−4) = 13 -> (5, 8)/13; neuron 2 (R 15/11): 3·5 + 1·2 = 17 -> (15, 2)/17
    x = X.clone().requires_grad_()
    composite = Composite(conv="zplus", dense="zplus", first="zbox", low=-3.0, high=3.0)
    model = hand_model()
    with propagate_relevance(model, composite):
        y = model(x)[:, 0]
    zbox = torch.autograd.grad(y, x, y.detach())[0].flatten()
    expected = [
        40 / 11 * 5 / 13 + 15 / 11 * 15 / 17,
        40 / 11 * 8 / 13 + 15 / 11 * 2 / 17,
    ]
    assert zbox.tolist() == pytest.approx(expected, rel=1e-5)


def test_project_starts_from_the_unit_or_logit_value_and_reports_conservation():
    """Through `project`: the class logit 5 and the hidden unit 1 (value 6) as targets. The
    unit's relevance is neuron 2's share alone: ε: x·w = (6, −1); its conservation says 5 of 6
    reached the input (the bias 1 took the rest)."""
    model = hand_model()
    settings = LRP(first="epsilon", epsilon=0.0)
    logit = project(model, X, "lrp-epsilon", lrp=settings)
    assert logit.value == pytest.approx(5.0)
    assert logit.map.flatten().tolist() == pytest.approx([3.5, 1.75], abs=1e-6)
    c = logit.relevance
    assert c.f_input == pytest.approx(5.0) and c.total == pytest.approx(5.25)
    assert c.gap == pytest.approx(0.25) and c.relative_gap == pytest.approx(0.05)
    assert c.layers == {"linear (first): ε=0": 1, "relu: passed": 1, "linear: ε=0": 1}
    assert not c.passed and not c.unruled
    record = logit.to_record()["lrp"]
    assert record["sum"] == pytest.approx(5.25) and record["relative_gap"] == pytest.approx(0.05)
    unit = project(model, X, "lrp-epsilon", layer="2", unit=1, lrp=settings)
    assert unit.value == pytest.approx(6.0)
    assert unit.map.flatten().tolist() == pytest.approx([6.0, -1.0], abs=1e-6)
    assert unit.relevance.total == pytest.approx(5.0)


def test_check_ranks_lrp_by_its_channel_sum():
    """`visualize check` ranks the LRP maps summed over channels, for each image's class."""
    from cnntool.tasks.check import METHODS, attribution_maps

    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(12, 4)).eval()
    torch.manual_seed(0)
    x = torch.randn(2, 2, 2, 2)
    targets = torch.tensor([1, 3])
    assert "lrp-zplus" in METHODS
    maps = attribution_maps(model, x, "lrp-zplus", targets)
    relevance = class_relevance(model, x, targets, "lrp-zplus")
    for i, target in enumerate(targets.tolist()):
        one = project(model, x[i : i + 1], "lrp-zplus", target_class=target).map
        assert torch.allclose(relevance[i], one, atol=1e-7)
    assert torch.allclose(maps, relevance.sum(1), atol=1e-7) and maps.shape == (2, 2, 2)


# ---------------------------------------------------------------------------------------------
# conservation


class BiasFree(nn.Module):
    """conv -> ReLU -> max pool -> conv + skip -> ReLU -> average pool -> linear, no biases."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8 * 2 * 2, 5, bias=False)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.stem(x)), 2)
        x = torch.relu(self.conv(x) + x)
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 2).flatten(1))


@pytest.mark.parametrize("rule", ["zplus", "alphabeta", "epsilon"])
@pytest.mark.parametrize("first", ["flat", "zbox"])
def test_relevance_is_conserved_without_biases(rule, first):
    """Every rule passes on what it receives when no layer has a bias (α-β since α − β = 1 and
    every unit has some negative contribution here): Σ relevance = the logit, through a
    residual add, max and average pooling and the flat or zbox first layer, to the
    stabilizers (1e-12 here, ε 0; with the default 1e-6 the gap is ~1e-5 of these logits)."""
    torch.manual_seed(0)
    model = BiasFree().eval()
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    composite = Composite(conv=rule, first=first, epsilon=0.0, stabilizer=1e-12, low=-1.0, high=1.0)
    rows = torch.arange(len(x))
    targets = torch.tensor([0, 1, 2, 4])
    relevance, values, conservation, report = relevance_batch(
        model, x, lambda batch: model(batch)[rows, targets], composite
    )
    for c in conservation:
        assert c.total == pytest.approx(c.f_input, rel=1e-6), c
    assert torch.allclose(relevance.sum((1, 2, 3)).double(), values.double(), rtol=1e-6)
    assert report.rules[("add", "split in proportion to the summands")] == 1
    assert report.rules[("max_pool2d", "gradient")] == 1
    default = project_batch(model, x, f"lrp-{rule}", lrp=LRP(first="flat"))
    assert max(p.relevance.relative_gap for p in default) < 1e-4


# ---------------------------------------------------------------------------------------------
# zennit


def zennit_relevance(model, x, targets, composite):
    """zennit's Gradient attributor started, as ours, from each image's target logit."""
    with Gradient(model, composite) as attributor:
        _, relevance = attributor(
            x,
            lambda out: nn.functional.one_hot(targets, out.shape[1]).to(out) * out,
        )
    return relevance


def epsilon_in_variance(model):
    """The same model with each BatchNorm's eps moved into its running variance. zennit's
    canonizer turns a merged BatchNorm into mean 0, variance 1, which still divides by
    √(1 + eps): its forward is not the model's (5e-6 per layer with eps 1e-5, 5e-4 with lite0's
    1e-3), and its maps differ from ours by up to 1e-4 of their largest value on resnet18."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var += m.eps
            m.eps = 0.0
    return model


def random_statistics(model, seed=1):
    """BatchNorm statistics and affine parameters drawn at random (torchvision's init leaves
    them 0 and 1, and merging would change nothing)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def vgg16_bn():
    """torchvision's vgg16_bn features (13 conv + BatchNorm + ReLU, 5 max pools), its average
    pool and a classifier of the same shape but 256 wide instead of 4096 (random init of the
    100M-weight original takes 3 s), He-initialized (so that the logits are not ~1e-6)."""
    torch.manual_seed(0)
    with torch.device("meta"):
        model = torchvision.models.vgg16_bn()
    vgg = torchvision.models.vgg
    model.features = vgg.make_layers(vgg.cfgs["D"], batch_norm=True)
    model.classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 256),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(256, 256),
        nn.ReLU(True),
        nn.Dropout(),
        nn.Linear(256, 10),
    )
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model.eval()


def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


ZENNIT = {"lrp-zplus": EpsilonPlusFlat, "lrp-alphabeta": EpsilonAlpha2Beta1Flat}


@pytest.mark.parametrize(
    ("name", "build", "canonizer"),
    [("vgg16_bn", vgg16_bn, VGGCanonizer), ("resnet18", resnet18, ResNetCanonizer)],
)
def test_equal_to_zennit_on_torchvision_models(name, build, canonizer):
    """EpsilonPlusFlat and EpsilonAlpha2Beta1Flat with zennit's VGG / ResNet canonizers (BatchNorm
    merged; the residual sum split in proportion) against lrp-zplus and lrp-alphabeta, on one
    (vgg16_bn) or two (resnet18) 64×64 images and the class each predicts: max |Δ| ≤ 1e-5 of
    the largest relevance."""
    model = epsilon_in_variance(random_statistics(build()))
    images = 1 if name == "vgg16_bn" else 2  # vgg16_bn costs the most per image
    x = torch.randn(images, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    for method, zennit_composite in ZENNIT.items():
        ours = project_batch(model, x, method)
        targets = torch.tensor([p.target.class_index for p in ours])
        theirs = zennit_relevance(model, x, targets, zennit_composite(canonizers=[canonizer()]))
        mine = torch.stack([p.map for p in ours])
        scale = float(theirs.abs().max())
        assert float((mine - theirs).abs().max()) <= 1e-5 * scale, (name, method)
        merged = ours[0].relevance.layers
        assert merged.get("batch_norm: merged into the layer before it") == (
            13 if name == "vgg16_bn" else 20
        )


class _MBConvSum(AttributeCanonizer):
    """zennit's ResNet canonizer, written for lite0's MBConv blocks: the shortcut through a
    zennit `Sum` module, so that its Norm rule splits the relevance (zennit has no canonizer for
    our efficientnet_lite0)."""

    def __init__(self):
        super().__init__(self._attributes)

    @staticmethod
    def _attributes(name, module):
        from cnntool.core.loading.zoo.efficientnet_lite import MBConvBlock

        if not isinstance(module, MBConvBlock):
            return None

        def forward(self, x):
            out = x
            if self.has_expansion:
                out = self._relu0(self._bn0(self._expand_conv(out)))
            out = self._relu1(self._bn1(self._depthwise_conv(out)))
            out = self._bn2(self._project_conv(out))
            if self.has_shortcut:
                out = self.canonizer_sum(torch.stack([x, out], dim=-1))
            return out

        return {"forward": types.MethodType(forward, module), "canonizer_sum": Sum()}

    def copy(self):
        return _MBConvSum()


def test_equal_to_zennit_on_efficientnet_lite0():
    """lite0 (real weights: ReLU6, depthwise convolutions, BatchNorm, residual adds, TensorFlow
    "SAME" padding by F.pad before each convolution) at 112 px, against zennit with its
    SequentialMergeBatchNorm and the residual canonizer above; ours needs no canonizer. The
    ReLU6 passes relevance in both (zennit's Pass on activations)."""
    from cnntool.core.data import BatchStream, open_data
    from cnntool.core.loading.models import load_model

    loaded = load_model("efficientnet_lite0")
    model = epsilon_in_variance(loaded.module.eval())
    dataset = open_data("imagenet-samples").head(1)
    x = next(iter(BatchStream(dataset, loaded.preprocessing, batch_size=1))).inputs
    x = nn.functional.interpolate(x, size=(112, 112), mode="bilinear", antialias=True)
    canonizers = [CompositeCanonizer([SequentialMergeBatchNorm(), _MBConvSum()])]
    for method, zennit_composite in ZENNIT.items():
        (ours,) = project_batch(model, x, method)
        targets = torch.tensor([ours.target.class_index])
        theirs = zennit_relevance(model, x, targets, zennit_composite(canonizers=canonizers))[0]
        assert float((ours.map - theirs).abs().max()) <= 1e-5 * float(theirs.abs().max())
    layers = ours.relevance.layers
    assert layers["relu6: passed"] == 33 and layers["add: split in proportion to the summands"] == 9
    assert layers["conv2d (first): flat"] == 1 and layers["conv2d: α=2 β=1"] == 48


def folded(model):
    """`model` with every BatchNorm folded into the convolution before it (torch's
    fuse_conv_bn_eval) and replaced by an identity."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for parent in list(model.modules()):
        names = dict(parent.named_children())
        for name, child in names.items():
            pair = {"bn1": "conv1", "bn2": "conv2", "1": "0"}.get(name)
            if isinstance(child, nn.BatchNorm2d) and isinstance(names.get(pair), nn.Conv2d):
                setattr(parent, pair, fuse_conv_bn_eval(names[pair], child))
                setattr(parent, name, nn.Identity())
    return model


def test_lrp_epsilon_equals_zennit_epsilon_everywhere_with_a_flat_first_layer():
    """lrp-epsilon against a zennit composite of ε on every convolution and dense layer and
    flat on the first (zennit ships no such composite; it is two lines of its layer maps).
    The ε rule divides by sums that cancel to near 0, where the float32 rounding of zennit's
    canonized forward (the BatchNorm merged) and ours (the model's) moves the map by 1e-4 of
    its maximum; with the BatchNorms folded beforehand both run the same forward."""
    model = folded(random_statistics(resnet18()))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    ours = project_batch(model, x, "lrp-epsilon", lrp=LRP(epsilon=1e-3))
    composite = SpecialFirstLayerMapComposite(
        layer_map=[*layer_map_base(), (Convolution, Epsilon(1e-3)), (nn.Linear, Epsilon(1e-3))],
        first_map=[(Linear, Flat())],
        canonizers=[ResNetCanonizer()],
    )
    targets = torch.tensor([p.target.class_index for p in ours])
    theirs = zennit_relevance(model, x, targets, composite)
    mine = torch.stack([p.map for p in ours])
    assert float((mine - theirs).abs().max()) <= 1e-5 * float(theirs.abs().max())


# ---------------------------------------------------------------------------------------------
# what is reported, and refused


def test_layers_without_a_rule_are_named_not_guessed():
    """SiLU and a sigmoid gate (squeeze-and-excitation's x · σ(s)) have no LRP rule: the SiLU
    passes relevance (zennit's Pass) and is reported as passed, the gate's multiplication runs
    with its gradient and is reported as unruled; both lines reach stderr as warnings."""
    from cnntool.io.overlays import relevance_lines

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.act = nn.SiLU()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            h = self.act(self.conv(x))
            gate = torch.sigmoid(h.mean((2, 3), keepdim=True))
            return self.fc((h * gate).mean((2, 3)))

    torch.manual_seed(0)
    (p,) = project_batch(Gated().eval(), torch.randn(1, 3, 6, 6), "lrp-zplus")
    assert p.relevance.passed == {"silu": 1, "sigmoid": 1}
    assert p.relevance.unruled == {"mul": 1}
    lines = relevance_lines(p, "lrp-zplus")
    assert lines[0][0].startswith("lrp-zplus (z+ on convolutions, ε=1e-06 on dense layers")
    assert [warn for _, warn in lines] == [False, True, True]
    assert "silu ×1" in lines[1][0] and "mul ×1" in lines[2][0]


def test_settings_are_checked_in_one_sentence():
    with pytest.raises(CnnToolError, match="α − β = 1"):
        LRP(alpha=3.0, beta=1.0)
    with pytest.raises(CnnToolError, match="unknown first-layer LRP rule"):
        LRP(first="wsquare")
    with pytest.raises(CnnToolError, match="zbox first-layer rule needs the model's prepro"):
        project(hand_model(), X, "lrp-zplus", lrp=LRP(first="zbox"))
    with pytest.raises(CnnToolError, match="already includes the input"):
        project(hand_model(), X, "lrp-zplus", times_input=True)
    # zbox bounds of a 3-channel image do not fit a 2-input first layer; a 2×1×1 image's do
    three = types.SimpleNamespace(normalize=lambda pixels: torch.zeros(len(pixels), 3, 1, 1))
    with pytest.raises(CnnToolError, match="do not fit the first layer's input"):
        project(hand_model(), X, "lrp-zplus", lrp=LRP(first="zbox"), preprocessing=three)
    two = types.SimpleNamespace(normalize=lambda pixels: pixels * 6 - 3)  # [−3, 3]
    fitted = project(hand_model(), X, "lrp-zplus", lrp=LRP(first="zbox"), preprocessing=two)
    assert fitted.relevance.layers["linear (first): z^B (zbox)"] == 1


# ---------------------------------------------------------------------------------------------
# the command


def test_cli_lrp_writes_the_figure_the_record_and_the_rules(cnntool, tmp_path):
    """`visualize deconv lenet5-mnist mnist-5k --limit 1 --method lrp-alphabeta`: stderr names
    each layer's rule and the conservation, the record holds them, the figure is titled with
    the rules and shows the relevance in RdBu_r with its colour bar."""
    from cnntool.io.figure_style import FigureStyle

    out = tmp_path / "lrp.png"
    result = cnntool(
        "visualize",
        "deconv",
        "lenet5-mnist",
        "mnist-5k",
        "--limit",
        "1",
        "--method",
        "lrp-alphabeta",
        "-o",
        out,
        threads=1,
    )
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    lrp = record["lrp"]
    assert record["method"] == "lrp-alphabeta"
    assert (
        lrp["rules"] == "α=2 β=1 on convolutions, ε=1e-06 on dense layers, flat on the first layer"
    )
    assert lrp["layers"] == {
        "conv2d (first): flat": 1,
        "relu: passed": 3,
        "max_pool2d: gradient": 2,
        "conv2d: α=2 β=1": 1,
        "linear: ε=1e-06": 2,
    }
    assert lrp["f_input"] == pytest.approx(record["value"], abs=1e-5)
    assert lrp["gap"] == pytest.approx(abs(lrp["sum"] - lrp["f_input"]), abs=1e-6)
    assert "conv2d (first): flat ×1" in result.stderr and "conservation gap" in result.stderr
    pixels = png(out)
    style = FigureStyle()
    title = "lenet5-mnist · LRP α=2 β=1 (conv) ε=1e-06 (dense) flat (first layer)"
    assert find_styled_text(pixels[: style.title_height + 4], title, 17, bold=True)
    assert find_styled_text(pixels, "relevance", 17, bold=True)  # the panel's column title
    bars = colour_bars(pixels, "RdBu_r")  # (x, top, bottom) per column of the bar
    assert bars and bars[-1][0] - bars[0][0] >= 8  # a bar, not a stray column
    x, top, bottom = bars[0]
    panel = pixels[top:bottom, : x // 2]  # the relevance, left of the (grey) digit
    reds = (panel[..., 0].astype(int) - panel[..., 2] > 60).sum()
    blues = (panel[..., 2].astype(int) - panel[..., 0] > 60).sum()
    assert reds > 500 and blues > 20  # α-β: evidence for the digit and against it
    bad = cnntool(
        "visualize",
        "deconv",
        "lenet5-mnist",
        "mnist-5k",
        "--limit",
        "1",
        "--method",
        "lrp-alphabeta",
        "--alpha",
        "3",
        "-o",
        tmp_path / "bad.png",
    )
    assert bad.returncode != 0 and "α − β = 1" in bad.stderr
