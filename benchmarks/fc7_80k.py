"""The classic headline, measured: "80k images in 5 minutes: fc7 t-SNE embedding".

An end-to-end pipeline, timed stage by stage:
0. synthesize N JPEG photos (random crops, flips and exposure of the sample photos that the
   installed packages ship, saved at 640×480 in one folder per source photo) — setup, not
   counted in the pipeline;
1. decode: the data loader alone (core.data.BatchStream: read, decode, resize, crop) over a
   sample of the images, with the same workers and batch size — can it feed the model?
2. forward: the model alone on preloaded batches, naive `model(x)` and prepared
   (core.runtime.prepare_for_scan at --precision) — how fast can it eat?
3. features: `cnntool features MODEL FOLDER --layer L -o f.npz` (decode and forward
   overlapped; a subprocess, timed from start to exit, Python start-up and model load included);
4. t-SNE and 5. image map: `cnntool embed --features f.npz --plot scatter.png --image-map
   map.png` (a subprocess; its stderr lines are timestamped as they arrive, and the stages are
   read from them: the t-SNE line reports its own seconds; "pictures" is the time from it to
   the last "wrote" line, nearly all of it the image map).

Runs without network (nothing is downloaded); on a GPU machine give --device cuda. cnntool
runs as `python -m cnntool` from this checkout. --precision goes to the forward-alone stage and
to `cnntool features`; other options for the two commands go through --features-args /
--embed-args.

    # a quick check (CPU, 500 images)
    .venv/bin/python benchmarks/fc7_80k.py --n 500 --work /tmp/fc7
    # CPU here, 10,000 images, extrapolated to 80,000
    .venv/bin/python benchmarks/fc7_80k.py --n 10000 --work /tmp/fc7 --workers 2 --batch-size 64
    # GPU machine, 80,000 images
    python3 benchmarks/fc7_80k.py --n 80000 --work /tmp/fc7 --device cuda --batch-size 256 \\
        --workers 14 --summary $OUT/fc7_80k.json --copy-pictures $OUT
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = (640, 480)
GOAL_SECONDS = 300


# --- 0. synthesize ------------------------------------------------------------------------------


def _photo_sources() -> list[str]:
    from cnntool.core.samples import photos

    return photos()


_DECODED: dict = {}  # per process: sample photo path -> decoded RGB image


def _synthesize_one(job: tuple[int, str, str, str]) -> None:
    """One 640×480 JPEG: a random 4:3-ish crop (25–100% of the photo's area) of `source`,
    flipped half the time, exposure ×0.8–1.2; seeded by its index, so reruns are identical."""
    from PIL import Image, ImageEnhance, ImageOps

    index, source, folder, name = job
    rng = random.Random(index)
    if source not in _DECODED:  # each process decodes each sample photo once
        with Image.open(source) as opened:
            _DECODED[source] = opened.convert("RGB")
    image = _DECODED[source]
    width, height = image.size
    area = width * height * rng.uniform(0.25, 1.0)
    aspect = (4 / 3) * rng.uniform(0.8, 1.25)
    crop_w = min(width, max(16, round(math.sqrt(area * aspect))))
    crop_h = min(height, max(16, round(math.sqrt(area / aspect))))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    image = image.crop((left, top, left + crop_w, top + crop_h)).resize(SIZE, Image.BILINEAR)
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
    image.save(os.path.join(folder, name), quality=90)


def synthesize(folder: Path, n: int, workers: int) -> float:
    """N photos under folder/<source name>/NNNNNN.jpg; reuses a folder that already has them."""
    marker = folder / f".complete-{n}"
    if marker.exists():
        print(f"0. synthesize: reusing {n} images in {folder}")
        return 0.0
    if folder.exists():
        shutil.rmtree(folder)
    sources = _photo_sources()
    jobs = []
    for source in sources:
        (folder / Path(source).stem).mkdir(parents=True, exist_ok=True)
    for index in range(n):
        source = sources[index % len(sources)]
        jobs.append((index, source, str(folder / Path(source).stem), f"{index:06d}.jpg"))
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(max(1, workers)) as pool:
        for _ in pool.imap_unordered(_synthesize_one, jobs, chunksize=64):
            pass
    seconds = time.perf_counter() - start
    marker.touch()
    print(
        f"0. synthesize: {n} JPEGs at {SIZE[0]}×{SIZE[1]} from {len(sources)} sample photos in "
        f"{seconds:.1f} s ({n / seconds:.0f}/s, {workers} processes)"
    )
    return seconds


# --- 1. decode and 2. forward, measured in this process ----------------------------------------


def measure_decode(
    folder: Path, model: str, sample: int, batch_size: int, workers: int, device: str
) -> float:
    """Images/s of the data loader alone over the first `sample` images."""
    from cnntool.core.data import BatchStream, open_data
    from cnntool.core.loading.models import load_model

    preprocessing = load_model(model, device="cpu").preprocessing
    dataset = open_data(str(folder))
    count = min(sample, len(dataset))
    options = {"batch_size": batch_size, "workers": workers, "indices": list(range(count))}
    if "device" in getattr(BatchStream, "__dataclass_fields__", {}):
        options["device"] = device  # pinned batches for CUDA, as a scan gets them
    stream = BatchStream(dataset, preprocessing, **options)
    start = time.perf_counter()
    seen = sum(len(batch.indices) for batch in stream)
    seconds = time.perf_counter() - start
    rate = seen / seconds
    print(
        f"1. decode: {seen} images in {seconds:.1f} s = {rate:.0f} img/s "
        f"(data loader alone, {workers} workers, batch {batch_size})"
    )
    return rate


def measure_forward(
    model: str, layer: str, device: str, batch_size: int, precision: str, batches: int
) -> dict[str, float]:
    """Images/s of the model alone up to `layer` on preloaded random batches: naive vs prepared."""
    import torch

    from cnntool.core.hooks import capture
    from cnntool.core.layers import resolve_layer
    from cnntool.core.loading.models import load_model
    from cnntool.core.runtime import prepare_for_scan

    loaded = load_model(model, device=device)
    module, shape = loaded.module, loaded.preprocessing.input_shape
    name = resolve_layer(module, layer)[0]
    x = torch.randn((batch_size, *shape), generator=torch.Generator().manual_seed(0))
    if loaded.device.type == "cuda":
        x = x.pin_memory()

    def timed(run) -> float:
        run()  # warm-up (cuDNN / oneDNN pick their kernels)
        _sync(loaded.device)
        start = time.perf_counter()
        for _ in range(batches):
            run()
        _sync(loaded.device)
        return batches * batch_size / (time.perf_counter() - start)

    def naive():
        with torch.no_grad(), capture(module, [name], stop_early=True) as cap:
            cap.run(x.to(loaded.device, non_blocking=True))

    rates = {"naive": timed(naive)}
    with prepare_for_scan(
        module, loaded.device, precision=precision, example_input_shape=shape
    ) as prepared:

        def fast():
            with prepared.forward(), capture(module, [name], stop_early=True) as cap:
                cap.run(prepared.inputs(x))

        rates["prepared"] = timed(fast)
        described = prepared.describe()
    print(
        f"2. forward to {name}: naive {rates['naive']:.0f} img/s, prepared ({described}) "
        f"{rates['prepared']:.0f} img/s = {rates['prepared'] / rates['naive']:.2f}× "
        f"(model alone, batch {batch_size}, {batches} batches)"
    )
    return rates  # the model goes with this frame; main() then empties the CUDA cache


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- 3. features, 4. t-SNE, 5. image map: the CLI as subprocesses ------------------------------


def run_cli(args: list[str], log: Path) -> tuple[float, list[tuple[float, str]]]:
    """Run `python -m cnntool ARGS`; (wall seconds, [(seconds since start, stderr line)])."""
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
        COLUMNS="120",
    )
    command = [sys.executable, "-m", "cnntool", *args]
    print("   $ " + shlex.join(["cnntool", *args]))
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    with open(log, "w") as stdout:
        process = subprocess.Popen(
            command, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
        )

        def read() -> None:
            for line in process.stderr:
                lines.append((time.perf_counter() - start, line.rstrip()))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        code = process.wait()
        reader.join()
    seconds = time.perf_counter() - start
    if code != 0:
        tail = "\n".join(line for _, line in lines[-15:])
        raise SystemExit(f"cnntool {args[0]} failed (exit {code}):\n{tail}")
    return seconds, lines


def line_times(lines: list[tuple[float, str]], pattern: str) -> list[float]:
    """When the stderr lines matching `pattern` arrived (seconds since start)."""
    return [seconds for seconds, line in lines if re.search(pattern, line)]


def embed_stages(lines, wall: float) -> dict[str, float]:
    """t-SNE seconds as embed reports them; "pictures" from the t-SNE line to the last "wrote"
    line (the scatter plot, the image map and coords.npz: the image map is nearly all of it);
    start-up, loading and PCA's share = what is left of the wall time."""
    stages: dict[str, float] = {}
    for _, line in lines:
        match = re.search(r"t-SNE.* in ([0-9.]+) s", line)
        if match:
            stages["tsne"] = float(match.group(1))
    tsne_line = line_times(lines, r"t-SNE.* in [0-9.]+ s")
    wrote = line_times(lines, r"\bwrote\b")
    if tsne_line and wrote:
        stages["pictures"] = wrote[-1] - tsne_line[0]
    stages["embed_other"] = wall - sum(stages.values())
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=500, help="images to synthesize and embed")
    parser.add_argument("--work", default="/tmp/cnntool-fc7", help="folder for images and outputs")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument(
        "--layer",
        default="penultimate",
        help="the fc7-like layer (vgg16/alexnet: fc7; others: penultimate)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data loader workers (default: CPU cores - 1, at least 1)",
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        help="fp32, tf32, bf16 or fp16: the forward-alone stage and `cnntool features`",
    )
    parser.add_argument("--features-args", default="", help="more options for `cnntool features`")
    parser.add_argument("--embed-args", default="", help="more options for `cnntool embed`")
    parser.add_argument(
        "--decode-sample",
        type=int,
        default=2000,
        help="images for the decode-alone stage (0: skip it)",
    )
    parser.add_argument(
        "--forward-batches",
        type=int,
        default=10,
        help="batches for the forward-alone stage (0: skip it)",
    )
    parser.add_argument(
        "--quality",
        action="store_true",
        help="let embed also compute its quality figures (off: --quality-sample 0)",
    )
    parser.add_argument("--extrapolate-to", type=int, default=80000)
    parser.add_argument("--summary", help="write the figures to this JSON file")
    parser.add_argument(
        "--copy-pictures",
        metavar="FOLDER",
        help="copy scatter.png and map.png here (e.g. $OUT on a device machine)",
    )
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    workers = args.workers if args.workers is not None else max(1, cores - 1)
    device = args.device
    if device == "auto":
        from cnntool.core.device import resolve_device

        device = str(resolve_device("auto"))
    work = Path(args.work)
    folder = work / f"photos-{args.n}"
    features, plot, image_map = work / "features.npz", work / "scatter.png", work / "map.png"
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"fc7 pipeline: {args.n} images, {args.model} {args.layer}, device {device}, "
        f"batch {args.batch_size}, {workers} workers, {cores} CPU cores"
    )

    figures: dict[str, float] = {"n": args.n}
    figures["synthesize"] = synthesize(folder, args.n, workers=max(1, cores))
    if args.decode_sample:
        figures["decode_img_s"] = measure_decode(
            folder, args.model, args.decode_sample, args.batch_size, workers, device
        )
    if args.forward_batches:
        rates = measure_forward(
            args.model, args.layer, device, args.batch_size, args.precision, args.forward_batches
        )
        figures["forward_naive_img_s"], figures["forward_prepared_img_s"] = (
            rates["naive"],
            rates["prepared"],
        )
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()  # leave the GPU's memory to the features subprocess

    print("3. features")
    seconds, _ = run_cli(
        [
            "features",
            args.model,
            str(folder),
            "--layer",
            args.layer,
            "-o",
            str(features),
            "--device",
            device,
            "--batch-size",
            str(args.batch_size),
            "--workers",
            str(workers),
            "--precision",
            args.precision,
            *shlex.split(args.features_args),
        ],
        work / "features.log",
    )
    figures["features"] = seconds
    print(
        f"   {seconds:.1f} s = {args.n / seconds:.0f} img/s end to end (start-up and model load "
        "included)"
    )

    print("4-5. t-SNE and image map")
    quality = [] if args.quality else ["--quality-sample", "0"]
    wall, lines = run_cli(
        [
            "embed",
            "--features",
            str(features),
            "--plot",
            str(plot),
            "--image-map",
            str(image_map),
            "-o",
            str(work / "coords.npz"),
            *quality,
            *shlex.split(args.embed_args),
        ],
        work / "embed.jsonl",
    )
    stages = embed_stages(lines, wall)
    figures.update(stages)
    for _, line in lines:
        if "t-SNE" in line or "wrote" in line or "warn" in line.lower():
            print(f"   | {line}")
    print(
        f"   t-SNE {stages.get('tsne', float('nan')):.1f} s, pictures (image map, scatter) "
        f"{stages.get('pictures', float('nan')):.1f} s, the rest of embed (start-up, loading) "
        f"{stages['embed_other']:.1f} s"
    )

    total = figures["features"] + wall
    figures["total"] = total
    report(figures, args, total)
    if args.copy_pictures:
        for picture in (plot, image_map):
            shutil.copy(picture, Path(args.copy_pictures) / picture.name)
    if args.summary:
        Path(args.summary).write_text(json.dumps(figures, indent=2) + "\n")


