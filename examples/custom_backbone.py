"""Bring your own backbone: register it, and every method and protocol can use it.

Inside pointssl a backbone is one file in ``pointssl/backbones/`` with this decorator (the
contract test in tests/test_backbone_contract.py then checks it with no other edit); from
outside, the same decorator in your own code does it for the Python API.

    python examples/custom_backbone.py
"""

import tempfile
from pathlib import Path

import torch
from torch import nn

import pointssl
from pointssl.backbones.base import BACKBONES, Backbone, segment_max
from pointssl.methods.base import METHODS
from pointssl.structures import BackboneOutput


@BACKBONES.register("tiny_mlp")
class TinyMLP(Backbone):
    """Per-point MLP, max-pooled per cloud. Writing ``forward_packed`` (clouds of any sizes,
    packed) is enough: the base class derives the dense ``(B, N, 3)`` path from it."""

    name = "tiny_mlp"

    def __init__(self, width: int = 64):
        super().__init__(width=width)
        self.global_dim = self.point_dim = width
        self.mlp = nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, width))

    def forward_packed(self, x: torch.Tensor, offset: torch.Tensor) -> BackboneOutput:
        f = self.mlp(x)  # x (P, 3) -> (P, width)
        return BackboneOutput(segment_max(f, offset), f, offset)


method = pointssl.build_method("conclu", "tiny_mlp", num_points=128, batch_size=8,
                               proj_hidden=32, proj_dim=16, pred_hidden=8)
clouds = [torch.randn(n, 3).numpy() for n in (100, 300, 250)]
print("embed:", pointssl.embed(method.backbone, clouds)["global"].shape)
dense = method.backbone(torch.randn(4, 128, 3))  # a dense batch works too
print("dense:", tuple(dense.global_feat.shape), tuple(dense.point_feat.shape))
print("methods that can train it:", ", ".join(METHODS.names()))

with tempfile.TemporaryDirectory() as run:
    scans = [torch.randn(int(n), 3).numpy() for n in torch.randint(150, 400, (16,))]
    m = pointssl.pretrain(method, scans, Path(run) / "tiny", epochs=1, progress=False)
    print(f"pre-trained {m['steps']} steps; exported:",
          pointssl.load_backbone(Path(run) / "tiny" / "backbone.pt").name)
