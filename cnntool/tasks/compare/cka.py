"""Centered kernel alignment (Kornblith et al. 2019) from minibatches, with the unbiased HSIC
estimator (Song et al. 2012), as "minibatch CKA" (Nguyen, Raghu & Kornblith 2021):

    CKA(A, B) = Σ_k HSIC₁(K_k, L_k) / sqrt(Σ_k HSIC₁(K_k, K_k) · Σ_k HSIC₁(L_k, L_k))

where K_k and L_k are the Gram matrices of layers A and B over minibatch k, and

    HSIC₁(K, L) = [tr(K̃L̃) + 1ᵀK̃1 · 1ᵀL̃1 / ((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3))

with K̃, L̃ the Gram matrices with their diagonals set to zero (n ≥ 4 images). Each HSIC₁ is an
unbiased estimate of the population HSIC, so their average over minibatches is too, and memory
stays that of one minibatch however large the dataset. (The minibatches are equally weighted:
the count cancels in the ratio.)

Kernels: linear (K = XXᵀ) and RBF (K_ij = exp(−‖x_i − x_j‖² / (2σ²)), σ = `rbf_sigma` × the
median distance between the minibatch's images, computed per minibatch).

HSIC₁ does not change when a constant is added to every feature vector (checked in the tests),
so features are centred over the minibatch before the Gram matrix: the matrix is then formed in
float32 without the cancellation of large positive (post-ReLU) values, and everything after it
is float64.

For every pair of layers at once: with each layer's K̃ flattened into a row of G (layers × n²),
its row sums R (layers × n) and totals t, the pairs' HSIC₁ are
(G_A G_Bᵀ + t_A t_Bᵀ/((n−1)(n−2)) − 2/(n−2) R_A R_Bᵀ) / (n(n−3)): three matrix products.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

KERNELS = ("linear", "rbf")
MIN_IMAGES = 4  # HSIC₁ divides by n − 3


@dataclass(frozen=True)
class GramStack:
    """The zero-diagonal Gram matrices of several layers over one minibatch of n images, flattened
    (layers × n²) with their row sums (layers × n) and totals (layers), float64."""

    grams: torch.Tensor
    rows: torch.Tensor
    totals: torch.Tensor

    @property
    def n(self) -> int:
        return self.rows.shape[1]

    @classmethod
    def of(cls, grams: Sequence[torch.Tensor]) -> GramStack:
        """From square Gram matrices (n × n each; their diagonals are zeroed here)."""
        stacked = torch.stack([g.to(torch.float64) for g in grams])
        stacked.diagonal(dim1=1, dim2=2).zero_()
        rows = stacked.sum(dim=2)
        return cls(stacked.flatten(1), rows, rows.sum(dim=1))


def gram_matrices(
    features: torch.Tensor,
    kernels: Sequence[str] = KERNELS,
    rbf_sigma: float = 1.0,
    *,
    in_place: bool = False,
) -> dict[str, torch.Tensor]:
    """The Gram matrices of one layer over one minibatch (`features`: n images × D), float64,
    per kernel (diagonals as they come: GramStack.of zeroes them). `in_place`: centre the
    caller's float32 `features` in place instead of a copy."""
    # centred (HSIC₁ is unchanged) so that the float32 product keeps its digits
    mean = features.float().mean(dim=0, keepdim=True)
    x = features.sub_(mean) if in_place else features.float() - mean
    linear = (x @ x.T).to(torch.float64)
    found = {}
    if "linear" in kernels:
        found["linear"] = linear
    if "rbf" in kernels:
        found["rbf"] = rbf_gram(linear, rbf_sigma)
    return found


def rbf_gram(linear: torch.Tensor, rbf_sigma: float) -> torch.Tensor:
    """exp(−d²/(2σ²)) from a linear Gram matrix, σ = `rbf_sigma` × the median distance between
    two different images of the minibatch (the lower median for an even count). When more than
    half the pairs coincide (median 0) the median of the non-zero distances is used; when all
    do, every entry is 1 (HSIC₁ 0: the layer does not vary)."""
    norms = linear.diagonal()
    squared = (norms[:, None] + norms[None, :] - 2 * linear).clamp_min_(0)
    squared.fill_diagonal_(0)
    n = squared.shape[0]
    upper = squared[torch.triu_indices(n, n, offset=1, device=squared.device).unbind()]
    median = upper.median() if upper.numel() else upper.new_zeros(())
    if median <= 0:
        positive = upper[upper > 0]
        if not positive.numel():
            return torch.ones_like(squared)
        median = positive.median()
    return torch.exp(-squared / (2 * rbf_sigma**2 * median))


