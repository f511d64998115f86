"""`cnntool.tasks.maximize` optimization steps/s against a bare forward + backward loop.

Same model, input size and batch for both. The bare loop is the least any activation
maximization can do per step: forward a leaf input tensor (parameters frozen), take the
objective, backward to the input. `maximize` adds the parameterization (Fourier + colour or
sigmoid pixels), the random transforms, the regularizers and Adam. The two are interleaved
round by round and each one's median round is reported, so a load spike hits both alike.

Both are timed per step, from the end of the first step to the end of the last (a steady
state: a real run has 128-256 steps). What `maximize` does once per run (building the
parameterization, scoring the final image without transforms: one more forward) is reported
apart, as "per run, ms".

    .venv/bin/python benchmarks/maximize_bench.py [--rounds 5] [--steps 8] [--threads N] \\
        [--only TEXT]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cnntool.core.loading.models import load_model  # noqa: E402
from cnntool.tasks.maximize import (  # noqa: E402
    MaximizeConfig,
    lucid_defaults,
    maximize,
    objective,
    with_overrides,
)

CASES = [  # label, model, batch, objective kind, units, layer, config overrides
    (
        "lite0 224px class, defaults (maco+crop+transparency)",
        "efficientnet_lite0",
        1,
        "class",
        [1],
        None,
        {},
    ),
    (
        "lite0 224px class x4, defaults (maco)",
        "efficientnet_lite0",
        4,
        "class",
        [1, 9, 130, 207],
        None,
        {},
    ),
    (
        "lite0 224px class, previous default (fourier+transforms)",
        "efficientnet_lite0",
        1,
        "class",
        [1],
        None,
        lucid_defaults(),
    ),
    (
        "lite0 224px class, pixel, no transforms",
        "efficientnet_lite0",
        1,
        "class",
        [1],
        None,
        {"param": "pixel", "pad": 0, "jitter": 0, "scales": (1.0, 1.0), "rotate": 0.0},
    ),
    (
        "lite0 224px _blocks.10 channel x4, defaults",
        "efficientnet_lite0",
        4,
        "channel",
        [0, 1, 2, 3],
        "_blocks.10",
        {},
    ),
    (
        "lenet5 28px class x10, defaults (pixel+TV+blur)",
        "lenet5-mnist",
        10,
        "class",
        list(range(10)),
        None,
        {},
    ),
]


def bare_steps(loaded, goal, batch: int, steps: int) -> tuple[float, float]:
    """(seconds per step in the steady state, 0.0) for a forward+backward to a leaf input."""
    module = loaded.module
    x = torch.rand(batch, *loaded.input_shape).requires_grad_()
    rows, units = torch.arange(batch), torch.tensor(goal.units)
    layer = dict(module.named_modules())[goal.layer] if goal.layer else None
    outputs = {}
    handle = layer.register_forward_hook(lambda m, a, o: outputs.update(out=o)) if layer else None
    try:
        ends = []
        for _ in range(steps):
            out = module(loaded.preprocessing.normalize(x))
            if layer is not None:
                out = outputs["out"].flatten(2).mean(2)
            (-out[rows, units].sum()).backward()
            ends.append(time.perf_counter())
        return (ends[-1] - ends[0]) / (steps - 1), 0.0
    finally:
        if handle:
            handle.remove()


def ours(loaded, goal, config: MaximizeConfig, steps: int) -> tuple[float, float]:
    """(seconds per step in the steady state, seconds spent once per run)."""
    ends = []
    start = time.perf_counter()
    maximize(
        loaded.module,
        loaded.preprocessing,
        goal,
        with_overrides(config, steps=steps),
        progress=lambda _: ends.append(time.perf_counter()),
    )
    total = time.perf_counter() - start
    per_step = (ends[-1] - ends[0]) / (steps - 1)
    return per_step, total - per_step * steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--only", metavar="TEXT", help="Run only the cases whose label contains TEXT."
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the rate is measured between step ends)")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.rounds} rounds of {args.steps} steps, medians"
    )
    print(
        "| case | bare fwd+bwd steps/s | maximize steps/s | ratio | maximize per run, ms |\n"
        "|---|---|---|---|---|"
    )
    for label, name, batch, kind, units, layer, overrides in CASES:
        if args.only and args.only not in label:
            continue
        loaded = load_model(name)
        for p in loaded.module.parameters():
            p.requires_grad_(False)  # both sides: only the input needs a gradient
        goal = objective(loaded.module, kind, units[:batch], layer)
        config = (
            overrides
            if isinstance(overrides, MaximizeConfig)
            else with_overrides(MaximizeConfig.for_input(loaded.input_shape), **overrides)
        )
        ours(loaded, goal, config, 2), bare_steps(loaded, goal, batch, 2)  # warm-up
        bare_times, our_times, our_fixed = [], [], []
        for _ in range(args.rounds):
            bare_times.append(bare_steps(loaded, goal, batch, args.steps)[0])
            per_step, fixed = ours(loaded, goal, config, args.steps)
            our_times.append(per_step)
            our_fixed.append(fixed)
        bare = 1 / statistics.median(bare_times)
        mine = 1 / statistics.median(our_times)
        print(
            f"| {label} | {bare:.2f} | {mine:.2f} | {mine / bare:.2f} | "
            f"{statistics.median(our_fixed) * 1e3:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
