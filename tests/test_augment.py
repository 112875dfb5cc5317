"""On-device augmentation: identity when it should be, random when it should be, the right shape and scale."""

import pytest
import torch
import torch.nn.functional as F

from pipeline.augment import DeviceAugmentation

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def batch(size: int = 40, n: int = 4) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8)


def normalised(images: torch.Tensor) -> torch.Tensor:
    return (images.expand(-1, 3, -1, -1) - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_without_crop_or_rotation_it_is_a_bilinear_resize():
    pixels = batch()
    augment = DeviceAugmentation(32, MEAN, STD, crop_scale_min=1.0, rotation_degrees=0.0)
    expected = normalised(F.interpolate(pixels.float() / 255, size=(32, 32), mode="bilinear", align_corners=False))
    assert torch.allclose(augment(pixels), expected, atol=1e-4)


def test_flip_gives_the_image_or_its_mirror():
    pixels = batch(n=16)
    augment = DeviceAugmentation(40, MEAN, STD, crop_scale_min=1.0, rotation_degrees=0.0, horizontal_flip=True)
    plain = normalised(pixels.float() / 255)
    out = augment(pixels)
    same = [torch.allclose(o, p, atol=1e-4) for o, p in zip(out, plain, strict=True)]
    mirrored = [torch.allclose(o, p.flip(-1), atol=1e-4) for o, p in zip(out, plain, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert any(same) and any(mirrored)


def test_random_per_image_and_reproducible_under_a_seed():
    pixels = batch().expand(4, -1, -1, -1).contiguous()  # four copies of one image
    augment = DeviceAugmentation(32, MEAN, STD, crop_scale_min=0.5, rotation_degrees=10)
    torch.manual_seed(1)
    first = augment(pixels)
    assert not torch.allclose(first[0], first[1])  # each image its own crop and angle
    torch.manual_seed(1)
    assert torch.equal(first, augment(pixels))


def test_rotation_blackens_corners_only():
    pixels = torch.full((1, 1, 64, 64), 255, dtype=torch.uint8)
    augment = DeviceAugmentation(64, [0.0] * 3, [1.0] * 3, crop_scale_min=1.0, rotation_degrees=30)
    torch.manual_seed(3)
    out = augment(pixels)[0, 0]
    assert out[32, 32] == pytest.approx(1.0)
    assert out.min() < 0.5  # some corner fell outside the rotated image


def test_rejects_float_or_rgb_input():
    augment = DeviceAugmentation(32, MEAN, STD)
    with pytest.raises(ValueError, match="uint8"):
        augment(torch.zeros(2, 1, 40, 40))
    with pytest.raises(ValueError, match="uint8"):
        augment(torch.zeros(2, 3, 40, 40, dtype=torch.uint8))
