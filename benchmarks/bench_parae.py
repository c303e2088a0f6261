"""ParAE pre-training throughput: one optimiser step (fwd + bwd + Adam) per backbone.

    OMP_NUM_THREADS=2 python benchmarks/bench_parae.py [--backbones pointnet dgcnn]
        [--batch 32] [--points 1024] [--steps 3] [--warmup 1] [--threads 2]

Points are ModelNet40 shapes when ``../shared/data/modelnet40_1024`` exists (the cost does
not depend on content), else random clouds. Prints a markdown table with the median step
time, shapes/s, the GMM likelihood's forward time (Eqs. 5-10) and, for scale, a step of
the backbone trained alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pointssl.backbones import build_backbone
from pointssl.methods.parae import ParAE, ParAEConfig

DATA = Path(os.environ.get("POINTSSL_DATA",
                          Path(__file__).resolve().parents[2] / "shared" / "data"))


def load_points(b: int, n: int) -> tuple[torch.Tensor, str]:
    h5 = DATA / "modelnet40_1024" / "ply_data_train0.h5"
    if h5.is_file() and n <= 1024:
        import h5py

        with h5py.File(h5) as f:
            return torch.from_numpy(f["data"][:b, :n].astype(np.float32)), "ModelNet40"
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.normalize(torch.randn(b, n, 3, generator=g), dim=-1), "random"


def bench(name: str, pts: torch.Tensor, steps: int, warmup: int, baseline: bool = True) -> dict:
    torch.manual_seed(0)
    m = ParAE(build_backbone(name), ParAEConfig()).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    batch = {"points": pts}
    times, gmm_times = [], []
    for i in range(warmup + steps):
        with torch.no_grad():
            _, s = m.logits(pts)
        t1 = time.perf_counter()
        m.gmm_loss(pts, s)  # GMM forward alone, for its share of the step
        t2 = time.perf_counter()
        loss = m(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t3 = time.perf_counter()
        if i >= warmup:
            times.append(t3 - t2)
            gmm_times.append(t2 - t1)
    # the same backbone trained alone (loss = sum of global features): ParAE's overhead as a
    # ratio, which is steadier than absolute times on a shared CPU
    bb_times = []
    bopt = torch.optim.Adam(m.backbone.parameters(), lr=1e-3)
    for i in range(warmup + steps if baseline else 0):
        t0 = time.perf_counter()
        loss = m.backbone(pts).global_feat.sum()
        bopt.zero_grad(set_to_none=True)
        loss.backward()
        bopt.step()
        if i >= warmup:
            bb_times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"backbone": name, "step_s": med, "shapes_s": len(pts) / med,
            "gmm_fwd_s": statistics.median(gmm_times), "steps": times,
            "backbone_step_s": statistics.median(bb_times) if bb_times else float("nan")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["pointnet", "dgcnn"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-baseline", action="store_true", help="skip the backbone-alone steps")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pts, source = load_points(args.batch, args.points)
    print(f"# ParAE step (fwd+bwd+Adam), {args.batch} x {args.points} {source} points, "
          f"J={ParAEConfig().num_components}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} after {args.warmup} warm-up\n")
    print("| backbone | step (s) | shapes/s | GMM loss fwd (s) | backbone alone (s) | "
          "all steps (s) |")
    print("|---|---|---|---|---|---|")
    for name in args.backbones:
        r = bench(name, pts, args.steps, args.warmup, baseline=not args.no_baseline)
        print(f"| {name} | {r['step_s']:.2f} | {r['shapes_s']:.1f} | {r['gmm_fwd_s']:.3f} | "
              f"{r['backbone_step_s']:.2f} | "
              f"{', '.join(f'{t:.2f}' for t in r['steps'])} |", flush=True)


if __name__ == "__main__":
    main()
