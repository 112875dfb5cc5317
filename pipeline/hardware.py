"""What the machine can do, asked once in one place."""

from __future__ import annotations

import torch


def bf16_supported() -> bool:
    """A GPU with native bf16 (Ampere and newer); emulated bf16 (T4, V100) is slower than fp32."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