def hsic_pairs(a: GramStack, b: GramStack) -> torch.Tensor:
    """HSIC₁ of every layer of `a` with every layer of `b` (layers_a × layers_b, float64)."""
    n = a.n
    if n != b.n:
        raise ValueError(f"the minibatches differ: {n} and {b.n} images")
    if n < MIN_IMAGES:
        raise ValueError(f"HSIC₁ needs at least {MIN_IMAGES} images, not {n}")
    traces = a.grams @ b.grams.T
    products = torch.outer(a.totals, b.totals) / ((n - 1) * (n - 2))
    cross = (a.rows @ b.rows.T) * (2.0 / (n - 2))
    return (traces + products - cross) / (n * (n - 3))


def hsic_self(a: GramStack) -> torch.Tensor:
    """HSIC₁(K, K) of each layer (the diagonal of hsic_pairs(a, a), without the other pairs)."""
    n = a.n
    traces = (a.grams * a.grams).sum(dim=1)
    products = a.totals**2 / ((n - 1) * (n - 2))
    cross = (a.rows * a.rows).sum(dim=1) * (2.0 / (n - 2))
    return (traces + products - cross) / (n * (n - 3))


@dataclass(frozen=True)
class MinibatchHsic:
    """One minibatch's HSIC₁ values per kernel: `cross` (layers_a × layers_b), `self_a`, `self_b`
    (each layer with itself); numpy float64, so that ranks can send them and sums stay exact."""

    index: int  # the minibatch's number: sums run in this order, whatever rank computed it
    images: int
    cross: dict[str, np.ndarray]
    self_a: dict[str, np.ndarray]
    self_b: dict[str, np.ndarray]


def minibatch_hsic(
    index: int,
    features_a: Sequence[torch.Tensor],
    features_b: Sequence[torch.Tensor] | None,
    kernels: Sequence[str] = KERNELS,
    rbf_sigma: float = 1.0,
    *,
    in_place: bool = False,
) -> MinibatchHsic:
    """HSIC₁ of one minibatch for every pair of layers: `features_a` (one n × D_i tensor per layer
    of A), `features_b` likewise for B (None: A against itself). `in_place`: the features are
    float32 buffers of the caller's that may be centred in place."""
    grams_a = [gram_matrices(f, kernels, rbf_sigma, in_place=in_place) for f in features_a]
    grams_b = None
    if features_b is not None:
        grams_b = [gram_matrices(f, kernels, rbf_sigma, in_place=in_place) for f in features_b]
    cross, self_a, self_b = {}, {}, {}
    for kernel in kernels:
        stack_a = GramStack.of([g[kernel] for g in grams_a])
        stack_b = stack_a if grams_b is None else GramStack.of([g[kernel] for g in grams_b])
        cross[kernel] = hsic_pairs(stack_a, stack_b).cpu().numpy()
        self_a[kernel] = hsic_self(stack_a).cpu().numpy()
        self_b[kernel] = self_a[kernel] if grams_b is None else hsic_self(stack_b).cpu().numpy()
    images = features_a[0].shape[0] if features_a else 0
    return MinibatchHsic(index, images, cross, self_a, self_b)


@dataclass(frozen=True)
class HsicSums:
    """HSIC₁ summed over minibatches, in minibatch order (so every launch sums alike)."""

    cross: dict[str, np.ndarray]
    self_a: dict[str, np.ndarray]
    self_b: dict[str, np.ndarray]
    minibatches: int
    images: int

    @classmethod
    def of(cls, parts: Sequence[MinibatchHsic], kernels: Sequence[str]) -> HsicSums:
        ordered = sorted(parts, key=lambda part: part.index)
        if not ordered:
            raise ValueError("no minibatch to sum")

        def total(field: str, kernel: str) -> np.ndarray:
            values = [getattr(part, field)[kernel] for part in ordered]
            out = np.zeros_like(values[0])
            for value in values:  # one by one, in order: not numpy's pairwise sum
                out = out + value
            return out

        return cls(
            cross={k: total("cross", k) for k in kernels},
            self_a={k: total("self_a", k) for k in kernels},
            self_b={k: total("self_b", k) for k in kernels},
            minibatches=len(ordered),
            images=sum(part.images for part in ordered),
        )

    def cka(self, kernel: str) -> np.ndarray:
        """CKA of every pair (layers_a × layers_b); NaN where a layer's HSIC₁ with itself is not
        positive (a layer that does not vary over DATA: its CKA is undefined)."""
        a, b = self.self_a[kernel], self.self_b[kernel]
        scale = np.sqrt(np.clip(np.outer(a, b), 0, None))
        valid = (a[:, None] > 0) & (b[None, :] > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(valid, self.cross[kernel] / np.where(valid, scale, 1.0), np.nan)
