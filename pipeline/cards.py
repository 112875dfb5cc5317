"""Hub cards rendered with huggingface_hub's `DatasetCard`/`ModelCard` from the Jinja templates in hub_cards/."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from datasets import DatasetDict
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from pipeline import nih
from pipeline.dataset import finding_names
from pipeline.labels import FINDINGS, NO_FINDING
from pipeline.locations import is_hub_id
from pipeline.published import REFERENCE_RESULTS
from pipeline.run_folder import RunFolder

# hub_cards/ sits at the top of a source checkout; a wheel installs it inside the package (see pyproject.toml).
_PACKAGE = Path(__file__).resolve().parent
TEMPLATES_DIR = next(p for p in (_PACKAGE / "hub_cards", _PACKAGE.parent / "hub_cards") if p.is_dir())
NIH_URL = "https://nihcc.app.box.com/v/ChestXray-NIHCC"


def label_counts(dataset: DatasetDict) -> dict[str, dict[str, int]]:
    """Images per finding (and with no finding) per split, read from the `labels` column only."""
    names = finding_names(dataset)
    counts: dict[str, dict[str, int]] = {name: {} for name in [*names, NO_FINDING]}
    for split, ds in dataset.items():
        labels = np.asarray(ds.with_format("numpy", columns=["labels"])["labels"]).reshape(-1, len(names))
        for name, count in zip(names, labels.sum(axis=0), strict=True):
            counts[name][split] = int(count)
        counts[NO_FINDING][split] = int((labels.sum(axis=1) == 0).sum())
    return counts


def size_category(n_rows: int) -> str:
    """The Hub's `size_categories` tag for a dataset of `n_rows` examples."""
    for limit, tag in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n_rows < limit:
            return tag
    return "1M<n<10M"


def render_dataset_card(
    dataset: DatasetDict,
    labels_csv: str,
    options: Mapping[str, object],
    repo_id: str | None = None,
    missing: Mapping[str, int] | None = None,
) -> DatasetCard:
    """The converted dataset's card: features, label counts per split, source, NIH terms and citation,
    the converter `options` (which must include `image_size`, `validation_fraction` and `seed`), and the
    images per split that were listed but `missing` on disk (`--allow-missing`), which the card states."""
    total = sum(ds.num_rows for ds in dataset.values())
    patients = set().union(*(ds.unique("patient_id") for ds in dataset.values()))
    image_size = int(options["image_size"])
    card_data = DatasetCardData(
        pretty_name="NIH ChestX-ray14",
        license="other",
        license_name="nih-clinical-center-chestxray14",
        license_link=NIH_URL,
        task_categories=["image-classification"],
        task_ids=["multi-label-image-classification"],
        size_categories=[size_category(total)],
        tags=["medical", "chest-x-ray", "radiology", "multi-label"],
    )
    return DatasetCard.from_template(
        card_data,
        template_path=str(TEMPLATES_DIR / "dataset_card.md"),
        repo_id=repo_id,
        total_images=total,
        total_patients=len(patients),
        splits=list(dataset),
        split_sizes={split: ds.num_rows for split, ds in dataset.items()},
        label_counts=label_counts(dataset),
        findings=finding_names(dataset),
        image_size_text=f"{image_size} px on the shorter side" if image_size > 0 else "original size",
        labels_csv=labels_csv,
        options=dict(options),
        missing={split: count for split, count in (missing or {}).items() if count},
    )


# ---- Model card ----------------------------------------------------------------------------------------------

MODEL_CARD_TEMPLATE = TEMPLATES_DIR / "model_card.md"
SAMPLE_ROOT = Path(__file__).resolve().parent / "assets" / "nih_sample"
EXAMPLES_FOLDER = "examples"
DEFAULT_LICENSE = "apache-2.0"
MODEL_TAGS = ["medical-imaging", "chest-x-ray", "multi-label-classification", "nih-chestxray14", "radiology"]
# Used in model-index when the run's dataset is a local folder rather than a Hub dataset.
NIH_DATASET_TYPE = "nih-chestxray14"
NIH_DATASET_NAME = "NIH ChestX-ray14"


@dataclass(frozen=True)
class ExampleImage:
    """A shipped NIH test image that is uploaded with a model for the widget and the card's snippets."""

    path: Path
    title: str

    @property
    def repo_path(self) -> str:
        return f"{EXAMPLES_FOLDER}/{self.path.name}"


def example_images(count: int = 3) -> list[ExampleImage]:
    """The first `count` official-test-split images of the shipped sample, titled with their NIH labels."""
    records = nih.read_labels_csv(SAMPLE_ROOT / nih.LABEL_CSV_NAMES[0])
    examples = []
    for name in nih.read_split_list(SAMPLE_ROOT / nih.TEST_LIST)[:count]:
        record = records[name]
        labels = ", ".join(record.findings) or NO_FINDING
        examples.append(ExampleImage(SAMPLE_ROOT / "images" / name, f"{name} ({record.view_position}; NIH: {labels})"))
    return examples


