"""Pre-training throughput (shapes/s) and peak RSS per method x backbone.

Each configuration runs in its own process (so peak RSS is its own): a few warm-up steps,
then the median over timed optimiser steps of a full forward + backward + step on
synthetic-collection shapes through the method's own view recipe.

    python benchmarks/bench_pretrain.py                      # conclu, pointnet + dgcnn
    python benchmarks/bench_pretrain.py --methods conclu parae --batch-size 32 --steps 5
    python benchmarks/bench_pretrain.py --device cuda     # + peak GPU memory; view recipe on CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def one(method: str, backbone: str, batch: int, points: int, steps: int, warmup: int,
        device: str = "cpu") -> dict:
    import resource

    import numpy as np
    import torch

    from pointssl.backbones import build_backbone
    from pointssl.data.synthetic import load_synthetic
    from pointssl.engine.trainer import build_optimizer
    from pointssl.methods import build_method

    torch.manual_seed(0)
    data = load_synthetic("train", num_points=max(points, 1024))
    m, cfg = build_method(method, build_backbone(backbone), {"num_points": points})
    dev = torch.device(device)
    m = m.to(dev)
    cuda = dev.type == "cuda"
    opt = build_optimizer(m, cfg)
    rng = np.random.default_rng(0)
    times = []
    for i in range(warmup + steps):
        idx = rng.choice(len(data), batch, replace=False)
        t = time.perf_counter()
        views = [m.make_views(data[j], rng) for j in idx]
        b = {k: torch.from_numpy(np.stack([v[k] for v in views])).to(dev) for k in views[0]}
        loss = m(b)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:  # kernels are asynchronous: time to their completion
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    gpu_mib = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if cuda else None
    return {"method": method, "backbone": backbone, "batch": batch, "points": points,
            "device": str(dev), "threads": torch.get_num_threads(), "step_s": round(med, 4),
            "peak_gpu_mib": gpu_mib,
            "shapes_per_s": round(batch / med, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", default=["conclu"])
    ap.add_argument("--backbones", nargs="+", default=["pointnet", "dgcnn"])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(one(*a.child, a.batch_size, a.points, a.steps, a.warmup, a.device)))
        return
    rows = []
    for meth in a.methods:
        for bb in a.backbones:
            cmd = [sys.executable, __file__, "--child", meth, bb, "--batch-size",
                   str(a.batch_size), "--points", str(a.points), "--steps", str(a.steps),
                   "--warmup", str(a.warmup), "--device", a.device]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| method | backbone | device | batch x points | threads | step (median) | shapes/s "
          "| peak RSS | peak GPU memory |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        gpu = "-" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']} MiB"
        print(f"| {r['method']} | {r['backbone']} | {r['device']} | {r['batch']} x {r['points']} "
              f"| {r['threads']} | {r['step_s']} s | {r['shapes_per_s']} | {r['peak_rss_mib']} MiB "
              f"| {gpu} |")


if __name__ == "__main__":
    main()
