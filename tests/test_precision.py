"""bf16 autocast: the trainer's ``precision`` option and the losses that must stay fp32."""

import numpy as np
import pytest
import torch

from pointssl.api import build_backbone, build_method
from pointssl.backbones.pointnet import PointNet
from pointssl.engine.trainer import Trainer
from pointssl.errors import PointSSLError
from pointssl.losses.clustering import SwappedClustering, sinkhorn
from pointssl.losses.contrastive import SymmetricNegativeCosine
from pointssl.losses.gmm import GMMLikelihoodLoss, gmm_nll
from pointssl.methods import METHODS


@pytest.mark.parametrize("name", ["conclu", "parae"])
def test_a_bf16_cpu_training_step_runs_with_fp32_weights_and_a_finite_loss(tmp_path, name):
    torch.manual_seed(0)
    method = build_method(name, build_backbone("pointnet", **PointNet.test_config()),
                          **METHODS.get(name).test_config())
    before = {k: v.clone() for k, v in method.state_dict().items()}
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(64, 3)).astype(np.float32) for _ in range(8)]
    seen = []

    method.backbone.register_forward_hook(lambda m, i, o: seen.append(
        (torch.is_autocast_enabled("cpu"), o.global_feat.dtype)))
    metrics = Trainer(method, _Data(clouds), tmp_path / "run", epochs=1, batch_size=4,
                      precision="bf16", progress=False, max_steps=1).fit()
    assert metrics["precision"] == "bf16" and metrics["steps"] == 1
    assert np.isfinite(metrics["loss"])
    assert seen and all(on for on, _ in seen)  # the forward ran under autocast
    assert all(p.dtype == torch.float32 for p in method.parameters())
    assert any(not torch.equal(before[k], v) for k, v in method.state_dict().items())


class _Data:
    def __init__(self, clouds):
        self.points = clouds
        self.labels = np.full(len(clouds), -1)

    def __len__(self):
        return len(self.points)

    def __getitem__(self, i):
        return {"points": self.points[i], "index": i}


def test_precision_is_checked():
    with pytest.raises(PointSSLError, match="precision"):
        Trainer(build_method("parae", build_backbone("pointnet", **PointNet.test_config())),
                _Data([np.zeros((8, 3), np.float32)] * 4), "unused", precision="fp16")


def test_clustering_and_gmm_losses_compute_in_fp32_under_bf16_autocast():
    """Under autocast the losses give the fp32 numbers (bf16 matmuls inside would move them
    by ~1e-3: cos / tau with tau = 0.01) and fp32 results for bf16 inputs."""
    torch.manual_seed(0)
    clu = SwappedClustering(16, 4)
    qz = torch.randn(4, 8, 16).unbind(0)
    ref = clu(*qz)
    pts, logits = torch.randn(2, 50, 3), torch.randn(2, 50, 4)
    ref_nll = gmm_nll(pts, logits)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = clu(*qz)
        low = clu(*(t.bfloat16() for t in qz))
        plan = sinkhorn(torch.rand(8, 4).bfloat16())
        nll = gmm_nll(pts, logits)
        res = GMMLikelihoodLoss()(pts, logits.bfloat16())
    for k in ("clu", "swap_ce", "orth"):
        assert torch.allclose(out[k], ref[k], rtol=1e-6, atol=0)
        assert low[k].dtype == torch.float32
    assert plan.dtype == torch.float32
    assert torch.allclose(nll, ref_nll, rtol=1e-6, atol=0)
    assert res["nll"].dtype == torch.float32


def test_contrastive_loss_computes_in_fp32_under_bf16_autocast():
    """bf16 inputs (as autocast's linear layers give them) get the fp32 value of the same
    numbers, in fp32; a bf16 cosine would be off by ~1e-3."""
    torch.manual_seed(0)
    v = [t.bfloat16() for t in torch.randn(4, 32, 128).unbind(0)]
    ref = SymmetricNegativeCosine()(*(t.float() for t in v))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SymmetricNegativeCosine()(*v)
    assert out.dtype == torch.float32
    assert torch.allclose(out, ref, rtol=1e-6, atol=1e-7)
    bf = (2 - 2 * torch.nn.functional.cosine_similarity(v[0], v[3], dim=-1)).mean() + \
        (2 - 2 * torch.nn.functional.cosine_similarity(v[2], v[1], dim=-1)).mean()
    assert bf.dtype == torch.bfloat16 and not torch.allclose(bf.float(), ref, atol=1e-4)
