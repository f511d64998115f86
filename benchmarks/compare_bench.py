"""compare's minibatch CKA against torch-cka and a naive full-batch CKA, in one process.

    .venv/bin/python benchmarks/compare_bench.py                  # 2,000 digits, 4 layers × 4
    .venv/bin/python benchmarks/compare_bench.py --images 5000 --rounds 3 --device cuda

LeNet-5 clean vs adversarially trained (lenet5-mnist, lenet5-mnist-adv) over mnist-5k, their 4
default layers (relu1 25,088 values, relu2 12,544, relu3 200, linear2 10), linear CKA:
- `ours`: cnntool.compare(...) as a user calls it: the scan (decoding included, in this
  process, `workers=0`, so that CPU times compare), minibatches of 250 strided digits, the
  Gram matrices and HSIC₁ of all 16 pairs at once;
- `torch-cka`: torch_cka.CKA(...).compare(loader) on the same minibatches, the digits decoded
  beforehand (not timed); it forms both Gram matrices and three HSIC₁ per pair, 16 pairs;
- `full batch`: a naive full-batch CKA as in a notebook: every image's features kept, one
  n × n Gram matrix per layer, centred (HKH), biased HSIC per pair (Kornblith et al. 2019).
Each runs `--rounds` times after a warm-up; the median wall time, images/s, the median CPU time
of the process (steadier than wall time on a shared machine) and the ratios to ours are
printed, with the largest difference of each from ours (torch-cka: the same estimator; full
batch: another estimator, its difference is the minibatch estimate's).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

LAYERS = ["relu1", "relu2", "relu3", "linear2"]
MINIBATCH = 256


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def ours(data, device):
    import cnntool

    a = cnntool.load_model("lenet5-mnist", device=device)
    b = cnntool.load_model("lenet5-mnist-adv", device=device)
    result = cnntool.compare(
        a,
        b,
        data,
        LAYERS,
        LAYERS,
        kernels=("linear",),
        minibatch=MINIBATCH,
        batch_size=256,
        workers=0,
    )
    return result.values["linear"]


def torch_cka(data, inputs, device):
    import torch
    from torch_cka import CKA

    import cnntool
    from cnntool.tasks.compare import Minibatches

    split = Minibatches.of(len(data), MINIBATCH)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs, torch.zeros(len(inputs))),
        batch_sampler=[list(split.members(k)) for k in range(split.count)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        anchor = CKA(
            cnntool.load_model("lenet5-mnist").module,
            cnntool.load_model("lenet5-mnist-adv").module,
            "clean",
            "adversarial",
            model1_layers=LAYERS,
            model2_layers=LAYERS,
            device=str(device),
        )
        anchor.compare(loader)
    return anchor.export()["CKA"].numpy()


def full_batch(inputs, device):
    """Every image's features, then one centred Gram matrix per layer (the naive way)."""
    import torch

    import cnntool

    def grams(name):
        loaded = cnntool.load_model(name, device=device)
        module, module_device = loaded.module.eval(), loaded.device
        found = {layer: [] for layer in LAYERS}
        hooks = [
            getattr(module, layer).register_forward_hook(
                lambda _m, _i, out, _n=layer: found[_n].append(out.flatten(1))
            )
            for layer in LAYERS
        ]
        with torch.no_grad():
            for chunk in inputs.split(256):
                module(chunk.to(module_device))
        for hook in hooks:
            hook.remove()
        out = []
        for layer in LAYERS:
            x = torch.cat(found[layer])
            k = (x @ x.T).double()
            out.append(k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean())
        return out

    ka, kb = grams("lenet5-mnist"), grams("lenet5-mnist-adv")
    values = torch.zeros(len(LAYERS), len(LAYERS), dtype=torch.float64)
    for i, k in enumerate(ka):
        for j, m in enumerate(kb):
            values[i, j] = (k * m).sum() / ((k * k).sum() * (m * m).sum()).sqrt()
    return values.cpu().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-full", action="store_true", help="no full-batch baseline")
    args = parser.parse_args()

    import numpy as np
    import torch

    import cnntool
    from cnntool.core.data import BatchStream, open_data

    device = args.device
    data = open_data("mnist-5k").spread(args.images)
    model = cnntool.load_model("lenet5-mnist")
    inputs = next(iter(BatchStream(data, model.preprocessing, batch_size=len(data)))).inputs
    runs = {
        "ours": lambda: ours(data, device),
        "torch-cka": lambda: torch_cka(data, inputs, device),
    }
    if not args.skip_full:
        runs["full batch"] = lambda: full_batch(inputs, device)
    times, cpu, values = {name: [] for name in runs}, {name: [] for name in runs}, {}
    for round_ in range(args.rounds + 1):  # the first round warms up and is dropped
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            values[name] = run()
            _sync(device)
            if round_:
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    base, base_cpu = statistics.median(times["ours"]), statistics.median(cpu["ours"])
    print(
        f"{len(data)} digits, {len(LAYERS)}×{len(LAYERS)} layers, linear CKA, "
        f"minibatch {MINIBATCH}, {device}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'':12} {'median s':>9} {'images/s':>9} {'÷ ours':>7} {'CPU s':>7} {'÷ ours':>7} "
        f"{'max |Δ| vs ours':>16}"
    )
    for name in runs:
        median, median_cpu = statistics.median(times[name]), statistics.median(cpu[name])
        gap = float(np.abs(values[name] - values["ours"]).max())
        print(
            f"{name:12} {median:9.2f} {len(data) / median:9.0f} {median / base:7.2f} "
            f"{median_cpu:7.1f} {median_cpu / base_cpu:7.2f} {gap:16.2e}"
        )


if __name__ == "__main__":
    main()
