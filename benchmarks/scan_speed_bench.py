"""Scans against a naive forward: `model(x)` in eval mode vs core.runtime.prepare_for_scan.

Interleaved in one process, round after round, on the same preloaded batch (the packaged
sample photos, preprocessed as each model wants), three workloads per model:
- predict: logits of a batch (naive: no_grad + model(x); prepared: prepared.forward() +
  prepared(prepared.inputs(x)));
- features: the same forward with a hook on the penultimate layer that pools its output to a
  (B, C) row block and copies it to the host, as `cnntool features` does;
- fgsm: cnntool's FGSM (forward, cross-entropy, input gradient, sign step) on [0, 1] pixels
  (naive: the module as it is; prepared: needs_grad=True, inside prepared.forward()).

Prints each variant's median images/s, the median of the per-round ratios prepared/naive, and
how far the prepared answers are from the naive ones (max |Δ| of logits, features and
adversarial images, and the share of adversarial pixels that differ: a sign(∇) flip where the
gradient is ~0 moves a pixel by 2ε).

    .venv/bin/python benchmarks/scan_speed_bench.py [--models resnet50,efficientnet_lite0]
        [--batch 16] [--threads 2] [--rounds 7] [--device cpu] [--precision fp32]
        [--fold-bn] [--workloads predict,features,fgsm]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from cnntool.core.hooks import module_hooks
from cnntool.core.images import load_image
from cnntool.core.layers import resolve_layer
from cnntool.core.loading.models import load_model
from cnntool.core.runtime import prepare_for_scan
from cnntool.core.samples import photos
from cnntool.tasks.attack import fgsm

EPS = 2 / 255


def sample_batch(preprocessing, batch: int) -> torch.Tensor:
    """`batch` [0, 1] pixel images: the sample photos that scikit-image, scikit-learn and
    matplotlib ship (on a GPU machine too), repeated (flipped) as needed."""
    pixels = [preprocessing.to_pixels(load_image(p)) for p in photos()]
    while len(pixels) < batch:
        pixels += [p.flip(-1) for p in pixels]
    return torch.stack(pixels[:batch])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pooled_rows(module, layer: str, run, x):
    """The features workload: pool `layer`'s output inside its hook, rows to the host."""
    rows = []

    def post(_name, _module, _args, output):
        rows.append(
            (output.float().mean(dim=(2, 3)) if output.dim() == 4 else output.float()).cpu()
        )

    with module_hooks({layer: resolve_layer(module, layer)[1]}, post=post):
        run(x)
    return rows[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="resnet50,efficientnet_lite0")
    parser.add_argument("--workloads", default="predict,features,fgsm")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision",
        default="fp32",
        help="for the prepared side; several, comma-separated, run one after another",
    )
    parser.add_argument(
        "--fold-bn",
        action="store_true",
        help="fold BatchNorm on the prepared side (predict, features)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="instead: torch.compile against the prepared eager forward on a 1,000-image "
        "predict scan (cold inductor cache), and whether hooks still fire",
    )
    parser.add_argument("--images", type=int, default=1000, help="scan size for --compile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    chosen = args.workloads.split(",")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"torch {torch.__version__}, {where}, {args.threads} threads, batch {args.batch}"
        f"{', BN folded on the prepared side' if args.fold_bn else ''}"
    )
    if device.type == "cuda":
        print(
            "(the naive side runs with PyTorch's defaults, which let cuDNN use TF32 in float32 "
            "convolutions; the prepared fp32 side is IEEE float32)"
        )
    for name in args.models.split(","):
        if args.compile:
            compile_probe(name, device, args)
            continue
        for precision in args.precision.split(","):
            bench_model(name, device, args, chosen, precision)


def compile_probe(name: str, device: torch.device, args) -> None:
    """Does torch.compile pay for its warm-up on a scan of `args.images` images?

    Both sides are prepared (channels-last, inference mode); the compiled one also runs
    inductor with freezing (weights folded into the graph as constants: the CPU setting that
    lets it prepack oneDNN weights). The warm-up is the first call with an empty inductor
    cache; steady state is the median of interleaved calls. Then a forward hook is registered
    on a layer after compiling, as a scan registers its hooks, and counted."""
    import os
    import tempfile

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnntool-inductor-")
    import torch._inductor.config as inductor

    inductor.freezing = True
    torch.manual_seed(0)
    loaded = load_model(name, device=str(device))
    shape = loaded.preprocessing.input_shape
    x = loaded.preprocessing.normalize(sample_batch(loaded.preprocessing, args.batch))
    eager = prepare_for_scan(copy.deepcopy(loaded.module), device, example_input_shape=shape)
    slow = prepare_for_scan(copy.deepcopy(loaded.module), device, example_input_shape=shape)
    compiled = torch.compile(slow.module)

    def run(module):
        with eager.forward():
            out = module(eager.inputs(x))
        sync(device)
        return out

    reference = run(eager.module)
    start = time.perf_counter()
    answer = run(compiled)
    warm_up = time.perf_counter() - start
    eager_times, compiled_times = [], []
    for _ in range(args.rounds):
        for module, times in ((eager.module, eager_times), (compiled, compiled_times)):
            start = time.perf_counter()
            run(module)
            times.append(time.perf_counter() - start)
    e, c = statistics.median(eager_times), statistics.median(compiled_times)
    batches = args.images / args.batch
    eager_total, compiled_total = batches * e, warm_up + (batches - 1) * c
    print(
        f"\n{name}, torch.compile (inductor, freezing), {args.images}-image predict scan, "
        f"batch {args.batch}:"
    )
    print(
        f"  warm-up (first call, empty cache) {warm_up:.1f} s; steady: eager {args.batch / e:.1f} "
        f"img/s, compiled {args.batch / c:.1f} img/s ({e / c:.2f}×)"
    )
    print(
        f"  the scan: eager {eager_total:.0f} s, compiled {compiled_total:.0f} s "
        f"({'pays' if compiled_total < eager_total else 'does not pay'}); max |Δ| of the logits "
        f"{float((answer.float() - reference.float()).abs().max()):.2g}"
    )
    layer = resolve_layer(slow.module, "penultimate")[1]
    calls = []
    handle = layer.register_forward_hook(lambda *_: calls.append(1))
    run(compiled)
    handle.remove()
    print(
        f"  a forward hook registered after compiling fired {len(calls)} time(s) in one forward "
        f"(eager: 1)"
    )


