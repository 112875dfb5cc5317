"""Training augmentation on the accelerator: one `affine_grid` + `grid_sample` for the whole batch.

DataLoader workers then only decode PNGs to uint8 tensors, which keeps fast models fed where per-image
torchvision augmentation in the workers cannot (see BENCHMARKS.md). The augmentation has the parameters of
`transforms.build_train_augmentation` — a random resized crop (area fraction in [crop_scale_min, 1], aspect
ratio in [0.9, 1.1]), a rotation of ± rotation_degrees, an optional horizontal flip — but not its exact pixels:
it samples from the decoded image at 8/7 of the input size, and the corners a rotation uncovers are black
before normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ASPECT_RATIO = (0.9, 1.1)


class DeviceAugmentation(nn.Module):
    """uint8 batch (B, 1, H, W) → augmented, normalised float batch (B, 3, size, size) on the same device."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        crop_scale_min: float = 0.8,
        rotation_degrees: float = 7.0,
        horizontal_flip: bool = False,
    ) -> None:
        super().__init__()
        self.size = size
        self.crop_scale_min = crop_scale_min
        self.rotation = math.radians(rotation_degrees)
        self.horizontal_flip = horizontal_flip
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def random_affine(self, batch: int, device: torch.device) -> torch.Tensor:
        """(B, 2, 3) maps from output to input coordinates, in `affine_grid`'s [-1, 1] units."""

        def uniform(low: float, high: float) -> torch.Tensor:
            return torch.empty(batch, device=device).uniform_(low, high)

        area = uniform(self.crop_scale_min, 1.0)
        log_ratio = uniform(math.log(ASPECT_RATIO[0]), math.log(ASPECT_RATIO[1]))
        width = torch.sqrt(area * torch.exp(log_ratio))
        height = torch.sqrt(area / torch.exp(log_ratio))
        # A crop that does not fit becomes the whole image, as torchvision's RandomResizedCrop falls back to.
        fits = (width <= 1) & (height <= 1)
        width, height = torch.where(fits, width, 1.0), torch.where(fits, height, 1.0)
        center_x = (1 - width) * uniform(-1.0, 1.0)
        center_y = (1 - height) * uniform(-1.0, 1.0)
        angle = uniform(-self.rotation, self.rotation)
        cos, sin = torch.cos(angle), torch.sin(angle)
        if self.horizontal_flip:
            width = width * torch.where(torch.rand(batch, device=device) < 0.5, -1.0, 1.0)
        return torch.stack(
            [
                torch.stack([width * cos, -height * sin, center_x], dim=1),
                torch.stack([width * sin, height * cos, center_y], dim=1),
            ],
            dim=1,
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dtype != torch.uint8 or pixels.dim() != 4 or pixels.shape[1] != 1:
            raise ValueError(f"expected a uint8 batch of shape (B, 1, H, W), got {pixels.dtype} {tuple(pixels.shape)}")
        images = pixels.float().div_(255)
        theta = self.random_affine(len(images), images.device)
        grid = F.affine_grid(theta, [len(images), 1, self.size, self.size], align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return (images.expand(-1, 3, -1, -1) - self.mean) / self.std
