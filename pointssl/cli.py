"""pointssl command line: pretrain, eval, embed, data, viz, demo."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from pointssl.errors import PointSSLError
from pointssl.utils.io import dumps_json


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _overrides(pairs: list[str]) -> dict[str, str]:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise PointSSLError(f"--set {p}: expected key=value")
        k, v = p.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _workers(text: str):
    from pointssl.engine.data import workers_option

    try:
        return workers_option(text)
    except PointSSLError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _load(args, split: str, num_points: int | None = None):
    from pointssl import api

    root = getattr(args, "root", None)
    if args.data not in ("synthetic", "synthetic_rooms") and root is None:
        raise PointSSLError(f"--data {args.data} needs --root PATH")
    rooms = getattr(args, f"{split}_rooms", None)
    if rooms is not None and args.data != "synthetic_rooms":
        raise PointSSLError(f"--{split}-rooms is for --data synthetic_rooms, not {args.data}")
    opts = {"rooms": rooms} if rooms is not None else {}
    return api.load_dataset(args.data, root, split, num_points=num_points, seed=args.seed,
                            **opts)


def _load_pair(args):
    """(train, test); a folder with no split is divided by --holdout, else refused."""
    from pointssl.data.datasets.folder import folder_splits
    from pointssl.evaluate.splits import holdout_split

    if getattr(args, "holdout", None) is None:
        return _load(args, "train"), _load(args, "test")
    if args.data != "folder" or folder_splits(args.root):
        raise PointSSLError(f"--holdout is for a folder with no train/test split; "
                            f"{args.root} has its own split: drop --holdout")
    train, test = holdout_split(_load(args, "all"), args.holdout, seed=args.holdout_seed)
    _log(f"holdout: {len(test)} of {len(train) + len(test)} clouds held out as the test set "
         f"(fraction {args.holdout}, seed {args.holdout_seed}, stratified by class)")
    return train, test


def _pretrain_data(args):
    """Pre-training sees the training split only (or all of a folder that has no split)."""
    from pointssl.data.datasets.folder import folder_splits

    if args.holdout is not None:
        return _load_pair(args)[0]  # the same seeded hold-out as eval: its test part unseen
    if args.data == "folder" and args.root is not None and not folder_splits(args.root):
        _log(f"{args.root} has no train/test split: pre-training on all of it "
             "(pass --holdout F to keep a test part unseen)")
        return _load(args, "all")
    return _load(args, "train")


def _with_split(res: dict, train) -> dict:
    if getattr(train, "split_info", None):
        res["split"] = train.split_info
    return res


def _names(kind: str) -> list[str]:
    """Registered names of a kind: the CLI's choices and help come from the registries."""
    if kind == "backbone":
        from pointssl.backbones.base import BACKBONES as reg
    elif kind == "method":
        from pointssl.methods.base import METHODS as reg
    else:
        from pointssl.data.datasets.base import DATASETS as reg
    return reg.names()


def _add_data_args(p, required=True):
    p.add_argument("--data", required=required, default=None if required else "synthetic",
                   help=" | ".join(_names("dataset")))
    p.add_argument("--root", type=Path, help="dataset folder (cache folder for synthetic)")
    p.add_argument("--seed", type=int, default=0)


def _add_holdout_args(p):
    p.add_argument("--holdout", type=float, metavar="F",
                   help="a folder with no train/test split: hold out a seeded, stratified "
                        "fraction F of each class as the test set (recorded in the JSON)")
    p.add_argument("--holdout-seed", type=int, default=0,
                   help="the hold-out's seed; keep it equal for pretrain and eval")


