"""CPU time of cnntool's APGD-CE and APGD-T against torchattacks' APGD and APGDT, same settings.

The same model, the same preloaded batch of [0, 1] pixels, ε, steps, restarts and seed for
both, timed in the same process with `time.process_time()` (CPU seconds of every thread); the
two are interleaved round by round and each one's median round is reported, so a load spike on
the machine hits both alike. Each round also checks that both fooled the same images.

Two rows per case:
- `same model`: both attack the model as loaded (NCHW): what the attack code itself costs.
- `as the CLI runs it`: ours inside `core.runtime.prepare_for_scan` as `cnntool attack auto`
  runs it (channels-last where it pays, parameters frozen), torchattacks on the model as loaded.

    .venv/bin/python benchmarks/attack_auto_bench.py [--rounds 5] [--threads 1] [--steps 10]
        [--device cuda] [--images 500] [--models lenet5-mnist-adv,lenet5-mnist]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import torchattacks  # noqa: E402

from cnntool.core.data import BatchStream, open_data  # noqa: E402
from cnntool.core.loading.models import load_model  # noqa: E402
from cnntool.core.runtime.prepare import prepare_for_scan  # noqa: E402
from cnntool.tasks.attack import PixelModel  # noqa: E402
from cnntool.tasks.attack.apgd import apgd, apgd_targeted  # noqa: E402

CASES = [  # model, data, ε (L∞)
    ("lenet5-mnist-adv", "mnist-5k", 0.3),
    ("lenet5-mnist", "mnist-5k", 0.3),
]
TARGETS = 3  # APGD-T's target classes (torchattacks: n_classes − 1)


def first_images(loaded, data, count):
    dataset = open_data(data)
    stream = BatchStream(
        dataset, loaded.preprocessing, batch_size=count, normalize=False, indices=range(count)
    )
    batch = next(iter(stream))
    labels = torch.tensor([dataset.labels[i] for i in batch.indices], device=loaded.device)
    return batch.inputs.to(loaded.device), labels


def run_case(name, data, eps, *, rounds, steps, count, device):
    loaded = load_model(name, device=device)
    images, labels = first_images(loaded, data, count)
    pixels = PixelModel(loaded)
    generator = lambda: torch.Generator(loaded.device).manual_seed(0)  # noqa: E731
    theirs = {
        "APGD-CE": lambda: torchattacks.APGD(pixels, eps=eps, steps=steps, seed=0)(images, labels),
        "APGD-T": lambda: torchattacks.APGDT(
            pixels, eps=eps, steps=steps, seed=0, n_classes=TARGETS + 1
        )(images, labels),
    }
    ours = {
        "APGD-CE": lambda x: apgd(loaded, x, labels, eps, steps=steps, generator=generator()),
        "APGD-T": lambda x: apgd_targeted(
            loaded, x, labels, eps, steps=steps, target_classes=TARGETS, generator=generator()
        ),
    }

    @contextlib.contextmanager
    def as_the_cli():  # the images as `cnntool attack auto` feeds them
        with prepare_for_scan(
            loaded.module, loaded.device, needs_grad=True, inference_mode=False,
            example_input_shape=loaded.input_shape,
        ) as prepared, prepared.forward():  # fmt: skip
            yield prepared.inputs(images)

    @contextlib.contextmanager
    def as_loaded():
        yield images

    for attack in ("APGD-CE", "APGD-T"):
        for mode, context in (("same model", as_loaded), ("as the CLI runs it", as_the_cli)):
            seconds = {"cnntool": [], "torchattacks": []}
            agree = True
            for round_ in range(rounds + 1):  # round 0 warms up (allocator, kernels)
                start = time.process_time()
                with context() as x:
                    found = ours[attack](x)
                _synchronize(loaded.device)
                mine = time.process_time() - start
                start = time.process_time()
                reference = theirs[attack]()
                _synchronize(loaded.device)
                other = time.process_time() - start
                with torch.no_grad():
                    agree &= torch.equal(
                        pixels(found).argmax(dim=1) != labels,
                        pixels(reference).argmax(dim=1) != labels,
                    )
                if round_:
                    seconds["cnntool"].append(mine)
                    seconds["torchattacks"].append(other)
            ours_s, theirs_s = (statistics.median(seconds[k]) for k in ("cnntool", "torchattacks"))
            with torch.no_grad():
                robust = (pixels(found).argmax(dim=1) == labels).float().mean().item()
            print(
                f"{name:17s} {attack:7s} {mode:18s} {count} img, {steps} steps: "
                f"cnntool {ours_s:6.2f} s  torchattacks {theirs_s:6.2f} s  "
                f"ratio {ours_s / theirs_s:.3f}  robust {robust:.1%}  "
                f"same images fooled: {'yes' if agree else 'NO'}"
            )


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=",".join(name for name, _, _ in CASES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, torchattacks {torchattacks.__version__}, {args.device}, "
        f"{torch.get_num_threads()} CPU threads; CPU seconds, median of {args.rounds} "
        f"interleaved rounds; ratio = cnntool / torchattacks (goal ≤ 1.0); L∞, 1 restart, "
        f"APGD-T towards {TARGETS} classes\n"
    )
    for name, data, eps in [case for case in CASES if case[0] in args.models.split(",")]:
        run_case(
            name, data, eps, rounds=args.rounds, steps=args.steps, count=args.images,
            device=args.device,
        )  # fmt: skip


if __name__ == "__main__":
    main()
