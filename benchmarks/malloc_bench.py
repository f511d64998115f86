"""A CPU scan with glibc's default malloc thresholds against cnntool's (core/allocator.py).

The same `cnntool predict` in child processes, CNNTOOL_MALLOC=system (glibc's defaults: blocks
over 32 MB are mmap'd and unmapped at free) against the default (large blocks kept for reuse),
interleaved round by round; each one's median round of wall time, CPU time of user and kernel,
and peak memory.

    .venv/bin/python benchmarks/malloc_bench.py [--rounds 5] [--batch-size 32] \\
        [--model efficientnet_lite0] [--data faces]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def run(args, system: bool) -> tuple[float, float, float, float]:
    """(wall s, user s, kernel s, peak RSS MB) of one child process (its own rusage)."""
    env = {**os.environ, "CNNTOOL_MALLOC": "system" if system else "cnntool"}
    command = [sys.executable, "-m", "cnntool", "predict", args.model, args.data, "-q"]
    command += ["--batch-size", str(args.batch_size)]
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode})")
    return wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--data", default="faces")
    args = parser.parse_args()
    rows: dict[bool, list] = {True: [], False: []}
    for _ in range(args.rounds):
        for system in (True, False):
            rows[system].append(run(args, system))
    print(
        f"cnntool predict {args.model} {args.data} --batch-size {args.batch_size}, "
        f"median of {args.rounds} interleaved rounds (whole process, start-up included)"
    )
    medians = {k: [statistics.median(col) for col in zip(*v, strict=True)] for k, v in rows.items()}
    for system, label in ((True, "glibc defaults (CNNTOOL_MALLOC=system)"), (False, "cnntool")):
        wall, user, kernel, rss = medians[system]
        print(
            f"{label:40s} wall {wall:6.2f} s  user {user:6.2f} s  kernel {kernel:5.2f} s  "
            f"peak {rss:6.0f} MB"
        )
    print(f"wall ratio cnntool / glibc defaults: {medians[False][0] / medians[True][0]:.2f}")


if __name__ == "__main__":
    main()