# ----------------------------------------------------------------------------- pretrain
def cmd_pretrain(args) -> int:
    import torch

    from pointssl import api
    from pointssl.engine import distributed
    from pointssl.methods import split_overrides

    out = Path(args.out)
    if (out / "checkpoints" / "last.pt").exists() and not args.resume:
        raise PointSSLError(f"{out}: holds a run already; pass --resume to continue it or "
                            "choose another --out")
    over, bb_over = split_overrides(args.method, args.backbone, _overrides(args.set))
    if args.epochs is not None:
        over["epochs"] = args.epochs
    if args.batch_size is not None:
        over["batch_size"] = args.batch_size
    torch.manual_seed(args.seed)
    method = api.build_method(args.method, api.build_backbone(args.backbone, **bb_over), **over)
    cfg, backbone = method.cfg, method.backbone
    data = _pretrain_data(args)
    _log(f"pretrain {args.method}-{args.backbone} on {args.data} ({len(data)} shapes)")
    config = {
        "method": args.method, "backbone": args.backbone, "backbone_config": backbone.config,
        "data": args.data, "root": str(args.root) if args.root else None, "seed": args.seed,
        "method_config": dataclasses.asdict(cfg), "max_minutes": args.max_minutes,
        "snapshot_minutes": args.snapshot_minutes, "budget_clock": args.budget_clock,
        "precision": args.precision,
        "holdout": getattr(data, "split_info", None),
    }
    try:
        metrics = api.pretrain(method, data, out, epochs=cfg.epochs, batch_size=cfg.batch_size,
                               seed=args.seed, resume=args.resume, device=args.device,
                               num_workers=args.num_workers, ckpt_every_steps=args.ckpt_every,
                               max_minutes=args.max_minutes,
                               snapshot_minutes=tuple(args.snapshot_minutes),
                               config_to_save=config, budget_clock=args.budget_clock,
                               precision=args.precision)
        main_rank = distributed.is_main()
    finally:
        distributed.cleanup()
    if main_rank:
        _log(f"done: {out / 'backbone.pt'}")
        print(dumps_json(metrics))
    return 0


# ----------------------------------------------------------------------------- eval svm
def _backbone_from_args(args):
    from pointssl import api

    options = _backbone_options(args)
    if args.checkpoint:
        bb = api.load_backbone(args.checkpoint)
        return bb, {"checkpoint": str(args.checkpoint), **bb.meta}
    if not args.backbone:
        raise PointSSLError("give --checkpoint PATH, or --backbone NAME --random-init")
    return api.build_backbone(args.backbone, seed=args.seed, **options), {"random_init": True}


def _backbone_options(args) -> dict:
    """``--set`` backbone options of a random-init model (``tnet=false``); a checkpoint
    fixes its own architecture."""
    from pointssl.backbones import parse_backbone_overrides

    if not args.set or not (args.checkpoint or args.backbone):
        return {}
    if args.checkpoint:
        raise PointSSLError("--set changes the architecture, which --checkpoint fixes: "
                            "drop --set")
    return parse_backbone_overrides(args.backbone, _overrides(args.set))


def cmd_eval_svm(args) -> int:
    from pointssl import api

    if args.image_checkpoint:
        return _eval_svm_images(args)
    backbone, meta = _backbone_from_args(args)
    train, test = _load_pair(args)
    Cs = [float(c) for c in args.C.split(",")] if args.C else None
    kind = "random init" if meta.get("random_init") else "checkpoint"
    _log(f"linear SVM: {backbone.name} ({kind}), {len(train)} train / {len(test)} test")
    res = api.linear_svm(backbone, train, test, seed=args.seed, folds=args.folds, Cs=Cs,
                         num_points=args.num_points, batch_size=args.batch_size,
                         device=args.device,
                         baseline=bool(args.checkpoint) and not args.no_baseline)
    res.update(backbone=backbone.name, **{k: v for k, v in meta.items() if k != "random_init"},
               random_init=bool(meta.get("random_init")))
    _print_svm(_with_split(res, train), args.json)
    return 0


