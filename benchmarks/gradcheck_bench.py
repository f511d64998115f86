"""gradcheck timings: ResNet-18 in full, against torch.autograd.gradcheck on a small module,
and what torch's full-Jacobian check would cost on ResNet-18.

    .venv/bin/python benchmarks/gradcheck_bench.py [--threads N] [--size 64] [--batch 2]

Prints one line per measurement. Everything runs in float64 on the CPU, random weights.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def timed(work):
    start = time.perf_counter()
    value = work()
    return value, time.perf_counter() - start


def resnet18_full_check(size: int, batch: int) -> None:
    from cnntool.core.loading.models import load_model
    from cnntool.tasks.gradcheck import gradcheck

    model = load_model("resnet18", device="cpu").module
    for mode, kwargs, shape in (
        ("whole model", {"batch": batch}, (3, size, size)),
        ("per layer", {"batch": 1, "per_layer": True}, (3, 224, 224)),
    ):
        result, seconds = timed(
            lambda shape=shape, kwargs=kwargs: gradcheck(model, shape, **kwargs)
        )
        checks = sum(len(t.checks) for t in result.tensors)
        undecided = sum(t.count("inconclusive") for t in result.tensors)
        print(
            f"resnet18 {mode}, input {kwargs['batch']}x{'x'.join(map(str, shape))}: "
            f"{len(result.tensors)} tensors, {checks} checks ({undecided} inconclusive), "
            f"all pass: {result.ok}, {seconds:.1f} s"
        )


class SmallConvNet(nn.Module):
    """Smooth (tanh), so torch's full Jacobian is not spoiled by kinks: 2x3x8x8 -> 10."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.act = nn.Tanh()
        self.fc = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).flatten(1))


def against_torch_gradcheck() -> None:
    from cnntool.tasks.gradcheck import gradcheck

    torch.manual_seed(0)
    module = SmallConvNet().double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    names = [n for n, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in module.parameters())

    def call(x, *values):
        return torch.func.functional_call(module, dict(zip(names, values, strict=True)), (x,))

    elements = x.numel() + sum(p.numel() for p in params)
    ours, ours_s = timed(lambda: gradcheck(module, (3, 8, 8), input=x.detach()))
    slow, slow_s = timed(lambda: torch.autograd.gradcheck(call, (x, *params)))
    fast, fast_s = timed(lambda: torch.autograd.gradcheck(call, (x, *params), fast_mode=True))
    print(f"small conv net ({elements} input+parameter elements, 10 outputs per sample):")
    print(
        f"  cnntool gradcheck (5 checks per tensor, {len(ours.tensors)} tensors): "
        f"{ours_s * 1000:.0f} ms, pass {ours.ok}"
    )
    print(
        f"  torch.autograd.gradcheck slow (full Jacobian): {slow_s * 1000:.0f} ms, pass {slow}"
        f" -> {slow_s / ours_s:.1f}x ours"
    )
    print(
        f"  torch.autograd.gradcheck fast_mode (one projection): {fast_s * 1000:.0f} ms, "
        f"pass {fast} -> {fast_s / ours_s:.2f}x ours"
    )


def full_jacobian_estimate() -> None:
    """torch's slow mode: a numerical Jacobian column per input element (two forwards each)
    and an analytical row per output element (one backward each)."""
    import torchvision

    model = torchvision.models.resnet18().double().eval()
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        model(x)  # warm-up
        _, forward_s = timed(lambda: [model(x) for _ in range(3)])
    forward_s /= 3
    out = model(x)
    _, backward_s = timed(lambda: torch.autograd.grad(out[0, 0], x, retain_graph=True))
    elements = x.numel() + sum(p.numel() for p in model.parameters())
    numerical = 2 * elements * forward_s
    analytical = out.numel() * backward_s
    print(
        f"resnet18 at 1x3x224x224 float64: forward {forward_s:.3f} s, one backward "
        f"{backward_s:.3f} s; {elements:,} input+parameter elements, {out.numel()} outputs"
    )
    print(
        f"  torch.autograd.gradcheck full Jacobian, estimated: numerical 2 x {elements:,} "
        f"forwards = {numerical / 86400:.0f} days, analytical {out.numel()} backwards = "
        f"{analytical / 60:.0f} min"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--size", type=int, default=64, help="ResNet-18 input size, whole-model mode"
    )
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    resnet18_full_check(args.size, args.batch)
    against_torch_gradcheck()
    full_jacobian_estimate()


if __name__ == "__main__":
    main()
