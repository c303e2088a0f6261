"""DGCNN: plain vs fused EdgeConv, side by side in one run, against a plain MLP trunk.

    OMP_NUM_THREADS=2 python benchmarks/bench_dgcnn.py --root /work/shared/data/modelnet40_1024
    python benchmarks/bench_dgcnn.py --root ... --before HEAD   # + the committed DGCNN

Every (variant, task) runs in a fresh process, so its peak RSS is its own, on the same
inputs (same seeds): ``train`` = a ConClu step (two views, forward + backward + AdamW) at
``--batch`` x ``--points``; ``extract`` = the linear-SVM protocol's feature extraction
(``extract_features``: eval mode, inference mode) over the first ``--extract-shapes`` test
shapes, extrapolated to ModelNet40's 9,843 + 2,468. Variants: ``plain`` / ``fused`` (the
``edge_impl`` option), ``before`` (``--before REV``: the package as committed at REV, from
``git archive``), and ``trunk``: a plain PyTorch 3-64-64-64-128-1024 MLP (Linear + BN +
ReLU, max-pool) in the same ConClu step, the issue's yardstick.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODELNET40_SHAPES = 9843 + 2468


def _rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _data(root, split: str, points: int):
    if root:
        from pointssl.data.datasets import load_dataset

        return load_dataset("modelnet40", root, split), "modelnet40"
    from pointssl.data.synthetic import load_synthetic

    return load_synthetic(split, num_points=max(points, 1024)), "synthetic"


def _trunk():
    import torch
    from torch import nn

    from pointssl.backbones.base import Backbone, BackboneOutput

    class Trunk(Backbone):
        """Plain PyTorch 3-64-64-64-128-1024 per-point MLP, max-pooled."""

        name = "trunk"

        def __init__(self, dims=(3, 64, 64, 64, 128, 1024)):
            super().__init__()
            layers = []
            for a, b in zip(dims[:-1], dims[1:]):
                layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
            self.mlp = nn.Sequential(*layers)
            self.global_dim, self.point_dim, self.in_dim = dims[-1], dims[-1], 3

        def forward_dense(self, x):
            b, n, _ = x.shape
            h = self.mlp(x.reshape(b * n, -1)).view(b, n, -1)
            return BackboneOutput(global_feat=h.max(dim=1).values, point_feat=h)

    torch.manual_seed(0)
    return Trunk()


def _backbone(variant: str):
    import torch

    from pointssl.backbones import build_backbone

    if variant == "trunk":
        return _trunk()
    torch.manual_seed(0)
    return build_backbone("dgcnn", **({} if variant == "before" else {"edge_impl": variant}))


def train(variant: str, a) -> dict:
    import numpy as np
    import torch

    from pointssl.engine.optim import build_optimizer
    from pointssl.methods import build_method

    data, source = _data(a.root, "train", a.points)
    m, cfg = build_method("conclu", _backbone(variant), {"num_points": a.points})
    opt = build_optimizer(m, cfg)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(a.warmup + a.steps):
        views = [m.make_views(data[int(j)], rng) for j in rng.choice(len(data), a.batch, False)]
        batches.append({k: torch.from_numpy(np.stack([v[k] for v in views])) for k in views[0]})
    rss0, times, cpu = _rss_mib(), [], []
    for i, b in enumerate(batches):
        t, c = time.perf_counter(), time.process_time()
        loss = m(b)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    step = statistics.median(times)
    out = {"variant": variant, "task": "train", "data": source, "step_s": round(step, 3),
           "steps_s": [round(t, 3) for t in times], "cpu_s": round(statistics.median(cpu), 3),
           "shapes_per_s": round(a.batch / step, 2),
           "rss_before_mib": round(rss0), "peak_rss_mib": round(_rss_mib())}
    if a.profile and variant != "trunk":
        from torch.profiler import profile

        with profile() as prof:
            loss = m(batches[0])["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20),
              file=sys.stderr)
    return out


def extract(variant: str, a) -> dict:
    from pointssl.evaluate.features import extract_features

    data, source = _data(a.root, "test", a.points)
    bb = _backbone(variant)
    extract_features(bb, data.subset(range(a.extract_batch)), batch_size=a.extract_batch)  # warm
    sub = data.subset(range(min(a.extract_shapes, len(data))))
    t, c = time.perf_counter(), time.process_time()
    x, _ = extract_features(bb, sub, batch_size=a.extract_batch)
    dt, cpu = time.perf_counter() - t, time.process_time() - c
    rate = len(x) / dt
    return {"variant": variant, "task": "extract", "data": source, "shapes": len(x),
            "batch": a.extract_batch, "seconds": round(dt, 2), "cpu_s": round(cpu, 2),
            "shapes_per_s": round(rate, 2),
            "modelnet40_extract_min": round(MODELNET40_SHAPES / rate / 60, 2),
            "peak_rss_mib": round(_rss_mib())}


def _child(variant: str, task: str, a, pythonpath: str | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", variant, task,
           "--batch", str(a.batch), "--points", str(a.points), "--steps", str(a.steps),
           "--warmup", str(a.warmup), "--threads", str(a.threads),
           "--extract-shapes", str(a.extract_shapes), "--extract-batch", str(a.extract_batch)]
    if a.root:
        cmd += ["--root", a.root]
    if a.profile:
        cmd.append("--profile")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"{variant}/{task} failed:\n{res.stderr[-3000:]}")
    if a.profile:
        print(res.stderr, file=sys.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _archive(repo: str, rev: str, into: str) -> str:
    """The package as committed at ``rev`` (read-only git), unpacked under ``into``."""
    tar = subprocess.run(["git", "-C", repo, "archive", rev, "pointssl"], capture_output=True,
                         check=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=tar, check=True)
    return into


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", help="ModelNet40 h5 folder (default: synthetic shapes)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--extract-shapes", type=int, default=256)
    ap.add_argument("--extract-batch", type=int, default=16, help="the eval CLI's default")
    ap.add_argument("--variants", nargs="+", default=["plain", "fused", "trunk"])
    ap.add_argument("--tasks", nargs="+", default=["train", "extract"])
    ap.add_argument("--before", metavar="REV", help="also run DGCNN as committed at REV")
    ap.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    help="the git repository --before reads (default: this file's)")
    ap.add_argument("--profile", action="store_true", help="torch.profiler of one step")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        import torch

        torch.set_num_threads(a.threads)
        print(json.dumps({"train": train, "extract": extract}[a.child[1]](a.child[0], a)))
        return
    variants = (["before"] if a.before else []) + [v for v in a.variants if v != "before"]
    with tempfile.TemporaryDirectory() as tmp:
        old = _archive(a.repo, a.before, tmp) if a.before else None
        rows = [_child(v, t, a, old if v == "before" else None)
                for t in a.tasks for v in variants if not (t == "extract" and v == "trunk")]
    for r in rows:
        print(json.dumps(r), file=sys.stderr)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"# {a.batch} x {a.points} points, {a.threads} threads, data: {rows[0]['data']}, "
          f"load average {' '.join(load)}" + (f", before = {a.before}" if a.before else ""))
    tr = {r["variant"]: r for r in rows if r["task"] == "train"}
    if tr:
        trunk = tr.get("trunk", {}).get("step_s")
        trunk_cpu = tr.get("trunk", {}).get("cpu_s")
        print("\n| variant | ConClu step (median) | shapes/s | x trunk steps | CPU s / step "
              "| x trunk (CPU) | peak RSS | RSS added by steps |\n" + "|---" * 8 + "|")
        for v, r in tr.items():
            x = f"{r['step_s'] / trunk:.1f}" if trunk else "-"
            xc = f"{r['cpu_s'] / trunk_cpu:.1f}" if trunk_cpu else "-"
            print(f"| {v} | {r['step_s']} s | {r['shapes_per_s']} | {x} | {r['cpu_s']} | {xc} "
                  f"| {r['peak_rss_mib']} MiB | {r['peak_rss_mib'] - r['rss_before_mib']} MiB |")
    ex = [r for r in rows if r["task"] == "extract"]
    if ex:
        print(f"\n| variant | feature extraction (batch {a.extract_batch}) | CPU s | shapes/s "
              "| ModelNet40 extraction (12,311 shapes) | peak RSS |\n|---|---|---|---|---|---|")
        for r in ex:
            print(f"| {r['variant']} | {r['shapes']} shapes in {r['seconds']} s | {r['cpu_s']} "
                  f"| {r['shapes_per_s']} | {r['modelnet40_extract_min']} min "
                  f"| {r['peak_rss_mib']} MiB |")


if __name__ == "__main__":
    main()