def _print_svm(res: dict, as_json: bool) -> None:
    if as_json:
        print(dumps_json(res))
        return
    rows = [("pre-trained" if not res["random_init"] else "random init", res)]
    if "random_init_baseline" in res:
        rows.append(("random init (same protocol)", res["random_init_baseline"]))
    print(f"{'model':<30} {'test acc':>9} {'C':>8} {'cv acc':>8}")
    for name, r in rows:
        cv = r["cv_accuracy"][r["C"]] if isinstance(r["cv_accuracy"], dict) else float("nan")
        print(f"{name:<30} {100 * r['accuracy']:>8.2f}% {r['C']:>8g} {100 * cv:>7.2f}%")


# ----------------------------------------------------------------------------- fewshot
def _renders_arg(args) -> Path:
    if not args.renders:
        raise PointSSLError("image features need the renders: --renders DIR (from "
                            "`pointssl data render` on the same --data/--root)")
    return args.renders


def _eval_svm_images(args) -> int:
    """2D recognition (cross-modal paper, Table 2): SVM on image features max-pooled over
    --views cached views per shape."""
    from pointssl.backbones.resnet import load_image_encoder
    from pointssl.evaluate.retrieval import image_svm_eval

    enc, meta = load_image_encoder(args.image_checkpoint)
    train, test = _load_pair(args)
    Cs = [float(c) for c in args.C.split(",")] if args.C else None
    _log(f"linear SVM on image features ({args.views} view(s) max-pooled): {len(train)} "
         f"train / {len(test)} test")
    res = image_svm_eval(enc, train, test, _renders_arg(args), views=args.views,
                         seed=args.seed, folds=args.folds, Cs=Cs, device=args.device,
                         baseline=not args.no_baseline)
    res.update(image_checkpoint=str(args.image_checkpoint), **meta)
    if args.json:
        print(dumps_json(_with_split(res, train)))
    else:
        print(f"2D recognition, {args.views} view(s): test acc {100 * res['accuracy']:.2f}% "
              f"(C {res['C']:g})")
        if "random_init_baseline" in res:
            print(f"random init (same protocol): "
                  f"{100 * res['random_init_baseline']['accuracy']:.2f}%")
    return 0


def cmd_eval_retrieval(args) -> int:
    from pointssl.backbones.resnet import load_image_encoder
    from pointssl.evaluate.retrieval import DEFAULT_KS, retrieval_eval

    backbone = meta = None
    if args.checkpoint or args.backbone:
        backbone, meta = _backbone_from_args(args)
    enc = None
    if args.image_checkpoint:
        enc, _ = load_image_encoder(args.image_checkpoint)
    train, test = _load_pair(args)
    ks = [int(k) for k in args.k.split(",")] if args.k else DEFAULT_KS
    res = retrieval_eval(train, test, backbone=backbone, image_encoder=enc,
                         render_dir=_renders_arg(args) if enc is not None else None,
                         views=args.views, ks=ks, seed=args.seed, num_points=args.num_points,
                         batch_size=args.batch_size, device=args.device)
    if meta:
        res["checkpoint_meta"] = meta
    if args.json:
        print(dumps_json(_with_split(res, train)))
        return 0
    for what in ("points", "images"):
        if what in res:
            r = res[what]
            cells = "  ".join(f"top{k} {100 * v:.1f}%" for k, v in r["top_k"].items())
            print(f"{what:<7} {cells}")
    return 0


def cmd_eval_pretext(args) -> int:
    from pointssl.evaluate.retrieval import pretext_eval
    from pointssl.methods import load_method

    method = load_method(args.checkpoint)
    if method.name != "crossmodal":
        raise PointSSLError(f"{args.checkpoint}: a {method.name} run, not crossmodal")
    test = _load(args, "test")
    res = pretext_eval(method, test, _renders_arg(args), seed=args.seed,
                       num_points=args.num_points, device=args.device)
    print(dumps_json(res))
    return 0