def custom_code_files(model_config: dict[str, Any]) -> list[str]:
    """Python files that `auto_map` in a model's config.json points at (custom code for trust_remote_code)."""
    references = model_config.get("auto_map", {}).values()
    return sorted({reference.split("--")[-1].rsplit(".", 1)[0] + ".py" for reference in references})


def timm_hub_id(architecture: str) -> str | None:
    """The Hub copy of a timm architecture's pretrained weights (e.g. `timm/densenet121.tv_in1k`), if it has one.

    timm is imported here, not at the top: it imports torch (seconds, ~850 MiB), which `chestxray convert`,
    a user of this module's dataset card, does not need."""
    import timm

    pretrained_cfg = timm.models.get_pretrained_cfg(architecture)
    return pretrained_cfg.hf_hub_id if pretrained_cfg is not None else None


def base_model(run_config: dict[str, Any]) -> str | None:
    """The Hub checkpoint a run was fine-tuned from (a timm architecture's Hub copy included); None when it was
    trained from scratch or fine-tuned from a local folder, whose path must not leak into the card."""
    model = run_config["model"]
    if not model.get("pretrained"):
        return None
    name = model.get("model_name_or_path")
    if name is None and model.get("timm_architecture"):
        return timm_hub_id(model["timm_architecture"])
    return name if is_hub_id(name) else None


def initialisation(run_config: dict[str, Any]) -> str:
    """How the card says the weights started: a link to the Hub base model, a local checkpoint, or scratch."""
    hub_id = base_model(run_config)
    if hub_id:
        return f"fine-tuned from [`{hub_id}`](https://huggingface.co/{hub_id})"
    model = run_config["model"]
    if not model.get("pretrained"):
        return "trained from scratch (random initialisation)"
    if model.get("model_name_or_path") is None and model.get("timm_architecture"):
        return f"fine-tuned from timm's pretrained `{model['timm_architecture']}` weights"
    return "fine-tuned from a local checkpoint"


def hub_dataset_id(run_config: dict[str, Any]) -> str | None:
    """The run's dataset if it is a Hub id (`org/name` that is not a local folder); None for a local folder."""
    name = run_config["data"].get("dataset_name_or_path")
    return name if is_hub_id(name) else None


