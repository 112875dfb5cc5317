"""Pixels end to end: what a model sees for an image, whichever way the image arrives.

Asymmetric normalisation (ImageNet's mean and std) so channel order shows; colour and partially transparent
images against the documented rule (luminance, alpha dropped); the same scores for a file and the same picture
as a PIL image; the evaluation transform equal to the 🤗 pipeline's preprocessing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from run_folder_factory import SAMPLE_ROOT, make_run_folder, tiny_model
from transformers import ViTImageProcessor
from transformers import pipeline as hf_pipeline

from pipeline.augment import DeviceAugmentation
from pipeline.images import load_image, to_grayscale
from pipeline.predict import Predictor
from pipeline.transforms import build_train_augmentation, eval_transform

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
NIH_PNG = SAMPLE_ROOT / "images" / "00004296_000.png"


@pytest.fixture(scope="module")
def imagenet_processor() -> ViTImageProcessor:
    return ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)


def expected_channels(value: int) -> torch.Tensor:
    return (value / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)


def test_training_augmentation_normalises_each_channel_with_its_own_mean_and_std(imagenet_processor):
    augment = build_train_augmentation(imagenet_processor, crop_scale_min=0.5, rotation_degrees=0.0)
    pixels = augment(Image.new("L", (48, 40), 100))
    assert pixels.shape == (3, 32, 32)
    torch.testing.assert_close(pixels.mean(dim=(1, 2)), expected_channels(100), atol=1e-5, rtol=0)


def test_device_augmentation_normalises_each_channel_with_its_own_mean_and_std():
    augment = DeviceAugmentation(32, IMAGENET_MEAN, IMAGENET_STD, crop_scale_min=0.5, rotation_degrees=0.0)
    pixels = augment(torch.full((2, 1, 36, 36), 100, dtype=torch.uint8))
    torch.testing.assert_close(pixels.mean(dim=(2, 3)), expected_channels(100).expand(2, 3), atol=1e-5, rtol=0)


def test_evaluation_transform_is_the_hub_pipelines_preprocessing(imagenet_processor):
    """Tensor for tensor: what validation and test see is what the widget and `pipeline()` feed the model."""
    model, _ = tiny_model("vit")
    classifier = hf_pipeline("image-classification", model=model, image_processor=imagenet_processor, device="cpu")
    image = Image.open(NIH_PNG)
    ours = eval_transform(imagenet_processor)({"image": [image, image], "labels": [[0.0] * 14] * 2})["pixel_values"]
    theirs = classifier.preprocess(image)["pixel_values"]
    assert torch.equal(ours[0], theirs[0])
    assert torch.equal(ours[0], ours[1])  # deterministic
    assert not torch.equal(ours[0, 0], ours[0, 2])  # the channels are normalised differently


# Colour and alpha: luminance by ITU-R 601-2 (Pillow's L), alpha dropped, never composited over black or white.
RED, BLUE, ORANGE = (255, 0, 0), (0, 0, 255), (200, 100, 50)
LUMA = {RED: 76, BLUE: 29, ORANGE: 124}


def pictures() -> dict[str, Image.Image]:
    """One 40x40 picture per mode, with colour that only survives the right channel order and partial alpha."""
    gradient = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (40, 1))
    rgb = np.stack([gradient, gradient[::-1], np.full_like(gradient, 50)], axis=-1)
    alpha = np.tile(np.linspace(10, 250, 40, dtype=np.uint8)[:, None], (1, 40))
    palette = Image.fromarray(rgb).quantize(16)
    return {
        "L": Image.fromarray(gradient),
        "LA": Image.fromarray(np.stack([gradient, alpha], axis=-1), mode="LA"),
        "RGB": Image.fromarray(rgb),
        "RGBA": Image.fromarray(np.concatenate([rgb, alpha[..., None]], axis=-1), mode="RGBA"),
        "P": palette,
        "I;16": Image.fromarray(gradient.astype(np.uint16) * 16),  # a 12-bit X-ray in 16 bits
    }


@pytest.mark.parametrize("colour", [RED, BLUE, ORANGE])
@pytest.mark.parametrize("alpha", [255, 40, 0])
def test_colour_becomes_luminance_and_alpha_is_dropped(colour, alpha, tmp_path):
    image = Image.new("RGBA", (8, 8), (*colour, alpha))
    assert set(np.asarray(to_grayscale(image)).ravel()) == {LUMA[colour]}
    image.save(tmp_path / "x.png")
    assert set(np.asarray(load_image(tmp_path / "x.png")).ravel()) == {LUMA[colour]}


@pytest.mark.parametrize("alpha", [255, 40, 0])
def test_gray_alpha_drops_its_alpha(alpha, tmp_path):
    image = Image.new("LA", (8, 8), (180, alpha))
    assert set(np.asarray(to_grayscale(image)).ravel()) == {180}
    image.save(tmp_path / "x.png")
    assert set(np.asarray(load_image(tmp_path / "x.png")).ravel()) == {180}


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    return Predictor.from_pretrained(make_run_folder(tmp_path_factory.mktemp("run") / "run"), device="cpu")


@pytest.mark.parametrize("mode", list(pictures()))
def test_a_pil_image_scores_like_the_same_picture_given_as_a_file(predictor, mode, tmp_path):
    picture = pictures()[mode]
    assert picture.mode == mode
    picture.save(tmp_path / "x.png")
    from_file, from_pil, reopened = predictor.predict([tmp_path / "x.png", picture, Image.open(tmp_path / "x.png")])
    for result in (from_pil, reopened):
        np.testing.assert_allclose(
            list(result["probabilities"].values()), list(from_file["probabilities"].values()), atol=1e-6
        )
