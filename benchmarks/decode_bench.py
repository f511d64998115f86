"""Can data loading keep up with the model? Decode + resize + crop throughput against lite0's
forward pass, in one process.

    .venv/bin/python benchmarks/decode_bench.py                      # 48 JPEGs per size, 3 rounds
    .venv/bin/python benchmarks/decode_bench.py --images 96 --rounds 5 --workers 0 1 2 4
    python3 benchmarks/decode_bench.py --device cuda --batch 64 --workers 0 2 4 8   # on a GPU

The JPEGs are synthesized from the sample photos (random crops and flips, saved at quality 90):
640×480 (too small for a reduced decode at lite0's 256-px resize: draft changes nothing) and
2048×1536 (a camera photo: decoded at 1/4 scale with draft). For each size, draft off and on,
and each worker count, a BatchStream (batch 16, lite0's preprocessing, normalized) is iterated
`--rounds` times; workers persist between rounds, so the first round (process start) is
reported apart and the median of the others is the steady rate. With `--device cuda` the
batches come pinned and each is copied to the GPU (non_blocking) inside the timed loop. The
forward pass of efficientnet_lite0 on the same batch size runs naive (eval, no_grad) and
channels-last under inference_mode. Ratios: decode images/s over forward images/s (≥ 1: the
model waits for nobody).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnntool.core.data import BatchStream, open_data
from cnntool.core.images import load_image
from cnntool.core.loading.models import load_model
from cnntool.core.samples import photos


def synthesize(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> Path:
    """`count` JPEGs of `size` (w, h): random crops (at least half a photo) and flips of the
    sample photos, resized; returns a list file naming them."""
    rng = np.random.default_rng(seed)
    sources = [load_image(p).convert("RGB") for p in photos()]
    paths = []
    for i in range(count):
        photo = sources[i % len(sources)]
        width, height = photo.size
        crop_w = int(rng.integers(width // 2, width + 1))
        crop_h = min(height, max(height // 2, int(crop_w * size[1] / size[0])))
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        image = photo.crop((left, top, left + crop_w, top + crop_h)).resize(
            size, Image.Resampling.BICUBIC
        )
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        paths.append(folder / f"{size[0]}x{size[1]}_{i:04d}.jpg")
        image.save(paths[-1], quality=90)
    listing = folder / f"{size[0]}x{size[1]}.txt"
    listing.write_text("\n".join(str(p) for p in paths))
    return listing


def decode_rates(
    listing: Path,
    preprocessing,
    workers: int,
    draft: bool,
    rounds: int,
    batch: int,
    device: torch.device,
) -> tuple[float, float]:
    """(first round images/s, median images/s of the later rounds) of a BatchStream pass."""
    dataset = open_data(str(listing))
    rates = []
    with BatchStream(
        dataset, preprocessing, batch_size=batch, workers=workers, draft=draft, device=device
    ) as stream:
        for _ in range(rounds):
            start = time.perf_counter()
            count = 0
            for item in stream:
                item.inputs.to(device, non_blocking=True)
                count += len(item.indices)
            _sync(device)
            rates.append(count / (time.perf_counter() - start))
    return rates[0], statistics.median(rates[1:] if len(rates) > 1 else rates)


def forward_rates(model, rounds: int, batch: int, device: torch.device) -> dict[str, float]:
    """lite0 images/s on batches of `batch`: naive and channels-last + inference_mode."""
    inputs = torch.randn(batch, 3, 224, 224, device=device)
    module = model.module.to(device).eval()
    rates = {}
    with torch.no_grad():
        module(inputs)  # warm-up
        rates["naive"] = _median_rate(lambda: module(inputs), rounds, batch, device)
    module = module.to(memory_format=torch.channels_last)
    fast = inputs.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        module(fast)
        rates["channels-last"] = _median_rate(lambda: module(fast), rounds, batch, device)
    model.module.to(memory_format=torch.contiguous_format)
    return rates


def _median_rate(step, rounds: int, batch: int, device: torch.device) -> float:
    times = []
    for _ in range(rounds):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = load_model("efficientnet_lite0")
    print(
        f"cores usable: {len(os.sched_getaffinity(0))}, torch threads: {torch.get_num_threads()}, "
        f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
    )
    forward = forward_rates(model, max(3, 2 * args.rounds), args.batch, device)
    print(
        f"lite0 forward, batch {args.batch}: "
        + ", ".join(f"{k} {v:.1f} img/s" for k, v in forward.items())
    )
    print(
        f"\n{'JPEG':>10} {'draft':>5} {'workers':>7} {'1st round':>10} {'steady':>9} "
        f"{'/ naive':>8} {'/ channels-last':>16}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for size in ((640, 480), (2048, 1536)):
            listing = synthesize(Path(folder), args.images, size)
            for draft in (False, True):
                for workers in args.workers:
                    first, steady = decode_rates(
                        listing,
                        model.preprocessing,
                        workers,
                        draft,
                        args.rounds,
                        args.batch,
                        device,
                    )
                    print(
                        f"{size[0]}x{size[1]:<5} {'on' if draft else 'off':>5} {workers:>7} "
                        f"{first:>7.1f}/s {steady:>7.1f}/s {steady / forward['naive']:>7.2f}x "
                        f"{steady / forward['channels-last']:>15.2f}x"
                    )


if __name__ == "__main__":
    main()
