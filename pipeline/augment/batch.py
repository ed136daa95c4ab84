"""Copy edits on batches of tensors with kornia, for training: SSL-style, replayable.

Parameters are sampled apart from their application (kornia's `forward_parameters`), so the same
params applied to the same batch give identical tensors, and a seed gives the same params.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from kornia.augmentation.container.params import ParamItem


def copy_augmentation(size: int = 224) -> K.AugmentationSequential:
    """Random crop to (size, size), flip, colour jitter, greyscale, blur, perspective, rotation,
    JPEG and noise, each with its own probability; input (B, 3, H, W) float in 0..1."""
    return K.AugmentationSequential(
        K.RandomResizedCrop((size, size), scale=(0.1, 1.0), ratio=(0.5, 2.0)),
        K.RandomHorizontalFlip(p=0.5),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((23, 23), (0.1, 2.0), p=0.5),
        K.RandomPerspective(0.3, p=0.3),
        K.RandomRotation(30.0, p=0.2),
        K.RandomJPEG(jpeg_quality=(20.0, 90.0), p=0.3),
        K.RandomGaussianNoise(std=0.05, p=0.2),
    )


def sample_batch_params(aug: K.AugmentationSequential, shape: torch.Size | tuple[int, ...],
                        seed: int | None = None) -> list[ParamItem]:
    """Params of `aug` for a batch of `shape` (B, 3, H, W); a seed makes them reproducible
    without touching the caller's global torch RNG state."""
    if seed is None:
        return aug.forward_parameters(torch.Size(shape))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return aug.forward_parameters(torch.Size(shape))


def apply_batch(aug: K.AugmentationSequential, images: torch.Tensor, params: list[ParamItem]) -> torch.Tensor:
    """(B, 3, H, W) float 0..1 -> (B, 3, size, size) float 0..1, edited as `params` say."""
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"expected (B, 3, H, W) float images, got {tuple(images.shape)} {images.dtype}")
    return aug(images, params=params).clamp(0.0, 1.0)


class BatchCopyAugment:
    """Thin class over the functions above: `(out, params) = augment(images, seed)`;
    `augment.apply(images, params)` replays."""

    def __init__(self, size: int = 224):
        self.aug = copy_augmentation(size)

    def sample(self, shape: torch.Size | tuple[int, ...], seed: int | None = None) -> list[ParamItem]:
        return sample_batch_params(self.aug, shape, seed)

    def apply(self, images: torch.Tensor, params: list[ParamItem]) -> torch.Tensor:
        return apply_batch(self.aug, images, params)

    def __call__(self, images: torch.Tensor, seed: int | None = None) -> tuple[torch.Tensor, list[ParamItem]]:
        params = self.sample(images.shape, seed)
        return self.apply(images, params), params
