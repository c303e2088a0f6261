"""Bring your own backbone: register it, and every method and protocol can use it.

Inside pointssl a backbone is one file in ``pointssl/backbones/`` with this decorator (the
contract test in tests/test_backbone_contract.py then checks it with no other edit); from
outside, the same decorator in your own code does it for the Python API.

    python examples/custom_backbone.py
"""

import torch
from torch import nn

import pointssl
from pointssl.backbones.base import BACKBONES, Backbone
from pointssl.methods.base import METHODS
from pointssl.structures import BackboneOutput, as_point_batch


@BACKBONES.register("tiny_mlp")
class TinyMLP(Backbone):
    """Per-point MLP, max-pooled per cloud; works on packed clouds of any sizes."""

    name = "tiny_mlp"

    def __init__(self, width: int = 64):
        super().__init__(width=width)
        self.global_dim = self.point_dim = width
        self.mlp = nn.Sequential(nn.Linear(3, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x) -> BackboneOutput:
        batch = as_point_batch(x)
        f = self.mlp(batch.coord)  # (P, width)
        idx = batch.batch_index.unsqueeze(1).expand_as(f)
        g = f.new_full((batch.batch_size, f.shape[1]), float("-inf"))
        g = g.scatter_reduce(0, idx, f, reduce="amax")
        return BackboneOutput(g, f, batch.offset)


method = pointssl.build_method("conclu", "tiny_mlp", num_points=128, batch_size=8,
                               proj_hidden=32, proj_dim=16, pred_hidden=8)
clouds = [torch.randn(n, 3).numpy() for n in (100, 300, 250)]
print("embed:", pointssl.embed(method.backbone, clouds)["global"].shape)
print("methods that can train it:", ", ".join(METHODS.names()))
