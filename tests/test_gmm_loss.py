"""ParAE's GMM likelihood (Eckart et al., Eqs. 2-11) against hand and scipy computations."""

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from scipy.stats import multivariate_normal

from pointssl.losses.gmm import GMMLikelihoodLoss, fit_gmm, gmm_log_prob, gmm_nll, posterior


def _clusters(rng, sizes, centres):
    pts = [c + rng.normal(scale=0.1 + 0.05 * k, size=(n, 3)) * [1.0, 0.5, 0.2]
           for k, (n, c) in enumerate(zip(sizes, centres, strict=True))]
    labels = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)])
    return np.concatenate(pts), labels


def test_posterior_is_row_softmax():
    s = torch.tensor([[[0.0, math.log(3.0)], [2.0, 2.0]]])
    g = posterior(s)
    torch.testing.assert_close(g, torch.tensor([[[0.25, 0.75], [0.5, 0.5]]]))


def test_one_hot_logits_give_per_cluster_statistics():
    rng = np.random.default_rng(0)
    pts, lab = _clusters(rng, [7, 12, 5], [[0, 0, 0], [1, 0, 0], [0, 1, 1]])
    perm = rng.permutation(len(pts))
    pts, lab = pts[perm], lab[perm]
    j = 4  # one component gets no point at all
    logits = 1e4 * np.eye(j)[lab]  # softmax is exactly one-hot in float64
    gmm = fit_gmm(torch.tensor(pts)[None], torch.tensor(logits)[None], eps=0.0)
    n = len(pts)
    for k in range(3):
        x = pts[lab == k]
        assert gmm.pi[0, k].item() == pytest.approx(len(x) / n, abs=1e-12)
        np.testing.assert_allclose(gmm.mu[0, k].numpy(), x.mean(0), atol=1e-12)
        np.testing.assert_allclose(gmm.sigma[0, k].numpy(), np.cov(x.T, bias=True), atol=1e-12)
    assert gmm.pi[0, 3].item() < 1e-300
    assert torch.isfinite(gmm.mu).all() and torch.isfinite(gmm.sigma).all()


def test_eps_is_added_to_the_covariance():
    rng = np.random.default_rng(1)
    p = torch.tensor(rng.normal(size=(1, 30, 3)))
    s = torch.tensor(rng.normal(size=(1, 30, 5)))
    a, b = fit_gmm(p, s, eps=0.0), fit_gmm(p, s, eps=0.25)
    eye = torch.eye(3, dtype=p.dtype).expand(1, 5, 3, 3)
    torch.testing.assert_close(b.sigma - a.sigma, 0.25 * eye)


def _scipy_nll(points, logits, eps):
    """Independent Eqs. 5-10 in numpy + scipy's multivariate_normal: per-shape NLL (Eq. 8)."""
    out = []
    for p, s in zip(points, logits, strict=True):
        g = softmax(s, axis=1)
        nj = g.sum(0)
        pi = nj / len(p)
        comp = []
        for k in range(s.shape[1]):
            mu = (g[:, k:k + 1] * p).sum(0) / nj[k]
            d = p - mu
            cov = (g[:, k, None, None] * d[:, :, None] * d[:, None, :]).sum(0) / nj[k]
            comp.append(np.log(pi[k]) + multivariate_normal(mu, cov + eps * np.eye(3)).logpdf(p))
        out.append(-logsumexp(np.stack(comp), axis=0).sum())
    return np.array(out)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 2e-4)])
def test_nll_matches_scipy_mixture(dtype, tol):
    rng = np.random.default_rng(2)
    b, n, j, eps = 3, 40, 4, 1e-3
    pts = rng.uniform(-1, 1, size=(b, n, 3))
    logits = 2.0 * rng.normal(size=(b, n, j))
    ref = _scipy_nll(pts, logits, eps)
    p, s = torch.tensor(pts, dtype=dtype), torch.tensor(logits, dtype=dtype)
    per_point = gmm_nll(p, s, eps, reduction="none")
    assert per_point.shape == (b, n)
    np.testing.assert_allclose(per_point.sum(1).double().numpy(), ref, rtol=tol)
    assert gmm_nll(p, s, eps).item() == pytest.approx(ref.mean() / n, rel=tol)
    assert gmm_nll(p, s, eps, reduction="sum").item() == pytest.approx(ref.mean(), rel=tol)


def test_float32_inputs_keep_precision_for_thin_components_far_from_origin():
    """Flat patches (Σ ~ ε across) far from the origin: the moment and Mahalanobis expansions
    must not cancel in float32."""
    rng = np.random.default_rng(5)
    pts = np.concatenate([rng.uniform(-0.3, 0.3, (60, 3)) * [1, 1, 0] + [3.0, -2.0, 4.0],
                          rng.uniform(-0.3, 0.3, (60, 3)) * [0, 1, 1] + [-3.0, 2.5, 1.0]])
    logits = 30.0 * np.eye(2)[np.repeat([0, 1], 60)] + rng.normal(size=(120, 2))
    ref = gmm_nll(torch.tensor(pts)[None], torch.tensor(logits)[None], 1e-4, "none")
    got = gmm_nll(torch.tensor(pts, dtype=torch.float32)[None],
                  torch.tensor(logits, dtype=torch.float32)[None], 1e-4, "none")
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), ref.numpy(), atol=2e-4)


def test_log_prob_integrates_to_one():
    """g(.; Θ) is a density over R^3: a Monte-Carlo check with a wide uniform proposal."""
    rng = np.random.default_rng(3)
    p = torch.tensor(rng.uniform(-0.5, 0.5, size=(1, 50, 3)))
    gmm = fit_gmm(p, torch.tensor(rng.normal(size=(1, 50, 3))), eps=1e-2)
    q = torch.tensor(rng.uniform(-2, 2, size=(1, 200_000, 3)))
    integral = gmm_log_prob(q, gmm).exp().mean().item() * 4.0 ** 3
    assert integral == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("dead", [-1e4, -1e30])
def test_empty_component_gives_finite_loss_and_gradients(dead):
    torch.manual_seed(0)
    p = torch.rand(2, 64, 3)
    s = torch.randn(2, 64, 6)
    s[..., 2] = dead  # component 2 receives no mass at all
    s.requires_grad_(True)
    p.requires_grad_(True)
    out = GMMLikelihoodLoss(eps=1e-4)(p, s)
    out["nll"].backward()
    assert torch.isfinite(out["nll"])
    assert torch.isfinite(s.grad).all() and torch.isfinite(p.grad).all()
    assert s.grad.abs().sum() > 0
    assert out["min_pi"].item() < 1e-30


def test_sharper_partition_of_separated_clusters_has_lower_nll():
    """The loss prefers the partition that matches the geometry (the pretext signal)."""
    rng = np.random.default_rng(4)
    pts, lab = _clusters(rng, [40, 40], [[-2, 0, 0], [2, 0, 0]])
    p = torch.tensor(pts, dtype=torch.float32)[None]
    good = torch.tensor(5.0 * np.eye(2)[lab], dtype=torch.float32)[None]
    bad = torch.tensor(5.0 * np.eye(2)[rng.integers(0, 2, len(lab))], dtype=torch.float32)[None]
    assert gmm_nll(p, good).item() < gmm_nll(p, bad).item() - 1.0


def test_shape_validation():
    with pytest.raises(ValueError):
        fit_gmm(torch.zeros(2, 10, 2), torch.zeros(2, 10, 4))
    with pytest.raises(ValueError):
        fit_gmm(torch.zeros(2, 10, 3), torch.zeros(2, 9, 4))
