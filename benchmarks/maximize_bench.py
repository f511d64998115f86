"""`cnntool.tasks.maximize` optimization steps/s against a bare forward + backward loop.

Same model, input size and batch for both. The bare loop is the least any activation
maximization can do per step: forward a leaf input tensor (parameters frozen), take the
objective, backward to the input. `maximize` adds the parameterization (Fourier + colour or
sigmoid pixels), the random transforms, the regularizers and Adam. The two are interleaved
round by round and each one's median round is reported, so a load spike hits both alike.

    .venv/bin/python benchmarks/maximize_bench.py [--rounds 5] [--steps 8] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cnntool.core.models import load_model  # noqa: E402
from cnntool.tasks.maximize import (MaximizeConfig, maximize, objective,  # noqa: E402
                                    with_overrides)

CASES = [  # label, model, batch, objective kind, units, layer, config overrides
    ("lite0 224px class, defaults (fourier+transforms)", "efficientnet_lite0", 1, "class",
     [1], None, {}),
    ("lite0 224px class, pixel, no transforms", "efficientnet_lite0", 1, "class", [1], None,
     {"param": "pixel", "pad": 0, "jitter": 0, "scales": (1.0, 1.0), "rotate": 0.0}),
    ("lite0 224px _blocks.10 channel x4, defaults", "efficientnet_lite0", 4, "channel",
     [0, 1, 2, 3], "_blocks.10", {}),
    ("lenet5 28px class x10, defaults (pixel+TV+blur)", "lenet5-mnist", 10, "class",
     list(range(10)), None, {}),
]


def bare_steps(loaded, goal, batch: int, steps: int) -> float:
    """Seconds for `steps` forward+backward passes to a leaf input."""
    module = loaded.module
    x = torch.rand(batch, *loaded.input_shape).requires_grad_()
    rows, units = torch.arange(batch), torch.tensor(goal.units)
    layer = dict(module.named_modules())[goal.layer] if goal.layer else None
    outputs = {}
    handle = layer.register_forward_hook(lambda m, a, o: outputs.update(out=o)) if layer else None
    try:
        start = time.perf_counter()
        for _ in range(steps):
            out = module(loaded.preprocessing.normalize(x))
            if layer is not None:
                out = outputs["out"].flatten(2).mean(2)
            (-out[rows, units].sum()).backward()
        return time.perf_counter() - start
    finally:
        if handle:
            handle.remove()


def ours(loaded, goal, config: MaximizeConfig, steps: int) -> float:
    start = time.perf_counter()
    maximize(loaded.module, loaded.preprocessing, goal, with_overrides(config, steps=steps))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds of {args.steps} steps, medians")
    print("| case | bare fwd+bwd steps/s | maximize steps/s | ratio |\n|---|---|---|---|")
    for label, name, batch, kind, units, layer, overrides in CASES:
        loaded = load_model(name)
        for p in loaded.module.parameters():
            p.requires_grad_(False)  # both sides: only the input needs a gradient
        goal = objective(loaded.module, kind, units[:batch], layer)
        config = with_overrides(MaximizeConfig.for_input(loaded.input_shape), **overrides)
        ours(loaded, goal, config, 1), bare_steps(loaded, goal, batch, 1)  # warm-up
        bare_times, our_times = [], []
        for _ in range(args.rounds):
            bare_times.append(bare_steps(loaded, goal, batch, args.steps))
            our_times.append(ours(loaded, goal, config, args.steps))
        bare = args.steps / statistics.median(bare_times)
        mine = args.steps / statistics.median(our_times)
        print(f"| {label} | {bare:.2f} | {mine:.2f} | {mine / bare:.2f} |", flush=True)


if __name__ == "__main__":
    main()
