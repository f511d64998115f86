"""The microscope's feature visualizations of lite0: the thumbnail recipe against the old one
(maximize's default), per layer and in total, with the quality check's pass counts.

    PYTHONPATH=. .venv/bin/python benchmarks/microscope_fv_bench.py [--units 16] [--old-steps 8]
        [--old-full _blocks.10,_blocks.15] [--layers ...] [--config JSON]

For each of the microscope's default lite0 layers (`_relu0, _blocks.4, _blocks.10, _blocks.15,
_avg_pooling`), on the model prepared as the microscope prepares it (BatchNorm folded but for
the layer, channels-last where it pays, parameters frozen: core.runtime.prepare_for_scan):
- `new`: the thumbnail recipe (tasks.maximize.thumbnail_defaults, or `--config` over it), the
  whole run for `--units` units in one batch, timed; its pictures checked as the microscope
  checks them (tasks.maximize.judge.check_picture: flat, or the unit's peak on the picture not
  above its largest activation on imagenet-samples);
- `old`: maximize's default (imagenet_defaults: MACO, 224 px, 256 steps), timed over
  `--old-steps` steps and extrapolated to its 256 (the steady per-step time × 256 + the once-
  per-run cost); the whole run (with its pass count) only for the layers in `--old-full`.
Both run in this one process, layer by layer, old then new, so that a load change hits both.
Prints `uptime`'s load before and after: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cnntool.core.data import BatchStream, open_data  # noqa: E402
from cnntool.core.hooks import capture  # noqa: E402
from cnntool.core.loading.models import load_model  # noqa: E402
from cnntool.core.runtime import prepare_for_scan  # noqa: E402
from cnntool.tasks.maximize import (  # noqa: E402
    imagenet_defaults,
    maximize,
    objective,
    thumbnail_defaults,
    with_overrides,
)
from cnntool.tasks.maximize.judge import check_picture  # noqa: E402

LAYERS = "_relu0,_blocks.4,_blocks.10,_blocks.15,_avg_pooling"


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


@torch.no_grad()
def data_maxima(loaded, layers: list[str]) -> dict[str, torch.Tensor]:
    """Each unit's largest activation (any image, any position) over imagenet-samples."""
    best: dict[str, torch.Tensor] = {}
    with BatchStream(
        open_data("imagenet-samples"), loaded.preprocessing, batch_size=10, workers=0
    ) as stream:
        for batch in stream:
            with capture(loaded.module, layers) as cap:
                cap.run(batch.inputs)
            for name in layers:
                out = cap.activations[name]
                value = out.flatten(2).amax(2).amax(0) if out.dim() == 4 else out.amax(0)
                best[name] = value if name not in best else torch.maximum(best[name], value)
    return best


def run(loaded, layer: str, units: list[int], config, best) -> tuple[float, list[float], int]:
    """(seconds, per-step ends relative to the start, pictures that pass the check)."""
    goal = objective(loaded.module, "channel", units, layer)
    ends: list[float] = []
    start = time.perf_counter()
    results = maximize(
        loaded.module,
        loaded.preprocessing,
        goal,
        config,
        seed=0,
        progress=lambda _: ends.append(time.perf_counter() - start),
    )
    seconds = time.perf_counter() - start
    passed = sum(
        check_picture(r.pixels, r.peak, float(best[u]), positions=r.positions).converged
        for r, u in zip(results, units, strict=True)
    )
    return seconds, ends, passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--layers", default=LAYERS)
    parser.add_argument("--old-steps", type=int, default=8)
    parser.add_argument(
        "--old-full", default="", help="Comma-separated layers whose old run is done in full."
    )
    parser.add_argument("--no-old", action="store_true", help="Only the new recipe.")
    parser.add_argument(
        "--config", default="{}", help="JSON MaximizeConfig fields over the thumbnail recipe."
    )
    args = parser.parse_args()
    loaded = load_model("efficientnet_lite0")
    layers = args.layers.split(",")
    units = list(range(args.units))
    new = replace(thumbnail_defaults(), **json.loads(args.config))
    old = imagenet_defaults()
    best = data_maxima(loaded, layers)
    full_old = set(filter(None, args.old_full.split(",")))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load {load()} (1/5/15 min); "
        f"{args.units} units per layer in one batch"
    )
    print(
        f"new: {new.param} {new.size} px, {new.steps} steps, lr {new.lr}; "
        f"old: {old.param} {old.size or 224} px, {old.steps} steps, lr {old.lr}"
    )
    print(
        "| layer | old s (256 steps) | new s | old / new | old passes | new passes "
        "|\n|---|---|---|---|---|---|"
    )
    totals = [0.0, 0.0]
    for layer in layers:
        with prepare_for_scan(
            loaded.module,
            "cpu",
            needs_grad=True,
            fold_bn=True,
            keep=[layer],
            inference_mode=False,
            example_input_shape=loaded.input_shape,
        ):
            old_s, old_passed = float("nan"), "–"
            if not args.no_old:
                if layer in full_old:
                    old_s, _, passed = run(loaded, layer, units, old, best[layer])
                    old_passed = f"{passed}/{len(units)}"
                else:
                    k = args.old_steps
                    seconds, ends, _ = run(
                        loaded, layer, units, with_overrides(old, steps=k), best[layer]
                    )
                    per_step = (ends[-1] - ends[0]) / (k - 1)
                    old_s = per_step * old.steps + (seconds - per_step * k)
            new_s, _, passed = run(loaded, layer, units, new, best[layer])
        totals[0] += old_s
        totals[1] += new_s
        print(
            f"| {layer} | {old_s:.0f}{'' if layer in full_old else ' (extrapolated)'} "
            f"| {new_s:.0f} "
            "| "
            f"{old_s / new_s:.1f}× | {old_passed} | {passed}/{len(units)} |",
            flush=True,
        )
    print(f"| total | {totals[0]:.0f} | {totals[1]:.0f} | {totals[0] / totals[1]:.1f}× | | |")
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
