"""GMM likelihood of a point cloud under the mixture its own soft partition defines (ParAE).

Given points P (B, N, 3) and point-wise logits S (B, N, J) (Eckart et al., Sec. 3):

- posterior Γ = row-softmax(S)                                   Eqs. 2-4
- π_j = Σ_i γ_ij / N,  μ_j = Σ_i γ_ij p_i / (N π_j),
  Σ_j = Σ_i γ_ij (p_i - μ_j)(p_i - μ_j)ᵀ / (N π_j)  (+ ε I)       Eqs. 5-7 (biased moments)
- loss = -log Π_i Σ_j π_j N(p_i; μ_j, Σ_j)                        Eqs. 8-11

Normalisation: ``gmm_nll`` returns the NLL averaged over points *and* shapes, i.e. Eq. 8
divided by N and averaged over the batch (the Monte-Carlo estimate of Eq. 11, divided by N),
in nats per point. ``reduction="sum"`` gives Eq. 8 per shape, averaged over the batch.

Numerics: everything is in the log domain. log π_j = logsumexp_i log γ_ij - log N, and the
per-component point weights γ_ij / (N π_j) are a softmax over i of log γ_ij. That is Eqs. 5-7
exactly when N π_j > 0, and it stays finite (no 0/0, no log 0) for a component whose mass
underflows to zero: its mean/covariance become those of its most responsible points and its
weight enters the mixture as a very negative log π_j. ε I keeps Σ_j positive definite for
the Cholesky factorisation and bounds the density of flat or single-point components.
Speed and precision: the moments (Eqs. 6-7) and the Mahalanobis terms are batched matmuls
of [vec(p pᵀ), p, 1] features, never an (N, J, 3) difference tensor, and they run in float64
(an E[ppᵀ] - μμᵀ or pᵀΣ⁻¹p expansion cancels badly in float32 when Σ ~ ε). The (B, N, J)
terms (softmax, log-sum-exp) stay in the input precision (at least float32; autocast off).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

LOG_2PI = math.log(2 * math.pi)


class GMM(NamedTuple):
    """A batch of 3-D Gaussian mixtures: log π (B, J), μ (B, J, 3), Σ (B, J, 3, 3).

    μ and Σ are float64: they come from second moments, which cancel in lower precision.
    """

    log_pi: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor

    @property
    def pi(self) -> torch.Tensor:
        return self.log_pi.exp()


def _work_dtype(*ts: torch.Tensor) -> torch.dtype:
    dt = torch.float32
    for t in ts:
        dt = torch.promote_types(dt, t.dtype)
    return dt


def _quadratic_features(p: torch.Tensor) -> torch.Tensor:
    """φ(p) = [vec(p pᵀ), p, 1] (..., 13) in float64: every Gaussian quadratic form and every
    second moment is then one batched matmul, never an (N, J, 3) difference tensor."""
    p = p.double()
    pp = (p.unsqueeze(-1) * p.unsqueeze(-2)).flatten(-2)
    return torch.cat([pp, p, torch.ones_like(p[..., :1])], dim=-1)


def posterior(logits: torch.Tensor) -> torch.Tensor:
    """Γ = row-wise softmax of the (..., N, J) logits over the J components (Eqs. 2-4)."""
    return torch.softmax(logits, dim=-1)


def fit_gmm(points: torch.Tensor, logits: torch.Tensor, eps: float = 1e-4) -> GMM:
    """ξ(P, S): mixture parameters from points (B, N, 3) and logits (B, N, J) (Eqs. 5-7).

    Differentiable in both arguments; Σ includes ``eps * I``.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
    if logits.dim() != 3 or logits.shape[:2] != points.shape[:2]:
        raise ValueError(f"logits {tuple(logits.shape)} do not match points "
                         f"{tuple(points.shape)} in (B, N)")
    dt = _work_dtype(points, logits)
    with torch.autocast(points.device.type, enabled=False):
        log_gamma = torch.log_softmax(logits.to(dt), dim=-1)  # log Γ, Eq. 4
        log_mass = torch.logsumexp(log_gamma, dim=1)  # log(N π_j), (B, J)
        log_pi = log_mass - math.log(points.shape[1])  # Eq. 5
        # γ_ij / (N π_j), in float64: weights that sum to 1 only to float32 precision would
        # turn E_w[p pᵀ] - μ μᵀ negative by ~1e-7 |p|² across a flat patch
        w = torch.softmax(log_gamma.double(), dim=1)
        mom = w.transpose(1, 2) @ _quadratic_features(points)[..., :12]  # (B, J, 12)
        mu = mom[..., 9:]  # Eq. 6
        # Eq. 7 as E_w[p pᵀ] - μ μᵀ (same value; float64 keeps the difference exact enough)
        sigma = mom[..., :9].unflatten(-1, (3, 3)) - mu.unsqueeze(-1) * mu.unsqueeze(-2)
        sigma = sigma + eps * torch.eye(3, dtype=sigma.dtype, device=sigma.device)
    return GMM(log_pi, mu, sigma)


def gmm_log_prob(points: torch.Tensor, gmm: GMM) -> torch.Tensor:
    """log g(p; Θ) = log Σ_j π_j N(p; μ_j, Σ_j) for points (B, M, 3) -> (B, M) (Eq. 10)."""
    dt = _work_dtype(points, gmm.log_pi)
    with torch.autocast(points.device.type, enabled=False):
        mu, sigma = gmm.mu.double(), gmm.sigma.double()
        chol = torch.linalg.cholesky(sigma)  # (B, J, 3, 3)
        prec = torch.cholesky_inverse(chol)  # Σ⁻¹
        pm = (prec @ mu.unsqueeze(-1)).squeeze(-1)  # Σ⁻¹ μ
        # (p-μ)ᵀ Σ⁻¹ (p-μ) = φ(p) · [vec Σ⁻¹, -2 Σ⁻¹μ, μᵀΣ⁻¹μ]
        coef = torch.cat([prec.flatten(-2), -2 * pm, (pm * mu).sum(-1, keepdim=True)], -1)
        maha = _quadratic_features(points) @ coef.transpose(1, 2)  # (B, M, J)
        log_det = 2 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)  # (B, J)
        log_n = -0.5 * (maha.to(dt) + (log_det + 3 * LOG_2PI).to(dt).unsqueeze(1))
        return torch.logsumexp(gmm.log_pi.to(dt).unsqueeze(1) + log_n, dim=-1)


def gmm_nll(points: torch.Tensor, logits: torch.Tensor, eps: float = 1e-4,
            reduction: str = "mean") -> torch.Tensor:
    """Negative log-likelihood of the points under ξ(P, S) (Eqs. 8-11).

    reduction: "mean" = nats per point, averaged over shapes; "sum" = Eq. 8 per shape,
    averaged over shapes; "none" = (B, N) per-point NLL.
    """
    nll = -gmm_log_prob(points, fit_gmm(points, logits, eps))
    if reduction == "mean":
        return nll.mean()
    if reduction == "sum":
        return nll.sum(1).mean()
    if reduction == "none":
        return nll
    raise ValueError(f"unknown reduction {reduction!r}")


class GMMLikelihoodLoss(nn.Module):
    """ParAE's loss: returns {"nll": per-point mean NLL, "min_pi": smallest π_j (detached)}."""

    def __init__(self, eps: float = 1e-4):
        super().__init__()
        self.eps = eps

    def forward(self, points: torch.Tensor, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        gmm = fit_gmm(points, logits, self.eps)
        nll = -gmm_log_prob(points, gmm).mean()
        return {"nll": nll, "min_pi": gmm.log_pi.detach().min().exp()}
