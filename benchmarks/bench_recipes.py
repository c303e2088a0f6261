"""Every recipe and protocol against the machine's matmul ceiling: one command, one table.

Per row (task x backbone x implementation x precision), each in a fresh subprocess: median
step time, shapes/s, matmul FLOPs per step, achieved GFLOP/s and % of a large matmul's
GFLOP/s measured in that same process with the same thread count, and peak memory.

    python benchmarks/bench_recipes.py --out bench.json                 # the full table
    python benchmarks/bench_recipes.py --quick                           # smoke: tiny, 1 step
    python benchmarks/bench_recipes.py --tasks conclu parae --backbones pointnet \\
        --impls ref new --ref-rev 9495a9c                                # before / after
    python benchmarks/bench_recipes.py --device cuda                     # fp32 and bf16 rows
    python benchmarks/bench_recipes.py --tasks conclu --backbones pointnet --compile

Tasks: ``conclu`` / ``parae`` = one pre-training step of the method from
``pointssl.methods.METHODS`` (forward + backward + the method's optimiser step);
``finetune`` = one fine-tuning step (backbone in train mode + the PointNet/DGCNN
classification head, cross-entropy, Adam); ``partseg`` = one step of the part-segmentation
protocol's ``finetune`` mode (the backbone's paper segmentation network on 16 categories /
50 parts, as ShapeNetPart); ``svm-features`` = one batch of frozen-feature extraction for the
linear-SVM protocol (eval mode, inference mode). Inputs are seeded random (B, N, 3) tensors
of each recipe's shapes (ConClu's two views, ParAE's points): building views is not what is
measured. ``mid``, ``pointcontrast``, ``crossmodal`` = one pre-training step of those
methods on their paper backbones (octree HRNet, sparse residual U-Net, DGCNN 64-64-64-128 /
512 + ResNet-18), ``--backbones`` ignored, with their own config defaults (batch size unless
``--batch-size``, points, image size); their one batch is made by the method's own views
from the synthetic collection (MID, cross-modal: rendered on the fly) or from pairs of two
synthetic rooms (PointContrast; "shapes" = pairs), once, before the timing.

Backbones: ``pointnet`` (T-nets on, the default), ``pointnet-plain`` (``tnet=false``),
``dgcnn``. Implementations: ``new`` = the working tree; ``plain`` = the working tree with
the fused PointwiseMLP paths off (``pointnet.set_fused``); ``ref`` = the backbone files
(pointnet.py, dgcnn.py) of git revision ``--ref-rev`` (default HEAD; give the commit before
the change under test, e.g. 9495a9c for issue 10's) with the same weights, everything else
from the working tree; ``rev`` = the whole ``pointssl`` package of ``--ref-rev`` (exported
with ``git archive`` and put first on the child's path): heads, losses, methods and the
allocator settings as they were too. Rows of the working tree tune the CPU allocator as
every pointssl entry point does (``utils.device.tune_cpu_allocator``).

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on one extra step (matmul-class ops:
mm, bmm, addmm, baddbmm, convolutions; elementwise work is not counted; a sparse x dense
product counts 2 x nonzeros x columns, not its dense shape). ``exec`` = the
FLOPs the implementation runs; ``model`` = the FLOPs of the ``ref`` row of the same recipe
when it ran, else of the same step on the plain path (the textbook forward + backward).
PointNet's fused max-pool skips the backward GEMMs of the pooled layers, so model GFLOP/s
(useful work per second) can exceed what the executed matmuls reach.
Ceiling: median GFLOP/s of fp32 (bf16 for bf16 rows) ``n x n @ n x n`` matmuls, n = 4096
(2048 with ``--quick``; 8192 on CUDA), one before each timed step and one after the last, in
the same process (the same load as the steps on a shared machine). Peak memory:
``ru_maxrss`` of the process after the warm-up steps (CPU; before the ceiling's buffers
exist), ``torch.cuda.max_memory_allocated`` over the warm-up steps (CUDA).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from _child import add_child_args, run_child

# Pre-training steps of the three methods that bring their own network, with their paper
# backbone (README's commands) and their own config defaults (batch, points, image size).
METHOD_TASKS = {"mid": "octree_hrnet", "pointcontrast": "sparse_unet", "crossmodal": "dgcnn-cm"}
TASKS = ("conclu", "parae", "finetune", "partseg", "svm-features", *METHOD_TASKS)
BACKBONES = {"pointnet": ("pointnet", {}), "pointnet-plain": ("pointnet", {"tnet": False}),
             "dgcnn": ("dgcnn", {}), "octree_hrnet": ("octree_hrnet", {}),
             "sparse_unet": ("sparse_unet", {}),
             "dgcnn-cm": ("dgcnn", {"channels": (64, 64, 64, 128), "emb_dim": 512})}
PARTS, CATEGORIES = 50, 16  # ShapeNetPart
IMPLS = ("ref", "rev", "plain", "new")
_REF_FILES = ("pointnet", "dgcnn")


# ------------------------------------------------------------------------------ child side
def _ref_backbone(bb, rev: str):
    """``bb`` rebuilt from the backbone files of git revision ``rev`` (same weights)."""
    import inspect
    import types

    from pointssl.utils import Registry

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    mods = {}
    for name in _REF_FILES:  # pointnet first: dgcnn imports its PointwiseMLP
        src = subprocess.run(["git", "show", f"{rev}:pointssl/backbones/{name}.py"], cwd=root,
                             capture_output=True, text=True, check=True).stdout
        src = src.replace("from pointssl.backbones.pointnet import", "from _ref_pointnet import")
        mod = types.ModuleType(f"_ref_{name}")
        sys.modules[mod.__name__] = mod
        # a private registry: the reference classes must not replace the registered ones
        mod.__dict__["BACKBONES"] = Registry("backbone", "pointssl.backbones")
        exec(compile(src.replace("from pointssl.backbones.base import BACKBONES,",
                                 "from pointssl.backbones.base import"),
                     f"{rev}:{name}.py", "exec"), mod.__dict__)
        mods[name] = mod
    cls = next(c for c in vars(mods[bb.name]).values()
               if isinstance(c, type) and getattr(c, "name", None) == bb.name
               and c.__module__ == f"_ref_{bb.name}")
    # options the revision does not know (added since) are left out; the weights must match
    known = inspect.signature(cls.__init__).parameters
    ref = cls(**{k: v for k, v in bb.config.items() if k in known})
    ref.load_state_dict(bb.state_dict())
    return ref


def _ref_is_worktree(rev: str) -> bool:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in _REF_FILES:
        path = f"pointssl/backbones/{name}.py"
        old = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True,
                             text=True).stdout
        with open(os.path.join(root, path)) as f:
            if f.read() != old:
                return False
    return True


def _export_rev(rev: str):
    """The ``pointssl`` package of ``rev`` in a temporary directory (removed with the
    returned object)."""
    import io
    import tarfile
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tar = subprocess.run(["git", "-C", root, "archive", rev, "pointssl"], check=True,
                         capture_output=True).stdout
    tmp = tempfile.TemporaryDirectory(prefix="pointssl-rev-")
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(tmp.name, filter="data")
    return tmp


def _view_batch(method, task: str, batch: int) -> dict:
    """One collated batch of ``method``'s own views: synthetic-collection shapes, or the
    pairs of two synthetic rooms for PointContrast (built in a temporary folder)."""
    import tempfile

    import numpy as np

    from pointssl.engine.data import ViewsDataset

    rng = np.random.default_rng(0)
    tmp = None
    if task == "pointcontrast":
        from pointssl.api import load_dataset
        from pointssl.data.pairs import build_pairs, load_pairs

        tmp = tempfile.TemporaryDirectory(prefix="bench-pairs-")
        build_pairs(load_dataset("synthetic_rooms", None, "train", rooms=2), tmp.name,
                    log=lambda *_: None, progress=False)
        data = load_pairs(tmp.name)
    else:
        from pointssl.data.synthetic import load_synthetic

        data = load_synthetic("train", num_points=max(1024, getattr(method.cfg, "num_points",
                                                                       0) or 0))
    method.bind_data(len(data))
    views = ViewsDataset(data, method.make_views, seed=0)  # the Trainer's views
    out = method.collate([views[(0, int(i))]
                          for i in rng.choice(len(data), batch, replace=len(data) < batch)])
    if tmp is not None:
        tmp.cleanup()
    return out


def _flop_counter():
    """FlopCounterMode that counts a sparse x dense product by its nonzeros (2 nnz C), not as
    the dense product its shapes describe (DGCNN's EdgeConv gathers with a sparse matrix)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    class Counter(FlopCounterMode):
        def _count_flops(self, func_packet, out, args, kwargs):
            mats = [a for a in args if isinstance(a, torch.Tensor)][-2:]
            if len(mats) < 2 or all(m.layout == torch.strided for m in mats) \
                    or func_packet not in self.flop_registry:
                return super()._count_flops(func_packet, out, args, kwargs)
            a, b = mats
            sp = a if a.layout != torch.strided else b
            nnz = sp.values().numel() if sp.layout != torch.sparse_coo else sp._nnz()
            flops = 2 * nnz * (b.shape[-1] if sp is a else a.shape[0])
            for par in set(self.mod_tracker.parents):
                self.flop_counts[par][func_packet] += flops
            return out

    return Counter(display=False)


class _Ceiling:
    """GFLOP/s of one ``n x n @ n x n`` matmul, sampled between the timed steps so that the
    ceiling sees the same machine load as the steps do."""

    def __init__(self, n: int, dtype, device, sync):
        import torch

        self.n, self.sync, self.samples = n, sync, []
        self.a = torch.randn(n, n, device=device).to(dtype)
        self.b = torch.randn(n, n, device=device).to(dtype)
        self.a @ self.b  # warm-up

    def sample(self) -> None:
        self.sync()
        t = time.perf_counter()
        self.a @ self.b
        self.sync()
        self.samples.append(2 * self.n**3 / (time.perf_counter() - t) / 1e9)


def measure(spec: dict) -> dict:
    import resource

    import torch
    import torch.nn.functional as F

    from pointssl.api import build_backbone, build_method
    from pointssl.backbones.pointnet import set_fused
    from pointssl.engine.data import to_device
    from pointssl.engine.optim import build_optimizer
    from pointssl.heads import ClassificationHead, SegmentationHead

    torch.set_num_threads(spec["threads"])
    dev = torch.device(spec["device"])
    try:  # the working tree's (pointssl entry points call it); absent from old revisions
        from pointssl.utils.device import tune_cpu_allocator
    except ImportError:
        tune_cpu_allocator = None
    if dev.type == "cpu" and tune_cpu_allocator is not None:
        tune_cpu_allocator()
    cuda = dev.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(dev)) if cuda else (lambda: None)
    bf16 = spec["precision"] == "bf16"
    task, b, n = spec["task"], spec["batch"], spec["points"]
    torch.manual_seed(0)
    name, cfg = BACKBONES[spec["backbone"]]
    bb = build_backbone(name, **cfg)
    if spec["impl"] == "ref":
        bb = _ref_backbone(bb, spec["ref_rev"])
    g = torch.Generator().manual_seed(0)
    pts = lambda: torch.randn(b, n, 3, generator=g).to(dev)  # noqa: E731

    if task in ("conclu", "parae"):
        model = build_method(task, bb, num_points=n)
        batch = ({"view_a": pts(), "view_b": pts()} if task == "conclu" else {"points": pts()})
        fwd = lambda: model(batch)["loss"]  # noqa: E731
    elif task == "finetune":
        model = torch.nn.ModuleDict({"bb": bb, "head": ClassificationHead(bb.global_dim, 40)})
        x, y = pts(), torch.randint(0, 40, (b,), generator=g).to(dev)

        def fwd():
            out = model["bb"](x)
            loss = F.cross_entropy(model["head"](out.global_feat), y)
            return loss if out.aux_loss is None else loss + out.aux_loss
    elif task == "partseg":
        model = torch.nn.ModuleDict({"bb": bb, "head": SegmentationHead.for_backbone(
            bb, PARTS, num_categories=CATEGORIES)})
        x = pts()
        y = torch.randint(0, PARTS, (b, n), generator=g).to(dev)
        cat = torch.randint(0, CATEGORIES, (b,), generator=g).to(dev)

        def fwd():
            out = model["bb"](x)
            logits = model["head"](out.point_feat, out.global_feat, cat)
            loss = F.cross_entropy(logits.reshape(-1, PARTS), y.reshape(-1))
            return loss if out.aux_loss is None else loss + out.aux_loss
    elif task in METHOD_TASKS:
        model = build_method(task, bb)
        batch = to_device(_view_batch(model, task, b), dev)
        fwd = lambda: model(batch)["loss"]  # noqa: E731
    elif task == "svm-features":
        model, x = bb, pts()
        fwd = lambda: model(x).global_feat  # noqa: E731
    else:
        raise ValueError(task)
    model.to(dev)
    if spec["impl"] == "plain":
        set_fused(model, False)
    if spec.get("compile"):  # the backbone's dense forward; the first step pays the compile
        bb.forward_dense = torch.compile(bb.forward_dense)
    train = task != "svm-features"
    model.train(train)
    if task in ("conclu", "parae", *METHOD_TASKS):
        opt = build_optimizer(model, model.cfg)
    elif train:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            if not train:
                with torch.inference_mode():
                    return fwd()
            loss = fwd()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    first = None
    for _ in range(max(1, spec["warmup"])):  # the peak memory is the warm-up steps'
        t = time.perf_counter()
        step()
        sync()
        first = time.perf_counter() - t if first is None else first
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_gpu = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else None
    ceiling = _Ceiling(spec["ceiling_n"], torch.bfloat16 if bf16 else torch.float32, dev, sync)
    times, cpu = [], []
    for _ in range(spec["steps"]):
        ceiling.sample()
        sync()
        t, c = time.perf_counter(), time.process_time()
        step()
        sync()  # CUDA kernels are asynchronous: time to their completion
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    ceiling.sample()

    def count() -> int:
        with _flop_counter() as fc:
            step()
        return fc.get_total_flops()

    exec_flops = count()
    model_flops = exec_flops
    if spec["impl"] in ("new", "rev") and spec["model_flops"]:
        set_fused(model, False)
        model_flops = count()
    ceil = statistics.median(ceiling.samples)
    step_s = statistics.median(times)
    return {**spec, "step_s": step_s, "steps_s": times, "cpu_s": statistics.median(cpu),
            "first_step_s": first,
            "shapes_per_s": b / step_s,
            "exec_gflop": exec_flops / 1e9, "model_gflop": model_flops / 1e9,
            "exec_gflops_per_s": exec_flops / 1e9 / step_s,
            "model_gflops_per_s": model_flops / 1e9 / step_s,
            "ceiling_gflops_per_s": ceil, "ceiling_samples": ceiling.samples,
            "exec_pct_ceiling": 100 * exec_flops / 1e9 / step_s / ceil,
            "model_pct_ceiling": 100 * model_flops / 1e9 / step_s / ceil,
            "peak_rss_mib": peak_rss, "peak_gpu_mib": peak_gpu,
            "torch": torch.__version__, "num_threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- parent side
def _fmt(r: dict) -> str:
    impl = r["impl"] + ("+compile" if r.get("compile") else "")
    if "error" in r:
        return (f"| {r['task']} | {r['backbone']} | {impl} | {r['precision']} | "
                f"{r['batch']} x {r['points']} | failed: {r['error']} |||||||||||")
    mem = f"{r['peak_rss_mib']:.0f}" + ("" if r["peak_gpu_mib"] is None
                                         else f" / GPU {r['peak_gpu_mib']:.0f}")
    return (f"| {r['task']} | {r['backbone']} | {impl} | {r['precision']} | "
            f"{r['batch']} x {r['points']} | {r['first_step_s']:.2f} | {r['step_s']:.3f} | "
            f"{r['cpu_s']:.2f} | "
            f"{r['shapes_per_s']:.1f} | "
            f"{r['model_gflop']:.1f} | {r['exec_gflop']:.1f} | {r['model_gflops_per_s']:.1f} "
            f"| {r['model_pct_ceiling']:.0f}% | {r['exec_gflops_per_s']:.1f} | "
            f"{r['exec_pct_ceiling']:.0f}% | {r['ceiling_gflops_per_s']:.0f} | {mem} |")


def _model_flops_from_ref(rows: list[dict]) -> None:
    """Where a recipe has a 'ref' row, its count is every row's model FLOPs (the reference
    path's; fast paths the plain switch does not cover, e.g. DGCNN's EdgeConv, would
    otherwise lower the 'plain' count)."""
    ref = {(r["task"], r["backbone"], r["precision"]): r["exec_gflop"] for r in rows
           if r["impl"] == "ref" and "error" not in r}
    for r in rows:
        key = (r["task"], r["backbone"], r["precision"])
        r["model_flops_from"] = "ref" if key in ref else "plain"
        if key in ref and "error" not in r:
            r["model_gflop"] = ref[key]
            r["model_gflops_per_s"] = ref[key] / r["step_s"]
            r["model_pct_ceiling"] = 100 * r["model_gflops_per_s"] / r["ceiling_gflops_per_s"]


HEADER = ("| task | backbone | impl | precision | batch x points | first step s "
          "| step s (median) | CPU s/step | shapes/s | model GFLOP/step | exec GFLOP/step "
          "| model GFLOP/s | model % ceiling "
          "| exec GFLOP/s | exec % ceiling | ceiling GFLOP/s (same process) "
          "| peak MiB |\n|---|---|---|---|---|" + "---:|" * 12)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    ap.add_argument("--impls", nargs="+", default=["ref", "new"], choices=IMPLS)
    ap.add_argument("--ref-rev", default="HEAD", help="git revision of the 'ref' backbones")
    ap.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"),
                    help="autocast precisions (default: fp32 on CPU, fp32 and bf16 on CUDA)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="default: 32, or the method's own for mid / pointcontrast / crossmodal")
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--ceiling-n", type=int, help="matmul size of the ceiling")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the backbone's dense forward (first step = compile)")
    ap.add_argument("--no-model-flops", action="store_true",
                    help="skip counting the plain path's FLOPs in 'new' rows (one step less)")
    ap.add_argument("--quick", action="store_true",
                    help="batch 8 x 512 points, 1 timed step, 2048 ceiling: a smoke run")
    add_child_args(ap)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(measure(json.loads(a.child))))
        return
    if a.quick:
        a.batch_size, a.points, a.steps, a.warmup = 8, 512, 1, 1
    cuda = a.device.startswith("cuda")
    precisions = a.precisions or (["fp32", "bf16"] if cuda else ["fp32"])
    ceiling_n = a.ceiling_n or (2048 if a.quick else 8192 if cuda else 4096)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    if "ref" in a.impls and _ref_is_worktree(a.ref_rev):
        print(f"# note: the backbone files of {a.ref_rev} equal the working tree's: 'ref' is "
              "not a 'before' (pass --ref-rev with the commit before the change)",
              file=sys.stderr)
    rev_tree = _export_rev(a.ref_rev) if "rev" in a.impls else None
    rows = []
    print(f"# {platform.processor() or platform.machine()}, {a.threads} threads, device "
          f"{a.device}; inputs: seeded random (B, N, 3) tensors (mid, pointcontrast, "
          "crossmodal: one batch of their own views)", file=sys.stderr)
    for task in a.tasks:
        backbones, batch, points, impls = a.backbones, a.batch_size or 32, a.points, a.impls
        if task in METHOD_TASKS:  # their own network and config; no "ref" of their files
            from pointssl.methods import method_classes

            cfg = method_classes(task)[1]()
            backbones, batch = [METHOD_TASKS[task]], a.batch_size or cfg.batch_size
            points = "pairs" if task == "pointcontrast" else getattr(cfg, "num_points", 0) or 1024
            impls = [i for i in a.impls if i in ("new", "plain", "rev")] or ["new"]
        for bb in backbones:
            for prec in precisions:
                for impl in impls:
                    spec = {"task": task, "backbone": bb, "impl": impl, "precision": prec,
                            "device": a.device, "threads": a.threads, "batch": batch,
                            "points": points, "steps": a.steps, "warmup": a.warmup,
                            "ceiling_n": ceiling_n, "ref_rev": a.ref_rev,
                            "model_flops": not a.no_model_flops, "compile": a.compile}
                    row = run_child(__file__, spec, {**env, "PYTHONPATH": rev_tree.name}
                                    if impl == "rev" else env, a.timeout)
                    rows.append(row)
                    print(_fmt(row), file=sys.stderr, flush=True)
    _model_flops_from_ref(rows)
    print(HEADER)
    for r in rows:
        print(_fmt(r))
    if a.out:
        from pointssl.utils import write_json_atomic

        write_json_atomic(a.out, {"argv": sys.argv[1:], "threads": a.threads,
                                  "device": a.device, "ceiling_n": ceiling_n, "rows": rows})


if __name__ == "__main__":
    main()
