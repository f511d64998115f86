"""CPU time of cnntool's LRP against zennit's, batch 8, resnet18 at 224 px (random weights).

resnet18 is torchvision's random init under seed 0, with each BatchNorm's eps moved into its
running variance (the same function: zennit's canonizer leaves a merged BatchNorm dividing by
√(1 + eps), so without this its maps differ from the model's by ~1e-4 of their maximum, and Δ
would measure that, not the rules). The batch is 8 imagenet-samples photos resized to --size,
normalized as ImageNet models are; the target is class 7 on both sides, and both start the
relevance from the target logit (zennit: attr_output = one-hot × output, a function of the
one forward it runs). Ours and zennit's run interleaved round by round in this one process
(which goes first alternates), each timed with time.process_time (CPU time of this process,
all threads); the table gives each side's median and the ratio ours / zennit (below 1: ours
takes less CPU), and max |Δ| between the two maps relative to zennit's largest magnitude, twice:
on the timed model, and on a copy whose BatchNorms were folded into the convolutions first.
The first Δ is float32 rounding, not a different rule: zennit's canonized forward computes
conv(x, W·γ/σ) + b', ours the model's BN(conv(x, W)), and the rules amplify that last-bit
difference where a denominator nearly cancels (a residual sum whose summands nearly cancel, an
ε denominator near 0). With the same forward on both sides (folded) the maps are bit-identical,
and in float64 the unfolded maps agree to ~5e-8.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lrp_bench.py [--rounds 5]

Pairs (ours | zennit 0.5.1 with its ResNetCanonizer), all at batch 8:
- lrp-zplus: project_batch(..., "lrp-zplus") | Gradient with EpsilonPlusFlat
- lrp-alphabeta: project_batch(..., "lrp-alphabeta") | Gradient with EpsilonAlpha2Beta1Flat
- lrp-epsilon: project_batch(..., "lrp-epsilon") | Gradient with a SpecialFirstLayerMapComposite
  of Epsilon on every convolution and linear layer and Flat on the first
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from zennit.attribution import Gradient  # noqa: E402
from zennit.composites import (  # noqa: E402
    EpsilonAlpha2Beta1Flat,
    EpsilonPlusFlat,
    SpecialFirstLayerMapComposite,
    layer_map_base,
)
from zennit.rules import Epsilon, Flat  # noqa: E402
from zennit.torchvision import ResNetCanonizer  # noqa: E402
from zennit.types import Convolution, Linear  # noqa: E402

from cnntool.core.data import BatchStream, open_data  # noqa: E402
from cnntool.core.loading.models import load_model  # noqa: E402
from cnntool.tasks.projection import Target, project_batch  # noqa: E402

warnings.filterwarnings("ignore")
CLASS = 7


def photos(size, n=8):
    """The photos at size×size, normalized with ImageNet's mean and std (lite0's feed reads
    and crops them; its (x − 0.5) / 0.5 is undone first)."""
    lite0 = load_model("efficientnet_lite0")
    dataset = open_data("imagenet-samples").head(n)
    pixels = next(iter(BatchStream(dataset, lite0.preprocessing, batch_size=n))).inputs
    pixels = lite0.preprocessing.denormalize(pixels)  # back to [0, 1]
    pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return ((pixels - mean) / std).contiguous()


def resnet18():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var += m.eps
            m.eps = 0.0
    return model


def folded(model):
    """A copy of resnet18 with each BatchNorm folded into its convolution (torch's
    fuse_conv_bn_eval) and replaced by an identity: the same forward for ours and zennit's."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        names = dict(parent.named_children())
        for name, child in names.items():
            pair = {"bn1": "conv1", "bn2": "conv2", "1": "0"}.get(name)
            if isinstance(child, nn.BatchNorm2d) and isinstance(names.get(pair), nn.Conv2d):
                setattr(parent, pair, fuse_conv_bn_eval(names[pair], child))
                setattr(parent, name, nn.Identity())
    return model


def zennit_epsilon():
    return SpecialFirstLayerMapComposite(
        layer_map=[*layer_map_base(), (Convolution, Epsilon()), (nn.Linear, Epsilon())],
        first_map=[(Linear, Flat())],
        canonizers=[ResNetCanonizer()],
    )


def pairs(model, x):
    target = Target.logit(CLASS)

    def ours(method):
        return torch.stack([p.map for p in project_batch(model, x, method, target)])

    def theirs(composite):
        with Gradient(model, composite) as attributor:
            return attributor(
                x,
                lambda out: F.one_hot(torch.full((len(x),), CLASS), out.shape[1]).to(out) * out,
            )[1]

    return {
        "lrp-zplus": (
            lambda: ours("lrp-zplus"),
            lambda: theirs(EpsilonPlusFlat(canonizers=[ResNetCanonizer()])),
        ),
        "lrp-alphabeta": (
            lambda: ours("lrp-alphabeta"),
            lambda: theirs(EpsilonAlpha2Beta1Flat(canonizers=[ResNetCanonizer()])),
        ),
        "lrp-epsilon": (lambda: ours("lrp-epsilon"), lambda: theirs(zennit_epsilon())),
    }


def rel(ours, theirs):
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp(min=1e-30))


def timed(fn):
    start = time.process_time()
    result = fn()
    return time.process_time() - start, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()}")
    model, x = resnet18(), photos(args.size)
    cases = pairs(model, x)
    deltas = {k: rel(ours(), anchor()) for k, (ours, anchor) in cases.items()}  # and warm-up
    same_forward = {k: rel(o(), a()) for k, (o, a) in pairs(folded(model), x).items()}
    times = {k: ([], []) for k in cases}
    for r in range(args.rounds):
        for k, (ours, anchor) in cases.items():
            order = [(0, ours), (1, anchor)] if r % 2 == 0 else [(1, anchor), (0, ours)]
            for side, fn in order:
                times[k][side].append(timed(fn)[0])
    rows = []
    for k in cases:
        a, b = statistics.median(times[k][0]), statistics.median(times[k][1])
        rows.append((k, a, b, a / b, deltas[k], same_forward[k]))
        print(
            f"resnet18 {k:14s} ours {a:7.3f} s  zennit {b:7.3f} s  ratio {a / b:5.2f}  "
            f"max|Δ|/max {deltas[k]:.1e}, BatchNorm folded first {same_forward[k]:.1e}",
            flush=True,
        )
    print(f"load after: {os.getloadavg()}")
    print(
        "\n| model | method | ours CPU s | zennit CPU s | ours / zennit | max abs Δ / max | "
        "the same, BatchNorm folded first |"
    )
    print("|---|---|---|---|---|---|---|")
    for k, a, b, ratio, d, f in rows:
        print(f"| resnet18 | {k} | {a:.3f} | {b:.3f} | **{ratio:.2f}** | {d:.1e} | {f:.1e} |")


if __name__ == "__main__":
    main()
