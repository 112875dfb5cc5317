"""Benchmark `chestxray convert` on real-size NIH images against a plain decode-and-resize loop.

Builds an NIH tree of N images by hard-linking the 28 shipped 1024 px PNGs under new names (official
layout, real v2020 CSV format, patient-disjoint split lists), then in one process:
  1. a plain Pillow loop (open, decode, resize to 256 px) over the same files, one core: the floor;
  2. `convert()` with each --num-proc;
and, in fresh subprocesses, the peak memory of converting trees of --memory-images images, to show that it
does not grow with the number of images.

    python benchmarks/convert.py --images 1000 --num-proc 1 2 --memory-images 200 2000

Prints a table and one JSON line with the machine, versions and command (appended to --output when given).
The full-release (112,120 images) estimates: one per measured --num-proc, at its measured rate, and one for
16 cores, which assumes that the parallel part scales linearly from the 1-process rate (the serial parts:
parsing the CSV, ~3 s for the full release, and `save_to_disk`, are in the measured rates, not scaled).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.machine import environment, report  # noqa: E402
from pipeline.convert import convert, positive_int  # noqa: E402
from pipeline.images import resize_keep_aspect  # noqa: E402
from pipeline.nih import read_labels_csv  # noqa: E402
from pipeline.synthetic import SyntheticRow, write_labels_csv, write_split_list  # noqa: E402

SAMPLE = REPO / "pipeline" / "assets" / "nih_sample"
FULL_RELEASE = 112_120


def build_tree(root: Path, n_images: int) -> list[Path]:
    """An official-layout tree of `n_images` hard links to the shipped PNGs, with real-format metadata."""
    records = list(read_labels_csv(SAMPLE / "Data_Entry_2017_v2020.csv").values())
    rows, files = [], []
    for index in range(n_images):
        source = records[index % len(records)]
        row = SyntheticRow(
            image_id=f"{index // 3 + 1:08d}_{index % 3:03d}.png",
            findings=source.findings,
            patient_id=index // 3 + 1,
            follow_up=index % 3,
            age_2017=f"{source.age_years or 0:03d}Y",
            age_2020=source.age_years or 0,
            sex=source.sex,
            view_position=source.view_position,
            mode="L",
        )
        folder = root / f"images_{index // 10_000 + 1:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / row.image_id
        try:
            os.link(SAMPLE / "images" / source.image_id, target)
        except OSError:
            shutil.copyfile(SAMPLE / "images" / source.image_id, target)
        rows.append(row)
        files.append(target)
    write_labels_csv(root / "Data_Entry_2017_v2020.csv", rows, "2020")
    test = [row.image_id for row in rows if row.patient_id % 5 == 1]  # patient 1 on: no split is empty
    write_split_list(root / "test_list.txt", test)
    write_split_list(root / "train_val_list.txt", [row.image_id for row in rows if row.patient_id % 5 != 1])
    return files


def plain_loop(files: list[Path], image_size: int) -> float:
    """Images per second of open + decode + resize alone, on one core."""
    start = time.perf_counter()
    for path in files:
        with Image.open(path) as image:
            resize_keep_aspect(image.convert("L"), image_size)
    return len(files) / (time.perf_counter() - start)


def timed_convert(root: Path, output: Path, image_size: int, num_proc: int) -> float:
    """Images per second of the whole conversion (split, read, encode, write, save_to_disk, card)."""
    start = time.perf_counter()
    summary = convert(root, output, image_size=image_size, num_proc=num_proc, overwrite=True)
    return sum(summary.counts.values()) / (time.perf_counter() - start)


def _status_kib(pid: int) -> dict[str, int]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines) if v.strip().endswith("kB")}


def peak_memory_mib(root: Path, output: Path, image_size: int) -> dict[str, float]:
    """Peak memory of `chestxray convert --num-proc 1` in a fresh process, in MiB.

    `max_rss` is what /usr/bin/time reports (wait4's ru_maxrss). It counts pages of the memory-mapped Arrow
    files that `save_to_disk` reads, which the kernel can drop at will; `max_rss_anon` (sampled from
    /proc every 20 ms) is the process's own heap, the memory that would run out.
    """
    command = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "convert",
        "--nih-root",
        str(root),
        "--output",
        str(output),
        "--image-size",
        str(image_size),
        "--num-proc",
        "1",
        "--overwrite",
    ]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak_anon = 0
    pid, status, usage = 0, 0, None
    while pid == 0:  # wait4, not Popen.poll: the rusage of a reaped child is gone
        peak_anon = max(peak_anon, _status_kib(process.pid).get("RssAnon", 0))
        time.sleep(0.02)
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"conversion failed: {' '.join(command)}")
    return {"max_rss": round(usage.ru_maxrss / 1024, 1), "max_rss_anon": round(peak_anon / 1024, 1)}


def measure(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=positive_int, default=1000, help="images in the throughput tree")
    parser.add_argument("--num-proc", type=positive_int, nargs="+", default=[1, 2])
    parser.add_argument("--memory-images", type=positive_int, nargs="*", default=[200, 2000])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--repeats", type=positive_int, default=2, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--output", type=Path, default=None, help="also append the JSON line to this file")
    args = parser.parse_args(argv)
    if args.images < 9 or min(args.memory_images, default=9) < 9:
        parser.error("--images and --memory-images must be at least 9 (3 patients: train, validation, test)")

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="convert-bench-"))
    result: dict = {"benchmark": "convert", **environment(), "images": args.images, "image_size": args.image_size}
    files = build_tree(workdir / "nih", args.images)
    plain_loop(files[:56], args.image_size)  # warm the page cache and Pillow
    # Interleaved rounds, best of each: other load on the machine hits both measurements alike.
    rates: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        rates.setdefault("plain_loop_img_s", []).append(plain_loop(files, args.image_size))
        for num_proc in args.num_proc:
            rate = timed_convert(workdir / "nih", workdir / "out", args.image_size, num_proc)
            rates.setdefault(f"convert_num_proc_{num_proc}_img_s", []).append(rate)
    result.update({key: round(max(values), 1) for key, values in rates.items()})
    one = result.get("convert_num_proc_1_img_s")
    if one:
        result["convert_vs_plain_per_core"] = round(one / result["plain_loop_img_s"], 3)
    for n in args.memory_images:
        root = workdir / f"nih_{n}"
        build_tree(root, n)
        for key, value in peak_memory_mib(root, workdir / f"out_{n}", args.image_size).items():
            result[f"{key}_mib_{n}_images"] = value
    for num_proc in args.num_proc:  # at the rate measured with that many processes
        rate = result[f"convert_num_proc_{num_proc}_img_s"]
        result[f"full_release_minutes_num_proc_{num_proc}_measured"] = round(FULL_RELEASE / rate / 60, 1)
    if one:  # the parallel part scaled linearly from one process; I/O limits not included (see BENCHMARKS.md)
        result["full_release_minutes_16_cores_linear"] = round(FULL_RELEASE / (one * 16) / 60, 1)
    report(result, args.output)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


if __name__ == "__main__":
    measure()