def cmd_eval_fewshot(args) -> int:
    from pointssl import api

    backbone, meta = _backbone_from_args(args)
    train, test = _load_pair(args)
    settings = [(w, s) for w in args.way for s in args.shot]
    kind = "random init" if meta.get("random_init") else "checkpoint"
    _log(f"few-shot: {backbone.name} ({kind}), {len(train)} train / {len(test)} test, "
         + " ".join(f"{w}w{s}s" for w, s in settings) + f", {args.episodes} episodes")
    res = api.fewshot(backbone, train, test, settings=settings, seed=args.seed,
                      episodes=args.episodes, query=args.query, num_points=args.num_points,
                      batch_size=args.batch_size, device=args.device,
                      baseline=bool(args.checkpoint) and not args.no_baseline)
    if len(settings) == 1:  # one setting: {mean, std, per_episode, random_init_baseline, ...}
        res = {**res.pop("settings")[0], **res}
    res.update(backbone=backbone.name, **{k: v for k, v in meta.items() if k != "random_init"},
               random_init=bool(meta.get("random_init")))
    _with_split(res, train)
    if args.json:
        print(dumps_json(res))
        return 0
    print(f"{'setting':<9} {'model':<30} {'accuracy':>16}")
    for r in res.get("settings", [res]):
        rows = [("random init" if res["random_init"] else "pre-trained", r)]
        if "random_init_baseline" in r:
            rows.append(("random init (same episodes)", r["random_init_baseline"]))
        for name, x in rows:
            print(f"{str(r['way']) + 'w' + str(r['shot']) + 's':<9} {name:<30} "
                  f"{100 * x['mean']:>7.2f} ± {100 * x['std']:.2f}%")
    return 0


# ----------------------------------------------------------------------------- registration
def cmd_eval_registration(args) -> int:
    from pointssl.evaluate.registration import registration_eval

    backbone, meta = _backbone_from_args(args)
    test = _load(args, "test")
    _log(f"registration: {backbone.name}, {min(args.num_shapes, len(test))} test shapes")
    res = registration_eval(backbone, test, num_shapes=args.num_shapes, seed=args.seed,
                            num_points=args.num_points, batch_size=args.batch_size,
                            ransac_iters=args.ransac_iters, device=args.device,
                            out_dir=args.out)
    res.update(backbone=backbone.name, **{k: v for k, v in meta.items() if k != "random_init"},
               random_init=bool(meta.get("random_init")))
    if args.json:
        print(dumps_json(res))
        return 0
    print(f"{'method':<26} {'<= 0.05':>8} {'<= 0.1':>8} {'median':>8}")
    for m in ("features", "icp", "ground_truth"):
        print(f"{m:<26} {100 * res['success_at_0.05'][m]:>7.1f}% "
              f"{100 * res['success_at_0.1'][m]:>7.1f}% {res['median_hausdorff'][m]:>8.4f}")
    return 0


# ----------------------------------------------------------------------------- finetune
def cmd_eval_finetune(args) -> int:
    from pointssl.evaluate.finetune import run_finetune

    train, test = _load_pair(args)
    if args.task == "semseg":  # scene segmentation (PointContrast): pointssl.evaluate.semseg
        from pointssl.evaluate.semseg import run_semseg

        kw = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "num_points")
              if getattr(args, k)}
        res = run_semseg(args.mode, args.fraction, checkpoint=args.checkpoint,
                         backbone_name=args.backbone, backbone_config=_backbone_options(args),
                         random_init=args.random_init, train=train, test=test, seed=args.seed,
                         augment=not args.no_augment, device=args.device, log=_log, **kw)
        print(dumps_json(res) if args.json else _table(res))
        return 0
    kw = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "num_points", "min_steps")
          if getattr(args, k)}
    res = run_finetune(args.task, args.mode, args.fraction, checkpoint=args.checkpoint,
                       backbone_name=args.backbone, backbone_config=_backbone_options(args),
                       random_init=args.random_init, train=train, test=test, seed=args.seed,
                       augment=not args.no_augment, fix_features=args.fix_features,
                       device=args.device, log=_log, **kw)
    _with_split(res, train)
    print(dumps_json(res) if args.json else _table(res))
    return 0


