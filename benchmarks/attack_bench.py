"""`cnntool.fgsm` images/s against torchattacks' FGSM and against a bare forward + input backward.

The same model, the same preloaded batches of [0, 1] pixels and the same ε for all three, timed
in the same process; the three are interleaved round by round and each one's median round is
reported, so a load spike on the machine hits all of them alike. The bare baseline is the least
any FGSM can do: normalize, forward, cross-entropy, `autograd.grad` with respect to the input
only (parameters frozen), `x + ε·sign(g)`, clamp. torchattacks gets the model wrapped as
normalize-then-model (its `set_normalization_used` means normalized inputs, not this).

    .venv/bin/python benchmarks/attack_bench.py [--rounds 7] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torchattacks  # noqa: E402

from cnntool.core.data import BatchStream, open_data  # noqa: E402
from cnntool.core.loading.models import load_model  # noqa: E402
from cnntool.tasks.attack import PixelModel, fgsm  # noqa: E402

CASES = [  # model, data, batch size, batches, ε
    ("efficientnet_lite0", "imagenet-samples", 10, 2, 2 / 255),
    ("lenet5-mnist", "mnist-5k", 500, 4, 0.3),
]


def batches(loaded, data, batch_size, count):
    dataset = open_data(data)
    stream = BatchStream(
        dataset,
        loaded.preprocessing,
        batch_size=batch_size,
        normalize=False,
        indices=range(batch_size * count),
    )
    return [
        (
            b.inputs.to(loaded.device),
            torch.tensor([dataset.labels[i] for i in b.indices], device=loaded.device),
        )
        for b in stream
    ]


def bare_fgsm(pixel_model, images, labels, eps):
    images = images.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(F.cross_entropy(pixel_model(images), labels), images)
    return torch.clamp(images + eps * gradient.sign(), 0, 1)


def run_case(name, data, batch_size, count, eps, rounds, device):
    loaded = load_model(name, device=device)
    pixel_model = PixelModel(loaded)
    attack = torchattacks.FGSM(pixel_model, eps=eps)
    data_batches = batches(loaded, data, batch_size, count)
    images = sum(len(x) for x, _ in data_batches)

    def frozen_bare(x, y):
        flags = [p.requires_grad for p in pixel_model.parameters()]
        for p in pixel_model.parameters():
            p.requires_grad_(False)
        try:
            return bare_fgsm(pixel_model, x, y, eps)
        finally:
            for p, flag in zip(pixel_model.parameters(), flags, strict=True):
                p.requires_grad_(flag)

    runners = {
        "cnntool": lambda x, y: fgsm(loaded, x, y, eps),
        "torchattacks": attack,
        "bare": frozen_bare,
    }
    for runner in runners.values():  # warm-up: allocator, kernels, lazy imports
        runner(*data_batches[0])
    seconds = {key: [] for key in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            _synchronize(loaded.device)
            start = time.perf_counter()
            for x, y in data_batches:
                runner(x, y)
            _synchronize(loaded.device)
            seconds[key].append(time.perf_counter() - start)
    rate = {key: images / statistics.median(values) for key, values in seconds.items()}
    print(
        f"{name:20s} {images:5d} img  batch {batch_size:4d}  "
        f"cnntool {rate['cnntool']:8.1f}/s  torchattacks {rate['torchattacks']:8.1f}/s  "
        f"bare {rate['bare']:8.1f}/s  "
        f"vs torchattacks {rate['cnntool'] / rate['torchattacks']:.3f}× "
        " "
        f"vs bare {rate['cnntool'] / rate['bare']:.3f}×"
    )


def _synchronize(device):
    if (
        device.type == "cuda"
    ):  # CUDA runs asynchronously: wait for the work before reading the clock
        torch.cuda.synchronize(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, {args.device}, "
        f"{torch.get_num_threads()} CPU threads; median of {args.rounds} interleaved rounds"
    )
    for case in CASES:
        run_case(*case, rounds=args.rounds, device=args.device)


if __name__ == "__main__":
    main()
