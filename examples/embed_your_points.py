"""Features from your own points: clouds of any sizes in, one global feature per cloud and
one feature per point out.

    python examples/embed_your_points.py                           # random-init PointNet
    python examples/embed_your_points.py runs/conclu/backbone.pt   # a pre-trained export
"""

import sys

import numpy as np

import pointssl

rng = np.random.default_rng(0)
# Stand-ins for your scans: any (N, 3) float arrays, here three clouds of different sizes.
clouds = [rng.normal(size=(n, 3)).astype(np.float32) for n in (500, 1000, 2048)]

if len(sys.argv) > 1:
    backbone = pointssl.load_backbone(sys.argv[1])
    print("loaded", backbone.name, "trained by", backbone.meta.get("method"))
else:
    backbone = pointssl.build_backbone("pointnet", seed=0)

out = pointssl.embed(backbone, clouds)
print("global", out["global"].shape)
for cloud, feat in zip(clouds, out["points"]):
    print("cloud", cloud.shape, "-> per-point", feat.shape)
