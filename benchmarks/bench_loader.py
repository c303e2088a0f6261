"""Where the views are made: DataLoader workers vs torch threads, through the real Trainer.

Each configuration (method x backbone x workers x torch threads) runs in its own process:
``Trainer.fit`` for ``warmup + steps`` optimiser steps on a real dataset (default: ModelNet40
under ``--root``; else the synthetic collection), timed from the end of the warm-up steps
to the last step, so the workers' start-up is outside the window. The same process also
times the view recipe alone (``make_views`` + ``collate`` of one batch, main thread), so
the table shows what share of a step the views are.

    python benchmarks/bench_loader.py --root ../shared/data/modelnet40_1024
    python benchmarks/bench_loader.py --methods conclu --backbones pointnet dgcnn \\
        --workers 0 1 2 --threads 1 2 --steps 12
    python benchmarks/bench_loader.py --methods crossmodal --backbones dgcnn --data synthetic \\
        --root CACHE --set render_dir=RENDERS --batch-size 16

On a shared machine, compare rows of one run (the same load), not numbers across runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time

from _child import add_child_args, run_child


def measure(spec: dict) -> dict:
    import resource

    import numpy as np
    import torch

    from pointssl.api import build_backbone, build_method, load_dataset
    from pointssl.engine.hooks import Hook
    from pointssl.engine.trainer import Trainer
    from pointssl.methods import method_classes, split_overrides

    torch.set_num_threads(spec["threads"])
    data = load_dataset(spec["data"], spec["root"], "train")
    sets = dict(spec["set"])
    if "num_points" in {f.name for f in dataclasses.fields(method_classes(spec["method"])[1])}:
        sets.setdefault("num_points", str(spec["points"]))
    over, bb_over = split_overrides(spec["method"], spec["backbone"], sets)
    torch.manual_seed(0)
    method = build_method(spec["method"], build_backbone(spec["backbone"], **bb_over), **over)
    b = spec["batch"]

    rng = np.random.default_rng(0)
    view_s = []
    for k in range(3):  # the recipe alone: one batch's views, made in this thread
        t = time.perf_counter()
        method.collate([method.make_views(data[int(i)], rng)
                        for i in rng.choice(len(data), b, replace=False)])
        if k:
            view_s.append(time.perf_counter() - t)

    class Stamp(Hook):
        def __init__(self):
            self.t = []

        def after_step(self, trainer, out) -> None:
            self.t.append(time.perf_counter())

    stamp = Stamp()
    with tempfile.TemporaryDirectory() as out:
        c0 = time.process_time()
        Trainer(method, data, out, epochs=1, batch_size=b, num_workers=spec["workers"],
                ckpt_every_steps=None, device="cpu", progress=False, log_every=10**9,
                max_steps=spec["warmup"] + spec["steps"], hooks=[stamp]).fit()
        cpu = time.process_time() - c0
    ts = stamp.t[spec["warmup"] - 1:]
    wall = ts[-1] - ts[0]
    steps = len(ts) - 1
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {**spec, "step_s": wall / steps, "shapes_per_s": b * steps / wall,
            "step_s_each": [round(y - x, 4) for x, y in zip(ts, ts[1:])],
            "views_s": statistics.median(view_s),
            "main_cpu_s": cpu, "workers_cpu_s": child.ru_utime + child.ru_stime,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "dataset_size": len(data)}


def _fmt(r: dict) -> str:
    head = (f"| {r['method']} | {r['backbone']} | {r['workers']} | {r['threads']} | "
            f"{r['batch']} x {r['points']} |")
    if "error" in r:
        return head + f" failed: {r['error']} |||||"
    return (head + f" {r['views_s'] * 1000:.0f} | {r['step_s']:.3f} | {r['shapes_per_s']:.1f} | "
            f"{100 * r['views_s'] / r['step_s']:.0f}% | {r['peak_rss_mib']:.0f} |")


HEADER = ("| method | backbone | workers | torch threads | batch x points | views of one batch, "
          "main thread (ms) | step s (mean over the window) | shapes/s | views / step "
          "| peak MiB (main) |\n|---|---|---:|---:|---|---:|---:|---:|---:|---:|")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["conclu", "parae"])
    ap.add_argument("--backbones", nargs="+", default=["pointnet"])
    ap.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--data", default=None, help="dataset name (default: modelnet40 with "
                    "--root, else synthetic)")
    ap.add_argument("--root", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a method config field or backbone option, as pretrain's --set")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    add_child_args(ap)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(measure(json.loads(a.child))))
        return
    data = a.data or ("modelnet40" if a.root else "synthetic")
    rows = []
    for m in a.methods:
        for bb in a.backbones:
            for threads in a.threads:
                for w in a.workers:
                    spec = {"method": m, "backbone": bb, "workers": w, "threads": threads,
                            "batch": a.batch_size, "points": a.points, "steps": a.steps,
                            "warmup": a.warmup, "data": data, "root": a.root,
                            "set": dict(kv.split("=", 1) for kv in a.set)}
                    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
                           "MKL_NUM_THREADS": str(threads)}
                    row = run_child(__file__, spec, env, a.timeout)
                    rows.append(row)
                    print(_fmt(row), file=sys.stderr, flush=True)
    print(f"# {os.cpu_count()} CPUs; data {data}" + (f" ({a.root})" if a.root else ""))
    print(HEADER)
    for r in rows:
        print(_fmt(r))
    if a.out:
        from pointssl.utils import write_json_atomic

        write_json_atomic(a.out, {"argv": sys.argv[1:], "rows": rows})


if __name__ == "__main__":
    main()