def _format(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


# Run-config keys shown in the card's hyperparameter table, in this order, when the run has them.
HYPERPARAMETERS = {
    "learning_rate": "Learning rate",
    "num_train_epochs": "Epochs",
    "max_steps": "Max steps",
    "per_device_train_batch_size": "Batch size per device",
    "gradient_accumulation_steps": "Gradient accumulation steps",
    "optim": "Optimizer",
    "weight_decay": "Weight decay",
    "adam_beta1": "Adam β1",
    "adam_beta2": "Adam β2",
    "lr_scheduler_type": "Learning-rate schedule",
    "warmup_steps": "Warm-up steps (< 1: fraction)",
    "max_grad_norm": "Max gradient norm",
    "label_smoothing_factor": "Label smoothing",
    "loss_pos_weight": "Positive-class loss weight",
    "bf16": "bf16 mixed precision",
    "fp16": "fp16 mixed precision",
    "metric_for_best_model": "Checkpoint chosen by (validation)",
    "seed": "Seed",
}


def _hyperparameters(training: dict[str, Any]) -> list[tuple[str, str]]:
    shown = {key: training[key] for key in HYPERPARAMETERS if training.get(key) is not None}
    if shown.get("max_steps", 0) <= 0:
        shown.pop("max_steps", None)
    return [(HYPERPARAMETERS[key], f"`{value}`") for key, value in shown.items()]


def _processor_steps(processor: dict[str, Any]) -> list[str]:
    steps = []
    size = processor.get("size") or {}
    if processor.get("do_resize") and "height" in size:
        steps.append(f"resize to {size['height']}×{size['width']} pixels")
    elif processor.get("do_resize") and "shortest_edge" in size:
        steps.append(f"resize the shorter side to {size['shortest_edge']} pixels")
    crop = processor.get("crop_size") or {}
    if processor.get("do_center_crop") and "height" in crop:
        steps.append(f"center-crop {crop['height']}×{crop['width']}")
    if processor.get("do_rescale"):
        steps.append("scale pixel values to [0, 1]")
    if processor.get("do_normalize"):
        steps.append(f"normalise with mean {processor.get('image_mean')} and std {processor.get('image_std')}")
    return steps or ["see `preprocessor_config.json`"]


def _augmentation(data: dict[str, Any]) -> list[str]:
    steps = []
    if data.get("crop_scale_min") is not None:
        steps.append(f"random resized crop keeping {data['crop_scale_min']:.0%}–100% of the area")
    if data.get("rotation_degrees"):
        steps.append(f"random rotation within ±{data['rotation_degrees']}°")
    if data.get("horizontal_flip"):
        steps.append("random horizontal flip")
    return steps


METRIC_LABELS = {
    "auroc_mean": "Mean AUROC (over findings)",
    "auroc_micro": "Micro AUROC (pooled, the paper's AUC)",
    "accuracy": "Element-wise accuracy (threshold 0.5)",
    "accuracy_all_negative": "Element-wise accuracy of predicting all negative",
    "f1_macro": "Macro F1 (threshold 0.5)",
    "f1_macro_tuned": "Macro F1 (validation thresholds)",
    "map": "Mean average precision",
}


def _eval_results(metrics: dict[str, float], dataset_type: str, split: str) -> list[EvalResult]:
    """model-index entries on the test `split` (named as partial where it is): mean AUROC, accuracy, macro F1,
    AUROC per finding."""
    common = {
        "task_type": "image-classification",
        "task_name": "Multi-label chest X-ray classification",
        "dataset_type": dataset_type,
        "dataset_name": NIH_DATASET_NAME,
        "dataset_split": split,
    }
    entries = [
        ("roc_auc", "Mean AUROC", metrics["test_auroc_mean"], None),
        ("accuracy", "Element-wise accuracy", metrics["test_accuracy"], None),
        ("f1", "Macro F1", metrics["test_f1_macro"], "macro"),
    ]
    entries += [
        ("roc_auc", f"AUROC {name}", metrics[f"test_auroc_{name}"], name)
        for name in FINDINGS
        if f"test_auroc_{name}" in metrics
    ]
    return [
        EvalResult(
            metric_type=kind, metric_name=label, metric_value=round(float(value), 4), metric_config=config, **common
        )
        for kind, label, value, config in entries
        if not math.isnan(value)
    ]


def render_model_card(
    run_dir: str | Path,
    repo_id: str,
    *,
    license: str = DEFAULT_LICENSE,
    revision: str | None = None,
    dataset_id: str | None = None,
    examples: list[ExampleImage] | None = None,
    space_id: str | None = None,
) -> ModelCard:
    """The model card (README.md) of a run folder published as `repo_id`, rendered from `hub_cards/model_card.md`.

    `dataset_id` names the Hub dataset in the metadata (default: the run's dataset when it is a Hub id);
    `examples` are the images uploaded under examples/ (default: `example_images()`); `space_id` is the model's
    demo Space, which the card links.
    """
    run = RunFolder(Path(run_dir))
    run_config = run.config()
    metrics = run.test_metrics()
    model_config = run.model_config()
    processor_config = run.processor_config()
    thresholds = run.thresholds(FINDINGS) or {}
    results = run.metrics()
    test_split = run.test_split()
    complete = test_split is not None and test_split.complete
    split_text = test_split.describe() if test_split else "size not recorded"
    split_name = "test" if complete else f"test (partial: {split_text})"  # the model-index never claims the whole list
    examples = example_images() if examples is None else examples
    dataset_id = dataset_id or hub_dataset_id(run_config)
    code_files = custom_code_files(model_config)
    url_prefix = f"https://huggingface.co/{repo_id}/resolve/{quote(revision or 'main', safe='')}/"
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        license=license,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=MODEL_TAGS + (["custom_code"] if code_files else []),
        datasets=[dataset_id] if dataset_id else None,
        metrics=["roc_auc", "accuracy", "f1"],
        base_model=base_model(run_config),
        eval_results=_eval_results(metrics, dataset_id or NIH_DATASET_TYPE, split_name),
        # The hosted widget cannot run custom code, so it gets no examples then.
        widget=None if code_files else [{"src": url_prefix + e.repo_path, "example_title": e.title} for e in examples],
    )
    num_parameters = results.get("num_parameters")
    return ModelCard.from_template(
        card_data,
        template_path=str(MODEL_CARD_TEMPLATE),
        repo_id=repo_id,
        model_name=repo_id.split("/")[-1],
        findings=FINDINGS,
        architecture=(model_config.get("architectures") or [model_config.get("model_type", "model")])[0],
        model_type=model_config.get("model_type", "unknown"),
        num_parameters=f"{num_parameters:,}" if num_parameters else None,
        initialisation=initialisation(run_config),
        custom_code=bool(code_files),
        code_files=code_files,
        nih_url=NIH_URL,
        dataset_id=dataset_id,
        processor_type=processor_config.get("image_processor_type", "image processor"),
        processor_steps=_processor_steps(processor_config),
        augmentation=_augmentation(run_config["data"]),
        hyperparameters=_hyperparameters(run_config["training"]),
        test_split=split_text,
        test_split_complete=complete,
        summary=[
            (label, _format(metrics[f"test_{key}"])) for key, label in METRIC_LABELS.items() if f"test_{key}" in metrics
        ],
        per_finding=[
            (
                name,
                _format(metrics.get(f"test_auroc_{name}")),
                _format(thresholds[name]) if name in thresholds else "n/a",
            )
            for name in FINDINGS
        ],
        undefined_findings=[name for name in FINDINGS if f"test_auroc_{name}" not in metrics],
        mean_auroc=_format(metrics["test_auroc_mean"]),
        references=REFERENCE_RESULTS,
        example_url=url_prefix + examples[0].repo_path if examples else "chest_xray.png",
        space_id=space_id,
    )
