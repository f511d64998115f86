"""CPU time of `cnntool visualize check` on a few images, run in this process.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/check_bench.py [--rounds 3]
        [--cases lenet lite0] [--extra --batch-size 8]

Each case is the command as a user types it (stdout and stderr discarded, data read in this
process: --workers 0), timed with time.process_time after one untimed warm-up run (imports,
first-call caches); the median over --rounds. The code under test is the `cnntool` on
sys.path: run the script from two checkouts, alternating, to compare before and after (the
numbers are CPU seconds of one thread, so the load of other processes moves them less than
wall time, but it still moves them).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CASES = {
    "lenet": ["lenet5-mnist", "mnist-5k", "--limit", "8"],
    "lite0": ["efficientnet_lite0", "imagenet-samples", "--limit", "2"],
}


def run(args: list[str]) -> float:
    from cnntool.cli.main import main

    start = time.process_time()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(["visualize", "check", *args, "--workers", "0"])
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"check {args} exited with {exc.code}") from None
    return time.process_time() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more options")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()}")
    for case in args.cases:
        command = CASES[case] + args.extra
        run(command)  # warm-up
        times = [run(command) for _ in range(args.rounds)]
        print(
            f"{case:6s} {' '.join(command):60s} median {statistics.median(times):7.2f} s CPU  "
            f"({', '.join(f'{t:.2f}' for t in times)})",
            flush=True,
        )
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
