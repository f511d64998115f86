"""The microscope's one pass against the separate scans it replaces, and against a bare forward.

    .venv/bin/python benchmarks/microscope_bench.py  # lenet5 on 2,000 digits, lite0 on 20 photos
    .venv/bin/python benchmarks/microscope_bench.py --rounds 5 --device cuda

The batches are decoded once and kept in memory (Batch objects with their indices and sizes),
so every mode measures compute alone, over the same batches:
- `bare`: `model(inputs)` under no_grad;
- `one pass`: the microscope's scan (tasks.microscope.MicroscopeScan): for every layer of the
  plan (the model's default microscope layers) top-K per unit and histograms, diagnose's
  statistics with correlations at all of them, the penultimate features (spooled to a scratch
  file) and the predictions, all fed from one forward per batch;
- `separate`: what the single-purpose commands would scan: `visualize top-patches` once per
  layer (each forward stops after its layer), `diagnose --layers` those layers (whole forward),
  `features --layer penultimate` (stops after it). Histograms and predictions are not in it,
  so the comparison leans against the one pass.
Rounds alternate the modes; the median of each is reported with the ratios one pass / bare and
separate / one pass. Goals (issue #15): separate / one pass ≥ 2 for 4 layers or more, one pass
/ bare ≤ 1.2.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

CASES = (
    ("lenet5-mnist", "mnist-5k", 2000, 250),
    ("efficientnet_lite0", "imagenet-samples", 20, 10),
)
UNITS = "32"
TOP = 9


def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def bench(
    model_name: str, data: str, images: int, batch_size: int, rounds: int, device: str
) -> dict:
    import torch

    from cnntool.core.data import BatchStream, open_data
    from cnntool.core.loading.models import load_model
    from cnntool.core.session import feed
    from cnntool.tasks.diagnose import StatsConsumer
    from cnntool.tasks.features import FeatureConsumer, FeatureSpool
    from cnntool.tasks.microscope import MicroscopeScan, plan
    from cnntool.tasks.top_patches import TopPatchConsumer

    loaded = load_model(model_name, device=device)
    dataset = open_data(data).spread(images)
    with BatchStream(dataset, loaded.preprocessing, batch_size=batch_size) as stream:
        batches = [b for b in stream]
    for b in batches:
        b.inputs = b.inputs.to(loaded.device)
    chosen = plan(loaded.module, loaded.input_shape, units=UNITS, top=TOP)
    module = loaded.module

    def bare():
        with torch.no_grad():
            for batch in batches:
                module(batch.inputs)

    def one_pass(scratch):
        with FeatureSpool(scratch) as spool:
            feed(
                module,
                batches,
                MicroscopeScan(chosen, loaded, dataset, spool).consumers,
                device=loaded.device,
            )

    def separate(scratch):
        for layer in chosen.layers:
            feed(
                module,
                batches,
                [TopPatchConsumer(layer.name, units=layer.units, top=TOP)],
                device=loaded.device,
            )
        feed(
            module,
            batches,
            [StatsConsumer([layer.point for layer in chosen.layers])],
            device=loaded.device,
        )
        with FeatureSpool(scratch) as spool:
            feed(
                module,
                batches,
                [FeatureConsumer(chosen.penultimate, "avg", spool)],
                device=loaded.device,
            )

    times = {"bare": [], "one pass": [], "separate": []}
    with tempfile.TemporaryDirectory(prefix="cnntool-microscope-bench-") as scratch:
        for _ in range(rounds + 1):  # the first round warms up and is dropped
            for name, run in (
                ("bare", bare),
                ("one pass", lambda: one_pass(scratch)),
                ("separate", lambda: separate(scratch)),
            ):
                start = time.perf_counter()
                run()
                _sync(loaded.device)
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values[1:]) for name, values in times.items()}
    return {
        "model": model_name,
        "data": data,
        "images": len(dataset),
        "layers": len(chosen.layers),
        **{f"{name} img/s": len(dataset) / seconds for name, seconds in median.items()},
        "one pass / bare": median["one pass"] / median["bare"],
        "separate / one pass": median["separate"] / median["one pass"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(
        f"{'model':20} {'data':17} {'images':>6} {'layers':>6} {'bare img/s':>10} {'one pass':>9} "
        f"{'separate':>9} {'one/bare':>9} {'sep/one':>8}"
    )
    for model_name, data, images, batch_size in CASES:
        row = bench(model_name, data, images, batch_size, args.rounds, args.device)
        print(
            f"{row['model']:20} {row['data']:17} {row['images']:>6} {row['layers']:>6} "
            f"{row['bare img/s']:>10.1f} {row['one pass img/s']:>9.1f} "
            f"{row['separate img/s']:>9.1f} "
            f"{row['one pass / bare']:>8.2f}× {row['separate / one pass']:>7.2f}×",
            flush=True,
        )


if __name__ == "__main__":
    main()
