"""`chestxray compare` at the size of the real study: the official test split (25,596 images, 2,797 patients).

    python benchmarks/report.py [--runs 11] [--bootstrap 1000] [--nih-metadata DIR] [--output results.jsonl]

Labels, patients, ages, sexes and views come from NIH's own label CSV and `test_list.txt` (default:
`../shared/nih_sample/metadata` where it exists); without them, an NIH-shaped cohort of the same size is generated
(patients with 1–40 images, NIH's finding prevalences). Images are not needed (`--explain-images 0`): every row
holds the same tiny PNG. Each run's predictions are the labels blurred by its own noise, so runs differ. The
report runs as a subprocess, as a user runs it; wall time, CPU time and peak RSS are the child's.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import environment, report  # noqa: E402
from pipeline.dataset import FEATURES  # noqa: E402
from pipeline.labels import FINDINGS, to_multi_hot  # noqa: E402
from pipeline.nih import read_labels_csv, read_split_list  # noqa: E402
from pipeline.run_folder import write_predictions  # noqa: E402

SHARED_METADATA = REPO.parent / "shared" / "nih_sample" / "metadata"
TEST_IMAGES, TEST_PATIENTS = 25_596, 2_797
# Share of NIH's official test images with each finding (ChestX-ray14, Data_Entry_2017_v2020.csv).
PREVALENCE = np.array([0.12, 0.04, 0.07, 0.03, 0.18, 0.04, 0.02, 0.004, 0.24, 0.07, 0.06, 0.04, 0.02, 0.10])


def nih_cohort(metadata: Path) -> dict[str, list]:
    records = read_labels_csv(metadata / "Data_Entry_2017_v2020.csv")
    rows = [records[name] for name in read_split_list(metadata / "test_list.txt")]
    return {
        "labels": [to_multi_hot(r.findings) for r in rows],
        "image_id": [r.image_id for r in rows],
        "patient_id": [r.patient_id for r in rows],
        "age_years": [r.age_years for r in rows],
        "sex": [r.sex for r in rows],
        "view_position": [r.view_position for r in rows],
        "follow_up": [r.follow_up for r in rows],
    }


def generated_cohort(seed: int = 0) -> dict[str, list]:
    """TEST_IMAGES images of TEST_PATIENTS patients, the patients' image counts skewed as NIH's are."""
    rng = np.random.default_rng(seed)
    counts = 1 + rng.multinomial(TEST_IMAGES - TEST_PATIENTS, rng.dirichlet(np.full(TEST_PATIENTS, 0.5)))
    patients = np.repeat(np.arange(1, TEST_PATIENTS + 1), counts)
    follow_up = np.concatenate([np.arange(c) for c in counts])
    labels = (rng.random((TEST_IMAGES, len(FINDINGS))) < PREVALENCE).astype(np.float32)
    ages = rng.integers(1, 95, TEST_PATIENTS)[patients - 1]
    return {
        "labels": labels.tolist(),
        "image_id": [f"{p:08d}_{f:03d}.png" for p, f in zip(patients, follow_up, strict=True)],
        "patient_id": patients.tolist(),
        "age_years": ages.tolist(),
        "sex": np.where(rng.random(TEST_PATIENTS) < 0.56, "M", "F")[patients - 1].tolist(),
        "view_position": np.where(rng.random(TEST_IMAGES) < 0.6, "AP", "PA").tolist(),
        "follow_up": follow_up.tolist(),
    }


def save_cohort(columns: dict[str, list], path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    png = {"bytes": buffer.getvalue(), "path": None}

    def split(rows: slice) -> Dataset:
        part = {key: values[rows] for key, values in columns.items()}
        part["findings"] = [[j for j, v in enumerate(labels) if v] for labels in part["labels"]]
        part["image"] = [png] * len(part["labels"])
        return Dataset.from_dict(part, features=FEATURES)

    splits = {"train": split(slice(0, 1)), "validation": split(slice(1, 2)), "test": split(slice(None))}
    DatasetDict(splits).save_to_disk(str(path))


def write_runs(columns: dict[str, list], dataset: Path, root: Path, n_runs: int) -> list[Path]:
    import yaml

    labels = np.asarray(columns["labels"], dtype=float)
    rng = np.random.default_rng(1)
    runs = []
    for k in range(n_runs):
        run_dir = root / f"run_{k:02d}"
        run_dir.mkdir(parents=True)
        signal = 0.5 + 0.15 * k / max(1, n_runs - 1)
        logits = (labels - 0.5) * 2 * signal + rng.normal(0, 1, labels.shape) - 1.5
        write_predictions(run_dir / "test_predictions.csv", columns["image_id"], 1 / (1 + np.exp(-logits)), FINDINGS)
        config = {"model": {}, "data": {"dataset_name_or_path": str(dataset)}, "training": {}}
        (run_dir / "run_config.yaml").write_text(yaml.safe_dump(config))
        (run_dir / "all_results.json").write_text(json.dumps({"train_runtime": 3600.0, "num_parameters": 10**6}))
        runs.append(run_dir)
    return runs


def measure(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--nih-metadata", type=Path, default=SHARED_METADATA if SHARED_METADATA.is_dir() else None)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--output", type=Path, default=None, help="append the JSON line to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.workdir or Path(scratch)
        columns = nih_cohort(args.nih_metadata) if args.nih_metadata else generated_cohort()
        save_cohort(columns, work / "dataset")
        runs = write_runs(columns, work / "dataset", work / "runs", args.runs)
        command = [sys.executable, "-m", "pipeline.cli", "compare", *map(str, runs), "--output", str(work / "report")]
        command += ["--bootstrap", str(args.bootstrap), "--explain-images", "0"]
        start = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if completed.returncode != 0:
            raise SystemExit(f"compare failed:\n{completed.stderr[-3000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {
        "benchmark": "report",
        **environment(),
        "cohort": "NIH test_list.txt" if args.nih_metadata else "generated, NIH-shaped",
        "images": len(columns["image_id"]),
        "patients": len(set(columns["patient_id"])),
        "runs": args.runs,
        "bootstrap": args.bootstrap,
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }
    report(result, args.output)
    return result


if __name__ == "__main__":
    measure()
