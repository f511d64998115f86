"""How long `cnntool --help` and `import cnntool` take, against a bare interpreter start.

Each case runs in a fresh process, the cases interleaved round after round; the median of each
is printed with its ratio to `python -c pass` (the interpreter's own start, the floor) and, for
scale, to `import torch` (what every command that computes pays once). Then the slowest imports
of `cnntool --help` by `python -X importtime`: torch must not be among them.

    .venv/bin/python benchmarks/cli_startup_bench.py [--rounds 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = {
    "python -c pass": ["-c", "pass"],
    "import cnntool": ["-c", "import cnntool"],
    "cnntool --help": ["-m", "cnntool", "--help"],
    "cnntool profile --help": ["-m", "cnntool", "profile", "--help"],
    "import torch": ["-c", "import torch"],
}


def run_once(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def slowest_imports(args: list[str], count: int = 8) -> list[tuple[int, str]]:
    """(cumulative µs, module) of the top-level imports `python -X importtime` reports."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if len(name) - len(name.lstrip()) == 1:  # top level only: its time includes the nested
            rows.append((int(cumulative), name.strip()))
    return sorted(rows, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    rounds = parser.parse_args().rounds
    for args in CASES.values():  # warm the file cache once
        run_once(args)
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(rounds):
        for name, args in CASES.items():
            times[name].append(run_once(args))
    floor = statistics.median(times["python -c pass"])
    torch = statistics.median(times["import torch"])
    print(f"{'case':26} {'median s':>9} {'min s':>7} {'÷ python':>9} {'÷ import torch':>15}")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:26} {median:9.3f} {min(values):7.3f} {median / floor:8.1f}× "
            f"{median / torch:14.2f}×"
        )
    print(f"\nslowest top-level imports of `cnntool --help` ({rounds} rounds above; one run here):")
    for microseconds, name in slowest_imports(CASES["cnntool --help"]):
        print(f"  {microseconds / 1000:8.1f} ms  {name}")


if __name__ == "__main__":
    main()
