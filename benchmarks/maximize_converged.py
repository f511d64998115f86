"""How many of a layer's units get a feature visualization that passes the check? Counted, not
timed.

For LeNet-5 (lenet5-mnist) layers, every unit's picture is made with `visualize maximize`'s
default recipe for 28-px inputs (`small_defaults`: pixels, L2, TV, blur, 128 steps), in one
batch per layer, then checked as the command checks it (tasks.maximize.judge.check_picture):
flat (1st–99th percentile spread < 0.1, inside the border band for a conv layer), or its value
not above the unit's best over the 5,000 mnist-5k digits. Dead units (never above 0 on the
digits) are counted apart. Each recipe is run in the same process: by default the recipe
without and with Lucid's redirected ReLU for the first 16 steps (`redirect`), so the two
columns compare like for like.

    .venv/bin/python benchmarks/maximize_converged.py [--layers relu1,relu2,relu3]
        [--config NAME=JSON ...] [--seed 0] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cnntool.core.loading.zoo import BUILTIN_MODELS, load_builtin  # noqa: E402
from cnntool.core.samples import mnist_5k  # noqa: E402
from cnntool.tasks.maximize import (  # noqa: E402
    maximize,
    objective,
    objective_values,
    small_defaults,
)
from cnntool.tasks.maximize.judge import check_picture  # noqa: E402


def counts(model, prep, layer: str, config, best: torch.Tensor, seed: int) -> dict:
    units = list(range(best.numel()))
    results = maximize(model, prep, objective(model, "channel", units, layer), config, seed=seed)
    tally = {"units": len(units), "dead": 0, "converged": 0, "flat": 0, "below": 0}
    for result, top in zip(results, best.tolist(), strict=True):
        if top <= 0:
            tally["dead"] += 1
            continue
        reason = check_picture(result.pixels, result.value, top, positions=result.positions).reason
        key = {None: "converged", "flat": "flat", "below the data's best": "below"}[reason]
        tally[key] += 1
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="relu1,relu2,relu3")
    parser.add_argument("--config", action="append", default=[], metavar="NAME=JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # small_defaults() redirects the first 16 steps: "true gradient" turns that off
    configs = {
        "true gradient": dataclasses.replace(small_defaults(), redirect=0),
        "redirected 16": dataclasses.replace(small_defaults(), redirect=16),
    }
    for spec in args.config:
        name, _, changes = spec.partition("=")
        configs[name] = dataclasses.replace(small_defaults(), **json.loads(changes))
    model = load_builtin("lenet5-mnist").eval()
    prep = BUILTIN_MODELS["lenet5-mnist"].preprocessing
    digits = torch.from_numpy(mnist_5k()[0]).float()[:, None] / 255
    print("layer   recipe            units  dead  converged  flat  below  seconds")
    for layer in args.layers.split(","):
        best = objective_values(
            model,
            objective(model, "channel", list(range(_channels(model, layer, prep))), layer),
            [prep.normalize(digits[k : k + 1000]) for k in range(0, len(digits), 1000)],
        ).amax(0)
        for name, config in configs.items():
            start = time.perf_counter()
            tally = counts(model, prep, layer, config, best, args.seed)
            seconds = time.perf_counter() - start
            print(
                f"{layer:7} {name:16} {tally['units']:6} {tally['dead']:5} "
                f"{tally['converged']:10} {tally['flat']:5} {tally['below']:6} {seconds:8.1f}"
            )


def _channels(model, layer: str, prep) -> int:
    from cnntool.core.hooks import capture

    with torch.no_grad(), capture(model, [layer], stop_early=True) as cap:
        cap.run(prep.normalize(torch.zeros(1, *prep.input_shape)))
    return cap.activations[layer].shape[1]


if __name__ == "__main__":
    main()