def _table(res: dict) -> str:
    return "\n".join(f"{k:<20} {v}" for k, v in res.items() if not isinstance(v, dict))


# ----------------------------------------------------------------------------- embed
def cmd_embed(args) -> int:
    import numpy as np

    from pointssl import api
    from pointssl.data.datasets.folder import folder_splits
    from pointssl.evaluate.features import extract_features
    from pointssl.utils import atomic_savez

    backbone = api.load_backbone(args.checkpoint)
    arrays = {}
    splits = args.splits.split(",")
    if args.data == "folder" and not folder_splits(args.root):
        splits = ["all"]  # a folder without a train/test split is one set
    for split in splits:
        data = _load(args, split)
        x, y = extract_features(backbone, data, num_points=args.num_points,
                                batch_size=args.batch_size, device=args.device, seed=args.seed)
        arrays[f"{split}_features"] = x
        arrays[f"{split}_labels"] = y
        arrays[f"{split}_sources"] = np.array(data.sources)
        _log(f"{split}: {x.shape[0]} x {x.shape[1]} features")
    arrays["class_names"] = np.array(data.class_names)
    atomic_savez(args.out, **arrays)
    _log(f"wrote {args.out}")
    return 0


# ----------------------------------------------------------------------------- data check
def cmd_data_check(args) -> int:
    from pointssl.data.formats import check_root

    n, errors = check_root(args.root)
    for e in errors:
        print(str(e))
    print(f"checked {n} files: {len(errors)} problem(s)", file=sys.stderr)
    return 1 if errors else 0


def cmd_data_render(args) -> int:
    from pointssl.data.render import RenderConfig, render_dataset

    cfg = RenderConfig(views=args.views, size=args.size, engine=args.engine)
    total = {"rendered": 0, "cached": 0, "failed": 0}
    for split in args.splits.split(","):
        data = _load(args, split)
        _log(f"render {args.data}/{split}: {len(data)} shapes x {cfg.views} views at "
             f"{cfg.size}x{cfg.size} -> {args.out}")
        res = render_dataset(data, args.out, cfg, seed=args.seed, progress=not args.no_progress)
        for k in total:
            total[k] += res[k]
    print(dumps_json(total))
    return 1 if total["failed"] else 0


# ----------------------------------------------------------------------------- data pairs
_PAIR_SCENES = {"synthetic": "synthetic_rooms", "scannet": None, "s3dis": "s3dis"}


def cmd_data_pairs(args) -> int:
    """Partial-view pairs with correspondences (PointContrast Sec. 3.6) into --out."""
    from pointssl import api
    from pointssl.data.pairs import PairConfig, build_pairs

    name = _PAIR_SCENES[args.scene]
    if name is None:  # ScanNet: the public .ply layout, else a folder of .bin scenes
        root = Path(args.root) if args.root else None
        ply = root is not None and ((root / "scans").is_dir()
                                    or any(root.glob("*/*_vh_clean_2.ply")))
        name = "scannet_ply" if ply else "scannet"
    if name != "synthetic_rooms" and args.root is None:
        raise PointSSLError(f"--scene {args.scene} needs --root PATH")
    opts = {"rooms": args.rooms} if name == "synthetic_rooms" and args.rooms else {}
    data = api.load_dataset(name, args.root, args.split, seed=args.seed, **opts)
    cfg = PairConfig(frames=args.frames, voxel_size=args.voxel_size,
                     min_overlap=args.min_overlap, max_pairs=args.max_pairs)
    _log(f"pairs: {len(data)} {args.scene} scenes ({args.split}) -> {args.out}")
    res = build_pairs(data, args.out, cfg, seed=args.seed, split=args.split, log=_log,
                      progress=not args.no_progress)
    if args.json:
        print(dumps_json(res))
    else:
        print(f"scenes {res['scenes']} (skipped {len(res['bad_scenes'])}), frames "
              f"{res['frames']}, pairs {res['pairs']}, frames/s {res['frames_per_second']}")
        print("overlap " + "  ".join(f"{k}: {v}" for k, v in res["overlap"]["histogram"].items())
              + f"  (mean {res['overlap']['mean']})")
    return 0


