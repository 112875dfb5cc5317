"""Where a benchmark number was measured, and how it is reported: without importing torch, so that the
conversion benchmark measures `chestxray convert` as a user runs it (without a deep-learning library loaded)."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

VERSIONED = ("torch", "transformers", "datasets", "pillow")


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(device: str = "cpu") -> dict[str, Any]:
    """The machine, the accelerator (`device`, its name), the library versions and the command line."""
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": device,
        "python": platform.python_version(),
        **{package: _version(package) for package in VERSIONED},
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def report(result: dict[str, Any], output: Path | None) -> None:
    """Print the numbers as a table and as one JSON line; append the line to `output` when given."""
    for key, value in result.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            print(f"{key:40s} {value}")
    line = json.dumps(result)
    print(line)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
