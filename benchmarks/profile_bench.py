"""`cnntool profile` against torchvision's metadata, fvcore and (when installed) ptflops.

For every torchvision classification model, at its default weights' crop size, with random
weights (nothing is downloaded): our params and GMACs and whether they agree with
`Weights.meta` (`num_params`, `_ops` rounded to 3 decimals), our time, and side by side
fvcore's FlopCountAnalysis total (one "flop" per MAC) and ptflops' MACs with their times.
Ours counts on the meta device; fvcore and ptflops run a real forward pass on the CPU.

    .venv/bin/python benchmarks/profile_bench.py [MODEL ...]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import statistics
import sys
import time
import warnings

import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cnntool.tasks.profile import profile  # noqa: E402

try:
    from fvcore.nn import FlopCountAnalysis
except ImportError:  # fvcore is a test extra
    FlopCountAnalysis = None
try:
    from ptflops import get_model_complexity_info
except ImportError:  # ptflops is optional
    get_model_complexity_info = None


def build(name: str):
    """The model with random weights, as its default weights configure it, and its crop size."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    kwargs = {}
    if name.startswith("vit_"):
        kwargs["image_size"] = weights.meta["min_size"][0]
    if name == "googlenet":
        kwargs["aux_logits"] = False
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    return model, weights.transforms().crop_size[0], weights.meta


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def fvcore_gmacs(model, size):
    x = torch.zeros(1, 3, size, size)
    analysis = FlopCountAnalysis(model, x).unsupported_ops_warnings(False)
    return analysis.uncalled_modules_warnings(False).total() / 1e9


def ptflops_gmacs(model, size):
    macs, _ = get_model_complexity_info(
        model, (3, size, size), as_strings=False, print_per_layer_stat=False, ost=io.StringIO()
    )
    return macs / 1e9


def bench(name: str) -> dict:
    model, size, meta = build(name)
    result, ours_s = timed(lambda: profile(model, (3, size, size)))
    row = {
        "model": name,
        "size": size,
        "params": result.total.params,
        "gmacs": result.total.macs / 1e9,
        "mode": result.mode,
        "ours_s": ours_s,
        "agree": result.total.params == meta["num_params"]
        and round(result.total.macs / 1e9, 3) == meta["_ops"],
    }
    with torch.no_grad():
        if FlopCountAnalysis is not None:
            row["fvcore"], row["fvcore_s"] = timed(lambda: fvcore_gmacs(model, size))
        if get_model_complexity_info is not None:
            row["ptflops"], row["ptflops_s"] = timed(lambda: ptflops_gmacs(model, size))
    return row


def cell(row: dict, key: str, fmt: str) -> str:
    return format(row[key], fmt) if key in row else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "models", nargs="*", default=torchvision.models.list_models(module=torchvision.models)
    )
    names = parser.parse_args().models
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)  # fvcore logs every unsupported op
    torch.set_num_threads(os.cpu_count() or 1)
    profile(torch.nn.Conv2d(3, 3, 3), (3, 8, 8))  # warm-up: imports and rule caches

    print(
        f"{'model':20} {'size':>4} {'params':>11} {'GMACs':>9} {'agree':>5} {'ours s':>7} "
        f"{'fvcore':>9} {'fv s':>7} {'ptflops':>9} {'pt s':>7}"
    )
    rows = []
    for name in names:
        row = bench(name)
        rows.append(row)
        print(
            f"{name:20} {row['size']:4d} {row['params']:11d} {row['gmacs']:9.3f} "
            f"{'yes' if row['agree'] else 'NO':>5} {row['ours_s']:7.3f} "
            f"{cell(row, 'fvcore', '9.3f')} {cell(row, 'fvcore_s', '7.2f')} "
            f"{cell(row, 'ptflops', '9.3f')} {cell(row, 'ptflops_s', '7.2f')}",
            flush=True,
        )
    summarize(rows)


def summarize(rows: list[dict]) -> None:
    agree = sum(row["agree"] for row in rows)
    print(
        f"\nagree with torchvision metadata (params and GMACs): {agree}/{len(rows)}; "
        f"meta mode: {sum(row['mode'] == 'meta' for row in rows)}/{len(rows)}"
    )
    ours = [row["ours_s"] for row in rows]
    print(
        f"ours: total {sum(ours):.1f} s, median {statistics.median(ours) * 1000:.0f} ms, "
        f"max {max(ours):.2f} s"
    )
    for tool in ("fvcore", "ptflops"):
        timed_rows = [row for row in rows if tool in row]
        if not timed_rows:
            print(f"{tool}: not installed")
            continue
        speedups = [row[f"{tool}_s"] / row["ours_s"] for row in timed_rows]
        counts = [row[tool] / row["gmacs"] for row in timed_rows]
        same = sum(abs(c - 1) < 0.005 for c in counts)
        print(
            f"{tool}: total {sum(row[f'{tool}_s'] for row in timed_rows):.1f} s; "
            f"its time / ours: median {statistics.median(speedups):.1f}x "
            f"(min {min(speedups):.1f}x, max {max(speedups):.1f}x); "
            f"its count / our MACs: median {statistics.median(counts):.3f} "
            f"(min {min(counts):.3f}, max {max(counts):.3f}), within 0.5%: {same}/{len(counts)}"
        )


if __name__ == "__main__":
    main()
