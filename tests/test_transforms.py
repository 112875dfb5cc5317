"""Preprocessing read from each kind of image processor; training and evaluation transforms of a batch."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from transformers import ConvNextImageProcessor, TimmWrapperImageProcessor, ViTImageProcessor

from pipeline.transforms import (
    build_train_augmentation,
    decode_transform,
    eval_transform,
    processor_geometry,
    train_transform,
)


def grayscale_batch(n: int = 3, size: int = 80) -> dict:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (size, size + 10), dtype=np.uint8), mode="L") for _ in range(n)]
    return {"image": images, "labels": [[float(i % 2)] * 14 for i in range(n)]}


@pytest.mark.parametrize(
    ("processor", "expected"),
    [
        (ViTImageProcessor(size={"height": 48, "width": 48}, image_mean=[0.1] * 3, image_std=[0.2] * 3), 48),
        (ConvNextImageProcessor(size={"shortest_edge": 224}), 224),
        (TimmWrapperImageProcessor(pretrained_cfg=timm.create_model("densenet121").pretrained_cfg), 224),
    ],
    ids=["vit", "convnext", "timm"],
)
def test_geometry_of_each_processor_kind(processor, expected):
    size, mean, std = processor_geometry(processor)
    assert size == expected and len(mean) == 3 and len(std) == 3


def test_train_transform_gives_normalised_three_channel_tensors():
    processor = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    out = train_transform(processor, crop_scale_min=0.5, rotation_degrees=10)(grayscale_batch())
    assert out["labels"].dtype == torch.float32 and out["labels"].shape == (3, 14)
    for pixels in out["pixel_values"]:
        assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
        assert torch.equal(pixels[0], pixels[2])  # grayscale repeated, not coloured
        assert pixels.min() >= -1.0 and pixels.max() <= 1.0  # (x - 0.5) / 0.5 of values in [0, 1]


def test_augmentation_is_random_and_flip_is_optional():
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    augment = build_train_augmentation(processor, crop_scale_min=0.5, rotation_degrees=10)
    image = grayscale_batch(1)["image"][0]
    assert not torch.equal(augment(image), augment(image))
    assert not any("Flip" in type(step).__name__ for step in augment.transforms)
    flipping = build_train_augmentation(processor, horizontal_flip=True)
    assert any("Flip" in type(step).__name__ for step in flipping.transforms)


def test_eval_transform_is_the_processor_on_rgb():
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    batch = grayscale_batch()
    out = eval_transform(processor)(batch)
    expected = processor([image.convert("RGB") for image in batch["image"]], return_tensors="pt")["pixel_values"]
    assert torch.equal(out["pixel_values"], expected)


def test_decode_transform_gives_uint8_at_eight_sevenths():
    processor = ViTImageProcessor(size={"height": 224, "width": 224})
    out = decode_transform(processor)(grayscale_batch(size=300))
    assert all(p.shape == (1, 256, 256) and p.dtype == torch.uint8 for p in out["pixel_values"])
