"""embed: t-SNE time and quality per engine, and feature extraction against a bare forward pass.

    .venv/bin/python benchmarks/embed_bench.py                     # 10k and 80k points, features
    .venv/bin/python benchmarks/embed_bench.py --quick             # 10k points, fewer rounds
    .venv/bin/python benchmarks/embed_bench.py --sizes 20000 --engines opentsne --no-features
    .venv/bin/python benchmarks/embed_bench.py \\
        --sklearn-80k       # also scikit-learn above 20k (~10 min)

t-SNE: blobs of 50 dimensions (sklearn.datasets.make_blobs, 10 centres, seed 0) through
tasks.embed.embed with the CLI's defaults (standardize; no PCA, the data already have 50
dimensions; perplexity 30; 250 + 500 iterations; every core). scikit-learn's Barnes-Hut is run
up to 20k points unless --sklearn-80k (it needs about 11 minutes for 80k on 2 cores); the ratio
column is its time over openTSNE's at the same size. `CPU s` is the process's CPU time (all
threads) and `load` the 1-minute load average after the run: on a machine shared with other
work, wall time near CPU time means the run had about one core. Trustworthiness (k = 5) and the 5-NN
accuracy of the blob labels in the map are measured on a seeded subsample of --quality-sample
(5,000) points: scikit-learn's trustworthiness needs all N² distances, which for 80k points
is 51 GB.

Feature extraction: the batches are decoded once and kept in memory; per round, a bare
`model(inputs)` under no_grad over all of them, then tasks.features.extract (capture of the
layer, the forward stopping there, pooling, rows appended to a scratch file) over the same
batches; rounds interleaved, the fastest round of each (the least disturbed by other work on
a shared machine; medians moved by ±20% between runs here). Ratio = bare time / extraction time
(1.0: the
extraction costs nothing beyond the forward; above 1: stopping early saved the layers after it).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

FEATURE_RUNS = [  # (model, data, layer, batch size)
    ("lenet5-mnist", "mnist-5k", "penultimate", 500),
    ("efficientnet_lite0", "imagenet-samples", "penultimate", 20),
]


def tsne_row(size: int, engine: str, quality_sample: int) -> dict:
    from sklearn.datasets import make_blobs

    from cnntool.tasks.embed import EmbedSettings, embed, quality

    points, labels = make_blobs(size, 50, centers=10, random_state=0)
    points = points.astype("float32")
    cpu = _cpu_seconds()
    result = embed(points, EmbedSettings(engine=engine, n_jobs=-1))
    cpu = _cpu_seconds() - cpu
    start = time.perf_counter()
    figures = quality(points, result.coords, labels, sample=quality_sample)
    return {
        "size": size,
        "engine": engine,
        "seconds": result.seconds,
        "cpu": cpu,
        "load": os.getloadavg()[0],
        "trust": figures.trustworthiness,
        "knn": figures.knn_accuracy_2d,
        "points": figures.points,
        "quality_s": time.perf_counter() - start,
    }


def _cpu_seconds() -> float:
    """CPU time of this process, all its threads: on a busy machine, wall time / CPU time shows
    how many cores the run really had."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def features_row(
    model_name: str, data: str, layer: str, batch_size: int, rounds: int, repeat: int
) -> dict:
    import torch

    from cnntool.core.data import BatchStream, open_data
    from cnntool.core.layers import resolve_layer
    from cnntool.core.loading.models import load_model
    from cnntool.tasks.features import FeatureSpool, extract

    loaded = load_model(model_name, device="cpu")
    name = resolve_layer(loaded.module, layer)[0]
    batches = (
        list(BatchStream(open_data(data), loaded.preprocessing, batch_size=batch_size)) * repeat
    )
    count = sum(len(b.indices) for b in batches)

    def bare():
        with torch.no_grad():
            for batch in batches:
                loaded.module(batch.inputs)

    def features():
        with FeatureSpool() as spool:
            extract(loaded.module, name, batches, spool, pooling="avg")

    times: dict[str, list[float]] = {"bare": [], "features": []}
    bare()  # warm-up: first-call allocations and kernel choices
    for _ in range(rounds):
        for mode, work in (("bare", bare), ("features", features)):
            start = time.perf_counter()
            work()
            times[mode].append(time.perf_counter() - start)
    # the fastest round of each: the one least disturbed by other work on a shared machine
    bare_s, features_s = min(times["bare"]), min(times["features"])
    return {
        "model": model_name,
        "layer": name,
        "images": count,
        "bare": count / bare_s,
        "features": count / features_s,
        "ratio": bare_s / features_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 80000])
    parser.add_argument(
        "--engines", nargs="+", default=["opentsne", "sklearn"], choices=["opentsne", "sklearn"]
    )
    parser.add_argument(
        "--sklearn-80k",
        action="store_true",
        help="Also run scikit-learn above 20k points (80k: about 11 minutes).",
    )
    parser.add_argument("--quality-sample", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5, help="Feature extraction rounds.")
    parser.add_argument("--no-features", action="store_true")
    parser.add_argument("--no-tsne", action="store_true")
    parser.add_argument("--quick", action="store_true", help="10k points only, 3 rounds.")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.rounds = [10000], 3
    if not args.no_tsne:
        print(
            f"{'points':>7} {'engine':9} {'seconds':>8} {'vs openTSNE':>11} {'CPU s':>7} "
            f"{'load':>5} {'trust':>6} {'5-NN 2-D':>8} {'on':>5} {'quality s':>9}",
            flush=True,
        )
        for size in args.sizes:
            opentsne_s = None
            for engine in args.engines:
                if engine == "sklearn" and size > 20000 and not args.sklearn_80k:
                    print(f"{size:7d} {engine:9} {'skipped (--sklearn-80k)':>27}", flush=True)
                    continue
                row = tsne_row(size, engine, args.quality_sample)
                if engine == "opentsne":
                    opentsne_s = row["seconds"]
                ratio = f"{row['seconds'] / opentsne_s:10.2f}x" if opentsne_s else f"{'':>11}"
                print(
                    f"{size:7d} {engine:9} {row['seconds']:8.1f} {ratio} {row['cpu']:7.1f} "
                    f"{row['load']:5.1f} {row['trust']:6.3f} {row['knn']:8.3f} {row['points']:5d} "
                    f"{row['quality_s']:9.1f}",
                    flush=True,
                )
    if not args.no_features:
        print(
            f"\n{'model':20} {'layer':14} {'images':>6} {'bare img/s':>10} {'features img/s':>14} "
            f"{'ratio':>6}",
            flush=True,
        )
        for model_name, data, layer, batch_size in FEATURE_RUNS:
            repeat = 1 if model_name.startswith("lenet") else 5
            row = features_row(model_name, data, layer, batch_size, args.rounds, repeat)
            print(
                f"{row['model']:20} {row['layer']:14} {row['images']:6d} {row['bare']:10.1f} "
                f"{row['features']:14.1f} {row['ratio']:6.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
