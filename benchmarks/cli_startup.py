"""Benchmark how fast the commands answer `--help` and argument errors: wall time of fresh processes.

Each command runs --repeats times in a fresh `python` process (as a user's shell runs it), rounds interleaved so
that load on a shared machine spreads over all commands; the median and the fastest run are reported, with the
load average before and after. `--checkout A B` measures other checkouts of this repository too (e.g. the commit
before a change, from `git archive`), interleaved with the same Python, so that their numbers are comparable.

    python benchmarks/cli_startup.py --repeats 7
    python benchmarks/cli_startup.py --repeats 7 --checkout /tmp/before .
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.machine import environment, report  # noqa: E402

# (name, arguments after `python`): `chestxray X` as `-m pipeline.cli X`, which is what the console script runs.
COMMANDS = {
    "convert --help": ["-m", "pipeline.cli", "convert", "--help"],
    "push --help": ["-m", "pipeline.cli", "push", "--help"],
    "predict --help": ["-m", "pipeline.cli", "predict", "--help"],
    "compare --help": ["-m", "pipeline.cli", "compare", "--help"],
    "study --help": ["-m", "pipeline.cli", "study", "--help"],
    "demo --help": ["-m", "pipeline.cli", "demo", "--help"],
    "predict, missing image": ["-m", "pipeline.cli", "predict", "--model", "org/name", "no_such_image.png"],
    "push, bad --repo-id": ["-m", "pipeline.cli", "push", "no_such_run", "--repo-id", "justname"],
    "recipes/vit.py --help": ["recipes/vit.py", "--help"],
    "recipes/vit.py (no arguments)": ["recipes/vit.py"],
    "recipes/vit.py, missing recipe": ["recipes/vit.py", "--config", "no_such_recipe.yaml"],
    "recipes/vit.py, misspelt flag": ["recipes/vit.py", "--config", "recipes/configs/demo.yaml", "--learning_rat", "1"],
}


def time_command(arguments: list[str], checkout: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], cwd=checkout, env=env, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per command (default: 5)")
    parser.add_argument(
        "--checkout", type=Path, nargs="+", default=[REPO], help="the checkouts to measure (default: this one)"
    )
    parser.add_argument("--only", nargs="+", choices=list(COMMANDS), help="measure these commands only")
    parser.add_argument("--output", type=Path, default=None, help="also append the JSON line to this file")
    args = parser.parse_args()
    names = args.only or list(COMMANDS)
    checkouts = [path.resolve() for path in args.checkout]
    load_before = os.getloadavg()[0]
    times: dict[tuple[Path, str], list[float]] = {(c, name): [] for c in checkouts for name in names}
    for _ in range(args.repeats):
        for name in names:
            for checkout in checkouts:
                times[checkout, name].append(time_command(COMMANDS[name], checkout))
    for checkout in checkouts:
        print(f"\n{checkout}\n{'command':34s} {'median s':>9s} {'fastest s':>9s}")
        for name in names:
            print(f"{name:34s} {statistics.median(times[checkout, name]):9.2f} {min(times[checkout, name]):9.2f}")
    medians = {f"{c.name}: {name}": round(statistics.median(values), 3) for (c, name), values in times.items()}
    report(
        {
            **environment(),
            "repeats": args.repeats,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0],
            "median_s": medians,
        },
        args.output,
    )


if __name__ == "__main__":
    main()
