"""Per-batch image transforms for `datasets.set_transform`: augmentation for training, the processor for eval.

Evaluation goes through the checkpoint's own image processor, so the scores equal what
`pipeline("image-classification")` and the Hub widget compute for the same image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchvision.transforms import v2

Batch = dict[str, list[Any]]


def processor_geometry(processor: Any) -> tuple[int, list[float], list[float]]:
    """Input size and normalisation (mean, std) that the model expects, read from its image processor."""
    data_config = getattr(processor, "data_config", None)
    if data_config is not None:  # timm's processor keeps them in timm's own format
        return int(data_config["input_size"][-1]), list(data_config["mean"]), list(data_config["std"])
    size = processor.size
    side = size.get("height") or size.get("shortest_edge")
    if side is None:
        raise ValueError(f"cannot read an input size from {type(processor).__name__}.size={dict(size)}")
    return int(side), list(processor.image_mean), list(processor.image_std)


def build_train_augmentation(
    processor: Any, crop_scale_min: float = 0.8, rotation_degrees: float = 7.0, horizontal_flip: bool = False
) -> v2.Compose:
    """Grayscale PIL image → normalised 3-channel float tensor, randomly cropped and rotated.

    Geometry runs on the single uint8 channel (a third of the work); the channel is repeated only at the end.
    """
    size, mean, std = processor_geometry(processor)
    steps: list[Any] = [
        v2.PILToTensor(),
        v2.RandomResizedCrop(size, scale=(crop_scale_min, 1.0), ratio=(0.9, 1.1), antialias=True),
    ]
    if rotation_degrees:
        steps.append(v2.RandomRotation(rotation_degrees))
    if horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Lambda(lambda x: x.expand(3, -1, -1)),
        v2.Normalize(mean, std),
    ]
    return v2.Compose(steps)


def _per_image(convert: Callable[[Any], torch.Tensor]) -> Callable[[Batch], Batch]:
    def transform(batch: Batch) -> Batch:
        return {
            "pixel_values": [convert(image.convert("L")) for image in batch["image"]],
            "labels": torch.tensor(batch["labels"], dtype=torch.float32),
        }

    return transform


def train_transform(processor: Any, **augmentation: Any) -> Callable[[Batch], Batch]:
    """Augmentation in the DataLoader workers."""
    return _per_image(build_train_augmentation(processor, **augmentation))


def decode_transform(processor: Any) -> Callable[[Batch], Batch]:
    """Decode only, to uint8 at 8/7 of the input size (256 for 224), for `augment.DeviceAugmentation`."""
    side = round(processor_geometry(processor)[0] * 8 / 7)
    return _per_image(v2.Compose([v2.PILToTensor(), v2.Resize(side, antialias=True), v2.CenterCrop(side)]))


def eval_transform(processor: Any) -> Callable[[Batch], Batch]:
    def transform(batch: Batch) -> Batch:
        images = [image.convert("RGB") for image in batch["image"]]
        return {
            "pixel_values": processor(images, return_tensors="pt")["pixel_values"],
            "labels": torch.tensor(batch["labels"], dtype=torch.float32),
        }

    return transform
