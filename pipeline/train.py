"""One training run: arguments → dataset → model → Trainer → run folder.

The run folder holds the best model with its image processor, the metrics on validation and on the official
test split, per-image test probabilities, per-finding thresholds, the resolved config and the log history.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from datasets import Dataset
from huggingface_hub import get_token
from transformers import Trainer, TrainerCallback, set_seed
from transformers.utils import SAFE_WEIGHTS_NAME

from pipeline.arguments import ConfigError, DataArguments, ModelArguments, parse_args, resolved_config
from pipeline.augment import DeviceAugmentation
from pipeline.checkpoints import CrashSafeCheckpoints, TrainingFinished, resolve_resume, resume_requested
from pipeline.dataset import finding_names, load_dataset_dict
from pipeline.errors import UserError, run_main
from pipeline.hub import push_run
from pipeline.metrics import choose_thresholds, make_compute_metrics, sigmoid
from pipeline.models import build_image_processor, build_model
from pipeline.run_folder import RunFolder, TestSplitRecord
from pipeline.tracking import add_tracking, finish_tracking
from pipeline.training_arguments import ChestXrayTrainingArguments
from pipeline.transforms import decode_transform, eval_transform, processor_geometry, train_transform


def main(
    argv: Sequence[str] | None = None,
    parsed: tuple[ModelArguments, DataArguments, ChestXrayTrainingArguments] | None = None,
) -> int:
    """Entry point of the recipes: parse the YAML recipe and flags (unless already `parsed`), train, evaluate,
    save; a user error is one `error: …` line."""

    def train() -> None:
        try:
            output_dir = run(*(parsed or parse_args(list(argv) if argv is not None else None)))
        except OSError as error:  # an existing output_dir, a missing dataset folder, a checkpoint the Hub cannot serve
            raise UserError(str(error)) from error
        if PartialState().is_main_process:
            print(f"run folder: {output_dir}")

    return run_main(train)


def run(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: ChestXrayTrainingArguments,
    callbacks: Sequence[TrainerCallback] = (),
) -> Path:
    output_dir = Path(training_args.output_dir)
    asked = training_args.resume_from_checkpoint
    resume = resolve_resume(asked, output_dir, announce=training_args.process_index == 0)
    token = training_args.hub_token or get_token()
    if training_args.push_to_hub and token is None:  # fail now, not after hours of training
        raise ConfigError("push_to_hub needs a Hugging Face token: run `hf auth login` or set HF_TOKEN")
    with training_args.main_process_first(desc="checking output_dir", local=False):
        prepare_output_dir(output_dir, resume=resume_requested(asked), overwrite=training_args.overwrite_output_dir)

    trainer, splits, processor = build_trainer(model_args, data_args, training_args, callbacks)
    folder = RunFolder(output_dir)
    if trainer.is_world_process_zero():
        folder.write_config(resolved_config(model_args, data_args, training_args))
        folder.write_test_split(TestSplitRecord(len(splits["test"]), max_eval_samples=data_args.max_eval_samples))
    names = finding_names(splits["train"])
    try:
        train_metrics = trainer.train(resume_from_checkpoint=resume).metrics
    except TrainingFinished as finished:  # killed after its last save: only the run folder's files are missing
        if trainer.is_world_process_zero():
            print(f"{finished} ({Path(resume).name}): completing the run folder without training")
        if training_args.load_best_model_at_end and trainer.state.best_model_checkpoint:
            trainer._load_best_model()
        train_metrics = folder.results("train")  # what that run saved, if it got so far
    trainer.save_model()  # the best checkpoint: load_best_model_at_end is on by default
    if trainer.is_world_process_zero():
        folder.write_results(
            "train",
            {
                **train_metrics,
                "num_parameters": trainer.model.num_parameters(),
                "world_size": training_args.world_size,
            },
        )

    validation_probs = predict_split(trainer, splits["validation"], processor, "eval", folder)
    thresholds = choose_thresholds(validation_probs, np.asarray(splits["validation"]["labels"]), names)
    if trainer.is_world_process_zero():
        folder.write_thresholds(thresholds)
    trainer.compute_metrics = make_compute_metrics(names, thresholds)
    trainer.save_state()
    # Test results last: their file marks a finished run (RunFolder.is_finished).
    predict_split(trainer, splits["test"], processor, "test", folder)
    if trainer.is_world_process_zero() and training_args.push_to_hub:
        push_run(output_dir, training_args.hub_model_id, private=bool(training_args.hub_private_repo), token=token)
    return output_dir


def build_trainer(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: ChestXrayTrainingArguments,
    callbacks: Sequence[TrainerCallback] = (),
) -> tuple[Trainer, dict[str, Dataset], Any]:
    """The Trainer of a run, with its raw splits and image processor; shared by `run` and the benchmarks."""
    set_seed(training_args.seed)  # before the model is built: the Trainer seeds too late for its weights
    dataset = load_dataset_dict(data_args.dataset_name_or_path)
    names = finding_names(dataset)
    splits = select_splits(dataset, data_args)
    processor = build_image_processor(model_args)
    model = build_model(model_args, names=names)

    augmentation = {
        "crop_scale_min": data_args.crop_scale_min,
        "rotation_degrees": data_args.rotation_degrees,
        "horizontal_flip": data_args.horizontal_flip,
    }
    on_device = data_args.augment_on_device
    if on_device is None:
        on_device = training_args.device.type == "cuda"
    trainer = ChestXrayTrainer(
        model=model,
        # The run folder is published once, at the end, by `hub.push_run`; not by the Trainer at every save. The
        # Trainer pickles its arguments into every checkpoint (training_args.bin): they must not hold the token.
        args=dataclasses.replace(training_args, push_to_hub=False, hub_token=None),
        train_dataset=splits["train"].with_transform(
            decode_transform(processor) if on_device else train_transform(processor, **augmentation)
        ),
        eval_dataset=splits["validation"].with_transform(eval_transform(processor)),
        processing_class=processor,
        callbacks=[CrashSafeCheckpoints(), *callbacks],
        compute_metrics=make_compute_metrics(names),
        compute_loss_func=(
            weighted_bce_loss(positive_weights(np.asarray(splits["train"]["labels"])))
            if training_args.loss_pos_weight == "auto"
            else None
        ),
        device_augmentation=(
            DeviceAugmentation(*processor_geometry(processor), **augmentation).to(training_args.device)
            if on_device
            else None
        ),
    )
    add_tracking(trainer)
    return trainer, splits, processor


class ChestXrayTrainer(Trainer):
    """A `Trainer` that can augment each training batch on the accelerator before the forward pass.

    The models' multi-label BCE is a mean over the batch, not a sum over tokens: the Trainer must divide it by
    the gradient-accumulation steps and must not hand the model the token count.
    """

    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, device_augmentation: DeviceAugmentation | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self.device_augmentation = device_augmentation

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        if not self._reload_with_key_conversion(resume_from_checkpoint, model or self.model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        if not self._reload_with_key_conversion(self.state.best_model_checkpoint, self.model):
            super()._load_best_model()

    def _reload_with_key_conversion(self, checkpoint: str, model: torch.nn.Module) -> bool:
        """Load a checkpoint's weights as `from_pretrained` does; False where the Trainer's own loader must do it.

        `save_pretrained` writes the Hub's key names, which transformers 5 renames on load for some models (ViT:
        `encoder.layer.*` → `layers.*`), but the Trainer reloads checkpoints with a raw `load_state_dict`: the
        renamed layers would silently keep their current weights (huggingface/transformers#48805).
        """
        if self.is_deepspeed_enabled or self.is_fsdp_enabled or not (Path(checkpoint) / SAFE_WEIGHTS_NAME).is_file():
            return False
        target = self.accelerator.unwrap_model(model)
        target.load_state_dict(type(target).from_pretrained(checkpoint).state_dict())  # strict: every key matches
        return True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.device_augmentation is not None and model.training:
            inputs = {**inputs, "pixel_values": self.device_augmentation(inputs["pixel_values"])}
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)


def prepare_output_dir(output_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to mix a new run into a folder that holds another, unless asked to replace it."""
    if resume or not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(
            f"output_dir {output_dir} is not empty; pass --resume_from_checkpoint true to continue that run "
            "or --overwrite_output_dir true to replace it"
        )
    shutil.rmtree(output_dir)


def select_splits(dataset: dict[str, Dataset], data_args: DataArguments) -> dict[str, Dataset]:
    """The three splits by their configured names, truncated when asked (and said so)."""
    limits = {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "test": data_args.max_eval_samples,
    }
    split_names = {
        "train": data_args.train_split,
        "validation": data_args.validation_split,
        "test": data_args.test_split,
    }
    splits = {}
    for role, name in split_names.items():
        if name not in dataset:
            raise ConfigError(f"dataset {data_args.dataset_name_or_path} has no split {name!r} (has {list(dataset)})")
        split = dataset[name]
        if limits[role] is not None and limits[role] < len(split):
            print(f"{role}: using the first {limits[role]} of {len(split)} images (max_*_samples)")
            split = split.select(range(limits[role]))
        splits[role] = split
    return splits


def positive_weights(labels: np.ndarray) -> torch.Tensor:
    """negatives / positives per finding, 1 where a finding has no positives: BCE's usual class balance."""
    positives = labels.sum(axis=0)
    negatives = len(labels) - positives
    return torch.tensor(np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0), dtype=torch.float32)