def report(figures: dict[str, float], args, total: float) -> None:
    n, target = args.n, args.extrapolate_to
    print(
        f"\nsummary, {n} images: features {figures['features']:.1f} s + t-SNE "
        f"{figures.get('tsne', float('nan')):.1f} s + pictures "
        f"{figures.get('pictures', float('nan')):.1f} s "
        f"+ embed's rest {figures['embed_other']:.1f} s = {total:.1f} s end to end "
        f"({'within' if total <= GOAL_SECONDS else 'over'} 5 minutes)"
    )
    if target != n:
        scale = target / n
        # features scale with N (start-up included: an overestimate); openTSNE's FFT gradients
        # are about N log N; the image map draws at most --max-images (10,000 by default)
        tsne = figures.get("tsne", 0.0) * scale * math.log(target) / math.log(max(n, 2))
        pictures = figures.get("pictures", 0.0) * min(target, 10000) / min(n, 10000)
        guess = figures["features"] * scale + tsne + pictures + figures["embed_other"]
        print(
            f"extrapolated to {target} images: features {figures['features'] * scale:.0f} s, "
            f"t-SNE ~{tsne:.0f} s (N log N), pictures ~{pictures:.0f} s (a 10,000-image sample), "
            f"total ~{guess:.0f} s ({guess / 60:.1f} min)"
        )
        figures["extrapolated_total"] = guess


if __name__ == "__main__":
    main()
