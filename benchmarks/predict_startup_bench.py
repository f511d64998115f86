"""`cnntool predict` on a handful of images against the plain PyTorch script a user would write.

Both run in fresh processes, interleaved round after round, on the same digits (10 PNGs of
mnist-5k written to a temporary folder) with the same weights (advertorch's clean LeNet-5):
the plain script defines the network, loads the state dict, reads and scales each image with
PIL and numpy, and prints the top class. The ratio is what start-up costs a user on top of the
work itself (#23's goal: ≤ 1.2×).

    .venv/bin/python benchmarks/predict_startup_bench.py [--rounds 7] [--images 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLAIN = """
import sys
from pathlib import Path
import numpy as np
import torch
from PIL import Image
from torch import nn

net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                    nn.Linear(3136, 200), nn.ReLU(), nn.Linear(200, 10))
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
net.load_state_dict(dict(zip(net.state_dict(), state.values())))
net.eval()
files = sorted(Path(sys.argv[2]).glob("*.png"))
x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("L"), np.float32) / 255)[None]
                 for f in files])
with torch.no_grad():
    for f, p in zip(files, net(x).softmax(1)):
        print(f, int(p.argmax()), float(p.max()))
"""


def run_once(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--images", type=int, default=10)
    options = parser.parse_args()

    from PIL import Image

    from cnntool.core.data import open_data
    from cnntool.core.loading.zoo import BUILTIN_MODELS

    weights = BUILTIN_MODELS["lenet5-mnist"].weights_path()
    with tempfile.TemporaryDirectory() as folder:
        for i, digit in enumerate(open_data("mnist-5k").spread(options.images).arrays):
            Image.fromarray(digit).save(Path(folder) / f"{i:03d}.png")
        script = Path(folder) / "plain.py"
        script.write_text(PLAIN)
        cases = {
            "plain PyTorch script": [str(script), str(weights), folder],
            "cnntool predict": ["-m", "cnntool", "predict", "lenet5-mnist", folder, "-q"],
            "import torch": ["-c", "import torch"],
        }
        for args in cases.values():  # warm the file cache once
            run_once(args)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(options.rounds):
            for name, args in cases.items():
                times[name].append(run_once(args))
    plain = statistics.median(times["plain PyTorch script"])
    print(
        f"{options.images} images, {options.rounds} rounds, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(f"{'case':24} {'median s':>9} {'min s':>7} {'÷ plain':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:24} {median:9.3f} {min(values):7.3f} {median / plain:7.2f}×")


if __name__ == "__main__":
    main()