def weighted_bce_loss(pos_weight: torch.Tensor) -> Callable[..., torch.Tensor]:
    """A `compute_loss_func` for the Trainer: BCE with logits and per-finding positive weights."""

    def loss(outputs, labels: torch.Tensor, num_items_in_batch: int | None = None) -> torch.Tensor:
        logits = outputs["logits"].float()
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits, labels.to(logits.dtype), pos_weight=pos_weight.to(logits.device)
        )

    return loss


def predict_split(trainer: Trainer, split: Dataset, processor, prefix: str, folder: RunFolder) -> np.ndarray:
    """Predict one split, log its metrics, write its per-image probabilities, then its metrics; return them."""
    output = trainer.predict(split.with_transform(eval_transform(processor)), metric_key_prefix=prefix)
    trainer.log_metrics(prefix, output.metrics)
    if prefix == "test":  # the run's last prediction
        finish_tracking(trainer, output.metrics)
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    probs = sigmoid(np.asarray(logits, dtype=np.float64))
    if len(probs) != len(split):
        raise RuntimeError(f"{prefix}: got {len(probs)} predictions for {len(split)} images")
    if trainer.is_world_process_zero():
        folder.write_predictions(prefix, split["image_id"], probs, finding_names(split))
        folder.write_results(prefix, output.metrics)
    return probs
