"""diagnose scan speed against a bare forward pass over the same batches.

    .venv/bin/python benchmarks/diagnose_bench.py  # lenet5 on mnist-5k, lite0 on imagenet-samples
    .venv/bin/python benchmarks/diagnose_bench.py --rounds 5 --device cuda

The batches are decoded once and kept in memory, so both modes measure compute alone:
- `bare`: `model(inputs)` under no_grad for every batch;
- `scan`: tasks.diagnose.stats_consumer over the same batches: every default measure point's output
  folded into its running statistics (float64 moments and the C×C co-moment matrix).
Rounds alternate bare and scan; the median of each is reported, with images/s and the ratio
scan time / bare time. The statistics' cost is mostly the co-moments: C² multiply-adds per
unit position in float64 (`--no-correlation` leaves them out to show the rest).
"""

from __future__ import annotations

import argparse
import statistics
import time

CASES = (
    ("lenet5-mnist", "mnist-5k", 2000, 250),
    ("efficientnet_lite0", "imagenet-samples", 20, 10),
)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(
    model_name: str,
    data: str,
    images: int,
    batch_size: int,
    rounds: int,
    device: str,
    correlation: bool,
) -> dict:
    import torch

    from cnntool.core.data import BatchStream, open_data
    from cnntool.core.loading.models import load_model
    from cnntool.tasks.diagnose import default_points, scan

    loaded = load_model(model_name, device=device)
    dataset = open_data(data)
    count = min(images, len(dataset))
    batches = [
        b.inputs.to(loaded.device)
        for b in BatchStream(
            dataset, loaded.preprocessing, batch_size=batch_size, indices=range(count)
        )
    ]
    points = default_points(loaded.module)
    bare_times, scan_times = [], []
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        start = time.perf_counter()
        with torch.no_grad():
            for inputs in batches:
                loaded.module(inputs)
        _sync(loaded.device)
        bare_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        states = scan(loaded.module, points, batches, correlation=correlation)
        _sync(loaded.device)
        scan_times.append(time.perf_counter() - start)
        del states
    bare, scanned = statistics.median(bare_times[1:]), statistics.median(scan_times[1:])
    return {
        "model": model_name,
        "data": data,
        "images": count,
        "points": len(points),
        "bare_images_per_s": count / bare,
        "scan_images_per_s": count / scanned,
        "ratio": scanned / bare,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-correlation", action="store_true")
    args = parser.parse_args()
    print(
        f"{'model':20} {'data':17} {'images':>6} {'points':>6} {'bare img/s':>10} "
        f"{'scan img/s':>10} {'scan/bare':>9}"
    )
    for model_name, data, images, batch_size in CASES:
        row = bench(
            model_name, data, images, batch_size, args.rounds, args.device, not args.no_correlation
        )
        print(
            f"{row['model']:20} {row['data']:17} {row['images']:>6} {row['points']:>6} "
            f"{row['bare_images_per_s']:>10.1f} {row['scan_images_per_s']:>10.1f} "
            f"{row['ratio']:>8.2f}×",
            flush=True,
        )


if __name__ == "__main__":
    main()
