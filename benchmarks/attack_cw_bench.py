"""CPU time of `cnntool.cw` and `cnntool.deepfool` against torchattacks' CW and DeepFool (and
foolbox's L2DeepFoolAttack for the paper's DeepFool), in the same process.

The same model, the same preloaded batch of [0, 1] pixels and the same settings for each pair;
the runners are interleaved round by round and each one's median and fastest round are
reported, so a load spike on the machine hits all of them alike (on a shared machine the fastest
round is the steadier figure). CPU time (time.process_time: every thread of the process) is what
is compared, the goal being a ratio ≤ 1.0; wall time is printed beside it. `--threads 1` keeps
threads from spinning while they wait for a busy core, which CPU time would count.
CW runs on the model with its logits shifted up by a constant (the same classifier) so that
torchattacks' loss is Carlini's f6 and the two compute the same thing: each line also prints
the largest difference between the two results (0 where they are the same to the bit).
torchattacks gets the model wrapped as normalize-then-model.

    .venv/bin/python benchmarks/attack_cw_bench.py [--rounds 5] [--threads 1] [--only cw|deepfool]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import foolbox  # noqa: E402
import torchattacks  # noqa: E402

from cnntool.core.data import BatchStream, open_data  # noqa: E402
from cnntool.core.loading.models import load_model  # noqa: E402
from cnntool.tasks.attack import PixelModel, cw, deepfool  # noqa: E402

# attack, model, data, images, settings
CASES = [
    ("cw", "lenet5-mnist", "mnist-5k", 64, dict(c=10.0, kappa=0.0, steps=20, lr=0.1)),
    ("cw", "efficientnet_lite0", "imagenet-samples", 4, dict(c=1.0, kappa=0.0, steps=5, lr=0.01)),
    ("deepfool", "lenet5-mnist", "mnist-5k", 16, dict(steps=10, overshoot=0.02)),
]


class Shifted(nn.Module):
    """Logits + a constant: the same classifier, every logit positive (see the docstring)."""

    def __init__(self, inner: nn.Module, shift: float):
        super().__init__()
        self.inner, self.shift = inner, shift

    def forward(self, pixels):
        return self.inner(pixels) + self.shift


def batch(loaded, data, count):
    dataset = open_data(data)
    spread = range(0, len(dataset.paths), max(1, len(dataset.paths) // count))
    stream = BatchStream(
        dataset,
        loaded.preprocessing,
        batch_size=count,
        normalize=False,
        indices=list(spread)[:count],
    )
    first = next(iter(stream))
    labels = torch.tensor([dataset.labels[i] for i in first.indices])
    return first.inputs, labels


def runners(method, loaded, settings):
    pixel_model = PixelModel(loaded)
    if method == "cw":
        shifted = Shifted(pixel_model, 100.0).eval()
        return {
            "cnntool": lambda x, y: cw(shifted, x, y, **settings),
            "torchattacks": lambda x, y: torchattacks.CW(shifted, **settings)(x, y),
        }
    fmodel = foolbox.PyTorchModel(pixel_model, bounds=(0, 1))
    fool = foolbox.attacks.L2DeepFoolAttack(candidates=None, **settings)
    return {
        "cnntool torchattacks-variant": lambda x, y: deepfool(
            loaded, x, y, variant="torchattacks", **settings
        ),
        "torchattacks": lambda x, y: torchattacks.DeepFool(pixel_model, **settings)(x, y),
        "cnntool paper-variant": lambda x, y: deepfool(loaded, x, y, variant="paper", **settings),
        "foolbox": lambda x, y: fool(fmodel, x, y, epsilons=None)[1],
    }


def run_case(method, name, data, count, settings, rounds):
    loaded = load_model(name, device="cpu")
    images, labels = batch(loaded, data, count)
    run = runners(method, loaded, settings)
    results = {key: runner(images, labels) for key, runner in run.items()}  # also a warm-up
    cpu = {key: [] for key in run}
    wall = {key: [] for key in run}
    for _ in range(rounds):
        for key, runner in run.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            runner(images, labels)
            cpu[key].append(time.process_time() - start_cpu)
            wall[key].append(time.perf_counter() - start)
    median = {key: statistics.median(values) for key, values in cpu.items()}
    fastest = {key: min(values) for key, values in cpu.items()}
    keys = list(run)
    print(f"{method} on {name}, {len(images)} images, {settings}")
    for ours, theirs in zip(keys[::2], keys[1::2], strict=True):
        difference = (results[ours] - results[theirs]).abs().max().item()
        print(
            f"  {ours} {median[ours]:.2f} s CPU median, {fastest[ours]:.2f} fastest "
            f"({statistics.median(wall[ours]):.2f} s wall); {theirs} {median[theirs]:.2f} s, "
            f"{fastest[theirs]:.2f} ({statistics.median(wall[theirs]):.2f} s wall); CPU ratio "
            f"{median[ours] / median[theirs]:.3f} median, {fastest[ours] / fastest[theirs]:.3f} "
            f"fastest; largest difference {difference:.2g}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--only", choices=["cw", "deepfool"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, foolbox "
        f"{foolbox.__version__}, cpu, {torch.get_num_threads()} threads; median of "
        f"{args.rounds} interleaved rounds"
    )
    for case in CASES:
        if args.only in (None, case[0]):
            run_case(*case, rounds=args.rounds)


if __name__ == "__main__":
    main()