def bench_model(name: str, device: torch.device, args, chosen, precision: str) -> None:
    torch.manual_seed(0)
    loaded = load_model(name, device=str(device))
    module, pre = loaded.module, loaded.preprocessing
    shape = pre.input_shape
    pixels = sample_batch(pre, args.batch)
    x = pre.normalize(pixels)
    layer = resolve_layer(module, "penultimate")[0]
    with torch.no_grad():
        labels = module(x.to(device)).argmax(dim=1).cpu()

    def naive_predict():
        with torch.no_grad():
            return module(x.to(device))

    def naive_features():
        with torch.no_grad():
            return pooled_rows(module, layer, lambda v: module(v.to(device)), x)

    def naive_fgsm():
        return fgsm(loaded, pixels.to(device), labels.to(device), EPS)

    # The prepared side runs on copies, prepared once as a scan does once per command; the
    # naive side keeps the loaded module as it is.
    started = time.perf_counter()
    fast = prepare_for_scan(
        copy.deepcopy(module),
        device,
        precision=precision,
        fold_bn=args.fold_bn,
        example_input_shape=shape,
    )
    prepare_seconds = time.perf_counter() - started
    fast_grad = prepare_for_scan(
        copy.deepcopy(module),
        device,
        needs_grad=True,
        precision=precision,
        channels_last=fast.channels_last,
    )
    fast_loaded = dataclasses.replace(loaded, module=fast_grad.module)

    def prepared_predict():
        with fast.forward():
            return fast(fast.inputs(x))

    def prepared_features():
        with fast.forward():
            return pooled_rows(fast.module, layer, lambda v: fast(fast.inputs(v)), x)

    def prepared_fgsm():
        with fast_grad.forward():
            return fgsm(fast_loaded, fast_grad.inputs(pixels), labels.to(device), EPS)

    cases = {
        "predict": (naive_predict, prepared_predict),
        "features": (naive_features, prepared_features),
        "fgsm": (naive_fgsm, prepared_fgsm),
    }
    cases = {k: v for k, v in cases.items() if k in chosen}
    print(
        f"\n{name}: {tuple(shape)}, prepared = {fast.describe()} "
        f"({fast.channels_last_reason}; preparing took {prepare_seconds:.2f} s)"
    )
    if fast.precision_note:
        print(f"  {fast.precision_note}")
    answers = {}
    for key, (naive, prepared) in cases.items():  # warm-up, and the answers to compare
        answers[key] = (naive(), prepared())
    times = {key: ([], []) for key in cases}
    for _ in range(args.rounds):
        for key, (naive, prepared) in cases.items():
            for slot, run in enumerate((naive, prepared)):
                sync(device)
                start = time.perf_counter()
                run()
                sync(device)
                times[key][slot].append(time.perf_counter() - start)
    print(f"{'workload':<10}{'naive img/s':>13}{'prepared img/s':>16}{'ratio':>8}   difference")
    for key, (naive_times, prepared_times) in times.items():
        ratio = statistics.median(a / b for a, b in zip(naive_times, prepared_times, strict=True))
        naive_rate = args.batch / statistics.median(naive_times)
        prepared_rate = args.batch / statistics.median(prepared_times)
        print(
            f"{key:<10}{naive_rate:>13.1f}{prepared_rate:>16.1f}{ratio:>7.2f}×   "
            f"{difference(key, *answers[key])}"
        )


def difference(key: str, naive: torch.Tensor, prepared: torch.Tensor) -> str:
    naive, prepared = naive.float().cpu(), prepared.float().cpu()
    delta = (prepared - naive).abs()
    text = f"max |Δ| {float(delta.max()):.2g} (largest |value| {float(naive.abs().max()):.3g})"
    if key == "fgsm":
        text += f", {float((delta > 1e-6).float().mean()):.3%} of pixels differ"
    else:
        same = (
            (prepared.argmax(dim=1) == naive.argmax(dim=1)).float().mean()
            if key == "predict"
            else None
        )
        if same is not None:
            text += f", top-1 agrees on {float(same):.0%}"
    return text


if __name__ == "__main__":
    main()
