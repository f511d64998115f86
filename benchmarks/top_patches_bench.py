"""top-patches scan speed and memory against a bare forward pass over the same batches.

    .venv/bin/python benchmarks/top_patches_bench.py  # lite0 and resnet18, 1000 images
    .venv/bin/python benchmarks/top_patches_bench.py --images 200 --models efficientnet_lite0

Each (model, mode) runs in a fresh process so that its peak RSS (ru_maxrss) is its own. Modes:
- `bare`: `model(batch.inputs)` under no_grad for every batch of the same BatchStream (the
  DataLoader decodes and preprocesses the images in both modes);
- `scan`: tasks.top_patches.scan over the same stream: capture of the layer (the forward stops
  there), top-K of every unit of the layer merged per batch.
`--preloaded ROUNDS` measures the compute overhead alone: the batches decoded once and kept in
memory, bare and scan interleaved round after round, the median of each.
The data are imagenet-samples' 20 photos (or --data) listed over and over (a list file) up to
--images.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

LAYERS = {"efficientnet_lite0": "_blocks.15", "resnet18": "layer4"}


def one(
    model_name: str,
    mode: str,
    images: int,
    batch_size: int,
    workers: int,
    top: int,
    device: str = "cpu",
    data: str = "imagenet-samples",
) -> dict:
    import torch

    from cnntool.core.data import BatchStream, open_data
    from cnntool.core.loading.models import load_model
    from cnntool.tasks.top_patches import scan

    loaded = load_model(model_name, device=device)
    photos = open_data(data).paths
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("\n".join(photos[i % len(photos)] for i in range(images)))
    dataset = open_data(listing.name)
    stream = BatchStream(dataset, loaded.preprocessing, batch_size=batch_size, workers=workers)
    start = time.perf_counter()
    if mode == "bare":
        with torch.no_grad():
            for batch in stream:
                loaded.module(batch.inputs.to(loaded.device, non_blocking=True))
    else:
        scan(loaded.module, LAYERS[model_name], stream, units=None, top=top, device=loaded.device)
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if loaded.device.type == "cuda" else None
    os.unlink(listing.name)
    return {
        "model": model_name,
        "mode": mode,
        "images": images,
        "seconds": seconds,
        "images_per_s": images / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": gpu_mb,
    }


def preloaded(
    model_name: str, images: int, batch_size: int, top: int, rounds: int, device: str, data: str
) -> dict:
    """The compute overhead alone: batches decoded once and kept in memory (on the device),
    bare and scan interleaved round after round in one process; the median round of each."""
    import statistics

    import torch

    from cnntool.core.data import BatchStream, open_data
    from cnntool.core.loading.models import load_model
    from cnntool.tasks.top_patches import scan

    loaded = load_model(model_name, device=device)
    stream = BatchStream(open_data(data), loaded.preprocessing, batch_size=batch_size)
    one_pass = [b for b in stream]
    for b in one_pass:
        b.inputs = b.inputs.to(loaded.device)
    batches = [one_pass[i % len(one_pass)] for i in range(max(1, images // batch_size))]
    count = sum(len(b.indices) for b in batches)

    def timed(work) -> float:
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        work()
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def bare():
        with torch.no_grad():
            for b in batches:
                loaded.module(b.inputs)

    times = {"bare": [], "scan": []}
    for _ in range(rounds):
        times["bare"].append(timed(bare))
        times["scan"].append(
            timed(
                lambda: scan(
                    loaded.module,
                    LAYERS[model_name],
                    batches,
                    units=None,
                    top=top,
                    device=loaded.device,
                )
            )
        )
    bare_s, scan_s = statistics.median(times["bare"]), statistics.median(times["scan"])
    return {
        "model": model_name,
        "images": count,
        "bare_img_s": count / bare_s,
        "scan_img_s": count / scan_s,
        "ratio": bare_s / scan_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(LAYERS))
    parser.add_argument("--images", type=int, nargs="+", default=[1000])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--top", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", default="imagenet-samples", help="Images to list over and over.")
    parser.add_argument(
        "--preloaded",
        type=int,
        metavar="ROUNDS",
        help="Measure the compute overhead alone on in-memory batches, ROUNDS rounds.",
    )
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(
            json.dumps(
                one(
                    *args.one,
                    args.images[0],
                    args.batch_size,
                    args.workers,
                    args.top,
                    args.device,
                    args.data,
                )
            )
        )
        return
    if args.preloaded:
        for model_name in args.models:
            r = preloaded(
                model_name,
                args.images[0],
                args.batch_size,
                args.top,
                args.preloaded,
                args.device,
                args.data,
            )
            print(
                f"{model_name:20} {r['images']:6d} preloaded: bare {r['bare_img_s']:.1f} img/s, "
                f"scan {r['scan_img_s']:.1f} img/s, ratio {r['ratio']:.3f}",
                flush=True,
            )
        return
    print(
        f"{'model':20} {'images':>6} {'bare img/s':>10} {'scan img/s':>10} {'ratio':>6} "
        f"{'bare MB':>8} {'scan MB':>8}"
    )
    for model_name in args.models:
        for images in args.images:
            rows = {}
            for mode in ("bare", "scan"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--one",
                        model_name,
                        mode,
                        "--images",
                        str(images),
                        "--batch-size",
                        str(args.batch_size),
                        "--workers",
                        str(args.workers),
                        "--top",
                        str(args.top),
                        "--device",
                        args.device,
                        "--data",
                        args.data,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows[mode] = json.loads(out.stdout.splitlines()[-1])
            bare, scanned = rows["bare"], rows["scan"]
            print(
                f"{model_name:20} {images:6d} {bare['images_per_s']:10.1f} "
                f"{scanned['images_per_s']:10.1f} "
                f"{scanned['images_per_s'] / bare['images_per_s']:6.3f} {bare['peak_rss_mb']:8.0f} "
                f"{scanned['peak_rss_mb']:8.0f}"
                + (
                    f" GPU MB bare {bare['peak_gpu_mb']:.0f} scan {scanned['peak_gpu_mb']:.0f}"
                    if bare["peak_gpu_mb"]
                    else ""
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
