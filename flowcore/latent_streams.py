"""A second, representation stream beside the pixels of a pixel-space flow model (Latent Forcing,
Baade et al. 2026, arXiv 2602.11401): normalising frozen encoder features to the pixels' scale and
aligning a coarse latent grid with the pixel grid so that one transformer token holds one pixel
patch and the latent cell it lies in.

- ``LatentNormalizer``: f -> (f - mean_c) / sqrt(var_c + eps) * pixel_std, per feature channel c.
- ``PrincipalChannels``: f -> U_k^T (f - mean) per latent cell, the top-k principal directions of the
  encoder's channels: a smaller latent for the same grid.
- ``latent_on_pixel_grid`` / ``latent_from_pixel_grid``: nearest upsampling of a (B, C, h, w) latent
  to the (H, W) pixel grid, and its left inverse, the mean over each (H/h) x (W/w) cell.

With a DiT of patch P = H/h on the channel-stacked [pixels, upsampled latent] image, token i holds
pixel patch i and (P^2 copies of) latent cell i, so its linear patch embedding is the sum of a pixel
embedding and a latent embedding (the paper's summed per-token embeddings), and the cell mean of the
latent output channels is a linear latent head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LatentNormalizer:
    """Latent Forcing's latent normalisation (arXiv 2602.11401, official RAE encode step):

        l = (f - mean_c) / sqrt(var_c + eps) * pixel_std

    so that every latent channel has the pixels' standard deviation (the paper's match_pixel_norm =
    0.485 on ImageNet in [-1, 1]) and the two streams see noise of the same relative size at the
    same t. ``mean``/``var`` (C,) are per-channel statistics of the encoder's features on the training data."""

    mean: Tensor
    var: Tensor
    pixel_std: float
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.mean.dim() != 1 or self.mean.shape != self.var.shape:
            raise ValueError(f"LatentNormalizer: mean and var must be (C,) of one shape, got {tuple(self.mean.shape)} and {tuple(self.var.shape)}")
        if (self.var < 0).any() or not self.pixel_std > 0:
            raise ValueError("LatentNormalizer: var must be >= 0 and pixel_std > 0")

    @classmethod
    def fit(cls, features: Tensor, pixels: Tensor, eps: float = 1e-5) -> LatentNormalizer:
        """Per-channel mean and (biased) variance of ``features`` (N, C, h, w) over (N, h, w) in fp64;
        pixel_std = the standard deviation of all entries of ``pixels``."""
        if features.dim() != 4:
            raise ValueError(f"LatentNormalizer.fit: features must be (N, C, h, w), got {tuple(features.shape)}")
        f = features.detach().double()
        mean = f.mean(dim=(0, 2, 3))
        var = f.var(dim=(0, 2, 3), unbiased=False)
        return cls(mean.float(), var.float(), float(pixels.detach().double().std()), eps)

    def __call__(self, features: Tensor) -> Tensor:
        if features.dim() != 4 or features.shape[1] != self.mean.shape[0]:
            raise ValueError(f"LatentNormalizer: features must be (B, {self.mean.shape[0]}, h, w), got {tuple(features.shape)}")
        scale = self.pixel_std / torch.sqrt(self.var + self.eps)
        return (features - self.mean[:, None, None]) * scale[:, None, None]


@dataclass(frozen=True)
class PrincipalChannels:
    """Projection of a (B, C, h, w) feature map onto its top-k principal channel directions, per cell:

        p = U_k^T (f - mean),   U_k (C, k) the eigenvectors of the channel covariance with the k largest eigenvalues,

    fitted over all cells of the training data (fp64; each direction's sign fixed so that its largest
    entry is positive). A latent of k channels instead of C, keeping the most variance a linear map can."""

    mean: Tensor
    basis: Tensor

    def __post_init__(self) -> None:
        if self.mean.dim() != 1 or self.basis.dim() != 2 or self.basis.shape[0] != self.mean.shape[0]:
            raise ValueError(f"PrincipalChannels: mean must be (C,) and basis (C, k), got {tuple(self.mean.shape)} and {tuple(self.basis.shape)}")

    @classmethod
    def fit(cls, features: Tensor, k: int) -> PrincipalChannels:
        if features.dim() != 4:
            raise ValueError(f"PrincipalChannels.fit: features must be (N, C, h, w), got {tuple(features.shape)}")
        if not 1 <= k <= features.shape[1]:
            raise ValueError(f"PrincipalChannels.fit: k must be in [1, {features.shape[1]}], got {k}")
        cells = features.detach().double().permute(0, 2, 3, 1).reshape(-1, features.shape[1])
        mean = cells.mean(0)
        eigenvalues, vectors = torch.linalg.eigh(torch.cov((cells - mean).T, correction=0))
        basis = vectors[:, eigenvalues.argsort(descending=True)[:k]]
        basis = basis * torch.sign(basis.gather(0, basis.abs().argmax(0, keepdim=True)))
        return cls(mean.float(), basis.float())

    def __call__(self, features: Tensor) -> Tensor:
        if features.dim() != 4 or features.shape[1] != self.mean.shape[0]:
            raise ValueError(f"PrincipalChannels: features must be (B, {self.mean.shape[0]}, h, w), got {tuple(features.shape)}")
        return torch.einsum("bchw,ck->bkhw", features - self.mean[:, None, None], self.basis)


def _cell(small: tuple[int, int], large: tuple[int, int]) -> int:
    (h, w), (H, W) = small, large
    if H % h or W % w or H // h != W // w:
        raise ValueError(f"the latent grid {h}x{w} must divide the pixel grid {H}x{W} by one square cell")
    return H // h


def latent_on_pixel_grid(latent: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, h, w) -> (B, C, H, W): every latent cell repeated over its (H/h) x (W/w) block of pixels."""
    if latent.dim() != 4:
        raise ValueError(f"latent must be (B, C, h, w), got {tuple(latent.shape)}")
    k = _cell(tuple(latent.shape[2:]), size)
    return latent.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)


def latent_from_pixel_grid(x: Tensor, grid: tuple[int, int]) -> Tensor:
    """(B, C, H, W) -> (B, C, h, w): the mean over each cell; the left inverse of ``latent_on_pixel_grid``."""
    if x.dim() != 4:
        raise ValueError(f"x must be (B, C, H, W), got {tuple(x.shape)}")
    k = _cell(grid, tuple(x.shape[2:]))
    return torch.nn.functional.avg_pool2d(x, k)
