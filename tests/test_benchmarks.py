"""The benchmark scripts run end to end on a tiny CPU config and write complete JSON lines (no timing checks)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import convert, dataloader, predict, train  # noqa: E402

TINY = [
    "--config",
    str(REPO / "recipes" / "configs" / "demo.yaml"),
    "--use_cpu",
    "true",
    "--per_device_train_batch_size",
    "4",
    "--per_device_eval_batch_size",
    "4",
]


def read_line(path: Path) -> dict:
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def assert_positive(result: dict, keys: list[str]) -> None:
    for key in keys:
        assert isinstance(result[key], float | int) and result[key] > 0, key


def assert_quotient(result: dict, key: str, numerator: str, denominator: str | float, scale: float = 1.0) -> None:
    """`result[key]` is numerator / denominator (a key or a number) × scale, up to the script's rounding."""
    below = result[denominator] if isinstance(denominator, str) else denominator
    expected = result[numerator] / below * scale
    assert result[key] == pytest.approx(expected, rel=0.02, abs=2e-3), key


def test_train_benchmark_on_generated_data(tmp_path):
    output = tmp_path / "results.jsonl"
    result = train.measure(
        [
            "--synthetic",
            "40",
            "--synthetic-size",
            "64",
            "--workdir",
            str(tmp_path / "work"),
            "--steps",
            "2",
            "--warmup",
            "1",
            "--peak-tflops",
            "1",
            "--output",
            str(output),
            *TINY,
            "--dataloader_num_workers",
            "0",
        ]
    )
    assert read_line(output) == result
    assert result["benchmark"] == "train" and result["device"] == "cpu" and result["image_size"] == 64
    assert result["batch_size"] == 4 and result["bf16"] is False
    assert_positive(
        result,
        [
            "bare_step_img_s",
            "pipeline_img_s",
            "pipeline_vs_bare",
            "time_to_first_step_s",
            "build_trainer_s",
            "train_start_to_first_step_s",
            "train_gflops_per_image",
            "pipeline_vs_bare_median_step",
            "train_images",
        ],
    )
    assert_quotient(result, "pipeline_vs_bare", "pipeline_img_s", "bare_step_img_s")
    assert_quotient(result, "pipeline_tflops", "pipeline_img_s", 1.0, scale=result["train_gflops_per_image"] / 1e3)
    assert_quotient(result, "bare_tflops", "bare_step_img_s", 1.0, scale=result["train_gflops_per_image"] / 1e3)
    assert_quotient(result, "pipeline_mfu", "pipeline_tflops", 1.0)  # --peak-tflops 1
    assert_quotient(result, "bare_mfu", "bare_tflops", 1.0)
    parts = result["imports_s"] + result["build_trainer_s"] + result["train_start_to_first_step_s"]
    assert result["time_to_first_step_s"] == pytest.approx(parts, abs=0.02)
    assert (tmp_path / "work" / "synthetic_40_64").is_dir()  # --workdir is kept


def test_synthetic_and_dataset_are_exclusive(tmp_path):
    with pytest.raises(SystemExit, match="not both"):
        train.measure(["--synthetic", "8", "--workdir", str(tmp_path), *TINY, "--dataset_name_or_path", "x"])


def test_dataloader_benchmark_per_worker_count(tiny_dataset_dir):
    result = dataloader.measure(
        [
            "--workers",
            "0",
            "1",
            "--batches",
            "2",
            "--warmup",
            "1",
            *TINY,
            "--dataset_name_or_path",
            str(tiny_dataset_dir),
        ]
    )
    assert result["benchmark"] == "dataloader" and result["augment_on_device"] is False
    assert_positive(
        result,
        ["train_workers_0_img_s", "train_workers_1_img_s", "eval_workers_1_img_s", "train_workers_1_first_batch_s"],
    )


def test_dataloader_benchmark_with_device_augmentation(tiny_dataset_dir):
    result = dataloader.measure(
        [
            "--workers",
            "0",
            "--batches",
            "2",
            "--warmup",
            "1",
            "--no-eval",
            *TINY,
            "--augment_on_device",
            "true",
            "--dataset_name_or_path",
            str(tiny_dataset_dir),
            "--bare-img-s",
            "4",
        ]
    )
    assert result["augment_on_device"] is True
    assert_positive(result, ["train_workers_0_img_s"])
    assert result["train_workers_0_vs_bare"] == pytest.approx(result["train_workers_0_img_s"] / 4, abs=0.02)


def test_predict_benchmark_against_bare_forward(tmp_path):
    result = predict.measure(["--images", "6", "--batch-size", "3", "--warmup", "1", "--device", "cpu", *TINY])
    assert result["benchmark"] == "predict" and result["images"] == 6 and result["dtype"] == "float32"
    assert_positive(result, ["bare_forward_img_s", "predict_img_s", "predict_vs_bare", "predict_vs_bare_median_batch"])
    assert_quotient(result, "predict_vs_bare", "predict_img_s", "bare_forward_img_s")
    median_batch = ("predict_vs_bare_median_batch", "predict_img_s_median_batch", "bare_forward_img_s_median_batch")
    assert_quotient(result, *median_batch)


def test_convert_benchmark_smoke(tmp_path):
    output = tmp_path / "results.jsonl"
    result = convert.measure(
        [
            "--images",
            "9",
            "--num-proc",
            "1",
            "--memory-images",
            "9",
            "--repeats",
            "1",
            "--image-size",
            "32",
            "--output",
            str(output),
        ]
    )
    assert read_line(output) == result
    assert result["benchmark"] == "convert" and result["images"] == 9 and result["cpu_count"] >= 1
    assert {"cpu", "python", "torch", "datasets", "pillow", "command"} <= set(result)
    assert_positive(
        result,
        [
            "plain_loop_img_s",
            "convert_num_proc_1_img_s",
            "convert_vs_plain_per_core",
            "max_rss_mib_9_images",
            "max_rss_anon_mib_9_images",
            "full_release_minutes_num_proc_1_measured",
            "full_release_minutes_16_cores_linear",
        ],
    )


def test_convert_benchmark_refuses_a_non_positive_num_proc(capsys):
    with pytest.raises(SystemExit):
        convert.measure(["--num-proc", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_tracking_benchmark(tmp_path):
    pytest.importorskip("trackio")
    from benchmarks import tracking

    output = tmp_path / "results.jsonl"
    result = tracking.measure(["--calls", "5", "--step-ms", "100", "--output", str(output)])
    assert read_line(output) == result
    assert_positive(result, ["step_callback_us", "training_log_us", "evaluation_log_us"])
    per_step = result["step_callback_us"] + result["training_log_us"] / 10
    assert result["overhead_fraction_of_training"] == pytest.approx(per_step / 100e3, rel=0.02, abs=1e-6)


def test_cli_startup_benchmark_smoke(tmp_path):
    output = tmp_path / "results.jsonl"
    script = str(REPO / "benchmarks" / "cli_startup.py")
    flags = ["--repeats", "1", "--only", "push --help", "--checkout", str(REPO), "--output", str(output)]
    subprocess.run([sys.executable, script, *flags], check=True, capture_output=True)
    result = read_line(output)
    assert result["repeats"] == 1 and {"cpu", "python", "torch", "command"} <= set(result)
    (median,) = result["median_s"].values()
    assert median > 0
