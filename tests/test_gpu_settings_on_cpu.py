"""The GPU configuration rehearsed on the CPU: bf16 autocast and `torch.compile` for a ViT and a CNN.

Fused AdamW, on-device augmentation and channels-last run in other tests; these two settings are what a user's
first GPU run turns on, so their dtype and compile mismatches must surface here, not there.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import load_from_disk
from safetensors.torch import load_file
from training import argv, read_predictions

from pipeline.labels import FINDINGS
from pipeline.predict import Predictor
from pipeline.train import main

TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TINY_VIT["patch_size"] = 8
# bf16 keeps 8 bits of mantissa: a sigmoid score moves by a few thousandths against the fp32 model.
BF16_ATOL = 0.02


@pytest.mark.slow
@pytest.mark.parametrize(
    "model", [{"model_type": "paper_cnn"}, {"model_type": "vit", "config_overrides": json.dumps(TINY_VIT)}]
)
def test_bf16_and_compile_train_a_complete_run_that_predict_agrees_with(model, tiny_dataset_dir, tmp_path):
    run_dir = tmp_path / "run"
    flags = argv(
        tiny_dataset_dir, run_dir, num_train_epochs=1, max_train_samples=96, bf16="true", torch_compile="true", **model
    )
    assert main(flags) == 0
    for name in ("model.safetensors", "thresholds.json", "validation_predictions.csv", "test_predictions.csv"):
        assert (run_dir / name).is_file(), name
    results = json.loads((run_dir / "test_results.json").read_text())
    assert np.isfinite(results["test_auroc_mean"]) and np.isfinite(results["test_loss"])
    # Mixed precision computes in bf16 but keeps (and saves) the weights in fp32.
    assert {str(t.dtype) for t in load_file(run_dir / "model.safetensors").values()} == {"torch.float32"}

    test = load_from_disk(str(tiny_dataset_dir))["test"]
    image_ids, probs, _ = read_predictions(run_dir / "test_predictions.csv")
    assert image_ids == test["image_id"]
    predicted = Predictor.from_pretrained(run_dir, device="cpu").predict(list(test["image"]))
    fp32 = np.array([[result["probabilities"][name] for name in FINDINGS] for result in predicted])
    np.testing.assert_allclose(probs, fp32, atol=BF16_ATOL)
    assert not np.allclose(probs, fp32, atol=1e-7)  # the run really computed in bf16