# ----------------------------------------------------------------------------- viz
def cmd_viz_gmm(args) -> int:
    from pointssl.viz.gmm import viz_gmm_from_checkpoint

    data = _load(args, "test" if args.data != "folder" else "all")
    i = min(args.index, len(data) - 1)
    paths = viz_gmm_from_checkpoint(args.checkpoint, data.points[i][:, :3], args.out)
    for p in paths:
        print(p)
    return 0


# ----------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from pointssl.demo import run_demo

    run_demo(out=Path(args.out), minutes=args.minutes, seed=args.seed)
    return 0


def _add_model_args(p):
    p.add_argument("--checkpoint", type=Path, help="an exported backbone.pt")
    p.add_argument("--backbone", help="with --random-init (or --mode scratch): "
                   + " | ".join(_names("backbone")))
    p.add_argument("--random-init", action="store_true",
                   help="a seeded random-init --backbone: the protocol's baseline twin")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a backbone option of the random-init model, e.g. --set tnet=false")


def _add_output_args(p):
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    from pointssl.evaluate.finetune import FIX_FEATURES, MODES, TASKS

    ap = argparse.ArgumentParser(prog="pointssl", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("pretrain", help="self-supervised pre-training")
    p.add_argument("--method", required=True, help=" | ".join(_names("method")))
    p.add_argument("--backbone", default="pointnet", help=" | ".join(_names("backbone")))
    _add_data_args(p)
    _add_holdout_args(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--max-minutes", type=float, help="stop cleanly after this wall time")
    p.add_argument("--snapshot-minutes", type=float, nargs="*", default=[],
                   help="also export backbone_{M}min.pt when the run passes these marks")
    p.add_argument("--budget-clock", choices=["wall", "cpu"], default="wall",
                   help="what --max-minutes and --snapshot-minutes count: wall time, or the "
                        "process's CPU time (all threads)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: the forward under bf16 autocast (for GPUs; the losses that "
                        "need it stay fp32)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--ckpt-every", type=int, default=200, help="checkpoint every N steps")
    p.add_argument("--num-workers", type=_workers, default="auto",
                   help="DataLoader workers per process; auto: none on the CPU (the views "
                        "cost ~1-2%% of a step there), up to 4 on a GPU")
    p.add_argument("--device", default=None)
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a method config field or a backbone option, e.g. --set "
                        "num_points=1024 --set tnet=false")
    p.set_defaults(func=cmd_pretrain)

    pe = sub.add_parser("eval", help="evaluation protocols").add_subparsers(dest="proto",
                                                                           required=True)
    s = pe.add_parser("svm", help="linear SVM on frozen global features")
    _add_model_args(s)
    _add_data_args(s)
    _add_holdout_args(s)
    s.add_argument("--num-points", type=int)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--folds", type=int, default=5)
    s.add_argument("--C", help="comma-separated grid of C values for cross-validation")
    s.add_argument("--no-baseline", action="store_true",
                   help="skip the random-init run of the same protocol")
    s.add_argument("--image-checkpoint", type=Path,
                   help="an exported image_encoder.pt: 2D recognition on its features")
    s.add_argument("--views", type=int, default=1, help="views max-pooled per shape")
    s.add_argument("--renders", type=Path, help="`pointssl data render` output folder")
    _add_output_args(s)
    s.set_defaults(func=cmd_eval_svm)

    rt = pe.add_parser("retrieval", help="top-K shape retrieval (test queries, train "
                       "gallery, Euclidean) on point and/or image features")
    _add_model_args(rt)
    _add_data_args(rt)
    _add_holdout_args(rt)
    rt.add_argument("--image-checkpoint", type=Path, help="an exported image_encoder.pt")
    rt.add_argument("--views", type=int, default=1, help="views max-pooled per shape")
    rt.add_argument("--renders", type=Path, help="`pointssl data render` output folder")
    rt.add_argument("--k", help="comma-separated K values (default 1,5,10,20,50)")
    rt.add_argument("--num-points", type=int)
    rt.add_argument("--batch-size", type=int, default=16)
    _add_output_args(rt)
    rt.set_defaults(func=cmd_eval_retrieval)

    pt = pe.add_parser("pretext", help="cross-modal pretext: F_f accuracy on test 2D-3D "
                       "pairs, 2D-2D feature distances")
    pt.add_argument("--checkpoint", required=True, type=Path, help="RUN/checkpoints/last.pt")
    _add_data_args(pt)
    pt.add_argument("--renders", type=Path, help="`pointssl data render` output folder")
    pt.add_argument("--num-points", type=int)
    pt.add_argument("--device", default=None)
    pt.set_defaults(func=cmd_eval_pretext)

    q = pe.add_parser("fewshot", help="N-way K-shot linear SVM on frozen global features")
    _add_model_args(q)
    _add_data_args(q)
    _add_holdout_args(q)
    q.add_argument("--way", type=int, nargs="+", default=[5, 10],
                   help="classes per episode (each --way runs with each --shot)")
    q.add_argument("--shot", type=int, nargs="+", default=[10, 20],
                   help="support shapes per class, from the train split")
    q.add_argument("--query", type=int, default=20,
                   help="query shapes per class, from the test split (Sharma & Kaul: 20)")
    q.add_argument("--episodes", type=int, default=10, help="seeded episodes per setting")
    q.add_argument("--num-points", type=int)
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--no-baseline", action="store_true",
                   help="skip the random-init run of the same episodes")
    _add_output_args(q)
    q.set_defaults(func=cmd_eval_fewshot)

    r = pe.add_parser("registration", help="rigid registration from per-point features "
                      "(mutual NN -> RANSAC -> ICP; Hausdorff success curve)")
    _add_model_args(r)
    _add_data_args(r)
    r.add_argument("--num-shapes", type=int, default=200)
    r.add_argument("--num-points", type=int,
                   help="draw each cloud's points independently (default: the same points)")
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--ransac-iters", type=int, default=2000)
    r.add_argument("--out", type=Path, help="write registration_curve.csv / .png here")
    _add_output_args(r)
    r.set_defaults(func=cmd_eval_registration)

    f = pe.add_parser("finetune", help="supervised fine-tuning with a label fraction")
    f.add_argument("--task", choices=[*TASKS, "semseg"], required=True)
    f.add_argument("--mode", choices=list(MODES), required=True)
    f.add_argument("--fraction", type=float, default=1.0, help="labelled fraction (0-1]")
    _add_model_args(f)
    _add_data_args(f)
    _add_holdout_args(f)
    f.add_argument("--epochs", type=int)
    f.add_argument("--batch-size", type=int)
    f.add_argument("--lr", type=float)
    f.add_argument("--num-points", type=int)
    f.add_argument("--min-steps", type=int, help="add epochs until this many optimiser steps")
    f.add_argument("--train-rooms", type=int, metavar="N",
                   help="--data synthetic_rooms: N training rooms (default 32)")
    f.add_argument("--test-rooms", type=int, metavar="N",
                   help="--data synthetic_rooms: N held-out test rooms (default 8)")
    f.add_argument("--no-augment", action="store_true",
                   help="finetune/scratch without the scale/shift/jitter augmentation")
    f.add_argument("--fix-features", choices=FIX_FEATURES, default="whiten",
                   help="cls/partseg --mode fix: the frozen global feature standardised and "
                        "then shrunk-whitened (default), or only standardised")
    _add_output_args(f)
    f.set_defaults(func=cmd_eval_finetune)

    e = sub.add_parser("embed", help="write global features of a dataset to .npz")
    e.add_argument("--checkpoint", required=True, type=Path)
    _add_data_args(e)
    e.add_argument("--splits", default="train,test")
    e.add_argument("--num-points", type=int)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--device", default=None)
    e.add_argument("--out", required=True, type=Path)
    e.set_defaults(func=cmd_embed)

    d = sub.add_parser("data", help="dataset tools").add_subparsers(dest="dcmd", required=True)
    c = d.add_parser("check", help="list every unreadable or invalid file under ROOT")
    c.add_argument("root", type=Path)
    c.set_defaults(func=cmd_data_check)
    rd = d.add_parser("render", help="multi-view grayscale renders per shape (cross-modal "
                      "method): meshes ray-cast or rasterised, point-only data as splats")
    _add_data_args(rd)
    rd.add_argument("--splits", default="train,test", help="comma-separated splits to render")
    rd.add_argument("--views", type=int, default=12, help="V cameras per shape (paper: 180)")
    rd.add_argument("--size", type=int, default=224, help="image side in pixels")
    rd.add_argument("--engine", choices=["auto", "raster", "embree"], default="auto")
    rd.add_argument("--out", required=True, type=Path)
    rd.add_argument("--no-progress", action="store_true")
    rd.set_defaults(func=cmd_data_render)

    pp = d.add_parser("pairs", help="partial-view pairs with correspondences (PointContrast)")
    pp.add_argument("--scene", choices=sorted(_PAIR_SCENES), required=True)
    pp.add_argument("--root", type=Path, help="scene folder (cache folder for synthetic)")
    pp.add_argument("--out", type=Path, required=True)
    pp.add_argument("--split", default="train")
    pp.add_argument("--seed", type=int, default=0)
    pp.add_argument("--rooms", type=int, help="synthetic: how many rooms")
    pp.add_argument("--frames", type=int, default=36, help="frames along each trajectory")
    pp.add_argument("--voxel-size", type=float, default=0.025, help="overlap radius (m)")
    pp.add_argument("--min-overlap", type=float, default=0.3)
    pp.add_argument("--max-pairs", type=int, default=100, help="per scene")
    pp.add_argument("--no-progress", action="store_true")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_data_pairs)

    v = sub.add_parser("viz", help="figures").add_subparsers(dest="vcmd", required=True)
    g = v.add_parser("gmm", help="ParAE mixture ellipsoids and feature distances")
    g.add_argument("--checkpoint", required=True, type=Path)
    _add_data_args(g)
    g.add_argument("--index", type=int, default=0)
    g.add_argument("--out", required=True, type=Path)
    g.set_defaults(func=cmd_viz_gmm)

    dm = sub.add_parser("demo", help="ConClu on the synthetic shapes vs random init")
    dm.add_argument("--out", default="runs/demo")
    dm.add_argument("--minutes", type=float, default=4.0,
                    help="wall-time cap on pre-training (the step count is fixed)")
    dm.add_argument("--seed", type=int, default=0)
    dm.set_defaults(func=cmd_demo)
    return ap


def main(argv=None) -> int:
    import logging

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if os.environ.get("POINTSSL_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["POINTSSL_THREADS"]))
    try:
        rc = args.func(args)
        # a torchrun rank ends here, past torch's teardown (engine.distributed.finish); a
        # command that never imported it ran no process group
        dist = sys.modules.get("pointssl.engine.distributed")
        return rc if dist is None else dist.finish(rc)
    except PointSSLError as e:
        print(f"pointssl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pointssl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
