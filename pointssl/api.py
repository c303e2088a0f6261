"""The Python API. Every CLI verb is a thin layer over one of these functions.

    import pointssl
    bb = pointssl.load_backbone("runs/conclu/backbone.pt")
    out = pointssl.embed(bb, [cloud_a, cloud_b])      # numpy (N_i, 3) clouds of any sizes
    out["global"].shape, [p.shape for p in out["points"]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pointssl.errors import PointSSLError

__all__ = ["load_backbone", "build_backbone", "embed", "build_method", "load_method",
           "as_dataset", "load_dataset", "pretrain", "linear_svm", "fewshot", "finetune"]


def build_backbone(name: str, seed: int | None = None, **config):
    """A registered backbone (``pointssl.backbones.BACKBONES.names()``); ``seed`` makes its
    random initialisation reproducible (the random-init twin every protocol reports)."""
    from pointssl.backbones import build_backbone as build
    from pointssl.backbones import random_backbone

    return build(name, **config) if seed is None else random_backbone(name, seed, **config)


def load_backbone(path):
    """The backbone exported to ``path`` (a run's ``backbone.pt``); what the export says about
    its training (method, epochs, ...) is in ``backbone.meta``."""
    from pointssl.backbones import load_backbone as load

    bb, meta = load(path)
    bb.meta = meta
    return bb


def _backbone(backbone):
    return load_backbone(backbone) if isinstance(backbone, (str, bytes)) or \
        hasattr(backbone, "__fspath__") else backbone


def embed(backbone, clouds: Sequence[np.ndarray], *, batch_size: int = 32, device=None) -> dict:
    """Features of a frozen backbone (eval mode) for numpy clouds ``(N_i, 3+)`` of any sizes:
    ``{"global": (B, C), "points": [(N_i, Cp) per cloud]}``. ``backbone``: a module or the
    path of an exported ``backbone.pt``."""
    from pointssl.evaluate.features import embed as _embed

    return _embed(_backbone(backbone), list(clouds), batch_size=batch_size, device=device)


def build_method(name: str, backbone="pointnet", **overrides):
    """A registered pre-training method around ``backbone`` (a module or a backbone name);
    ``overrides`` set fields of the method's config (the papers' defaults otherwise)."""
    from pointssl.methods import build_method as build

    if isinstance(backbone, str):
        backbone = build_backbone(backbone)
    return build(name, backbone, overrides)[0]


def load_method(path):
    """Rebuild any method, with its weights, from a training checkpoint
    (``checkpoints/last.pt``)."""
    from pointssl.methods import load_method as load

    return load(path)


def as_dataset(data, labels=None):
    """A dataset from a dataset, or from a list of numpy clouds ``(N_i, 3)`` (unlabelled
    unless ``labels`` is given)."""
    if hasattr(data, "__getitem__") and hasattr(data, "points"):
        return data
    from pointssl.data.datasets import CloudSet

    clouds = [np.ascontiguousarray(np.asarray(c, dtype=np.float32)[:, :3]) for c in data]
    if not clouds:
        raise PointSSLError("no clouds given")
    lab = np.full(len(clouds), -1) if labels is None else np.asarray(labels)
    return CloudSet(points=clouds, labels=lab)


def load_dataset(name: str, root=None, split: str = "train", **options):
    """A registered dataset (``pointssl.data.datasets.DATASETS.names()``) from ``root``."""
    from pointssl.data.datasets import load_dataset as load

    return load(name, root, split, **options)


def pretrain(method, data, out, *, epochs: int | None = None, batch_size: int | None = None,
             seed: int = 0, resume: bool = False, device=None, **trainer_options) -> dict:
    """Pre-train ``method`` (from :func:`build_method`) on ``data`` (a dataset or a list of
    numpy clouds) into the run folder ``out``; returns the run's metrics. ``resume=True``
    continues exactly where a crashed run stopped. ``trainer_options`` go to
    :class:`pointssl.engine.Trainer` (max_minutes, snapshot_minutes, num_workers, ...)."""
    from pointssl.engine.trainer import Trainer

    trainer = Trainer(method, as_dataset(data), out, epochs=epochs, batch_size=batch_size,
                      seed=seed, resume=resume, device=device, **trainer_options)
    return trainer.fit()


def linear_svm(backbone, train, test, *, baseline: bool = True, seed: int = 0, **options) -> dict:
    """The linear-SVM protocol (C by cross-validation on ``train``; ``test`` touched once).
    With ``baseline`` the same protocol also runs on a seeded random-init twin of the same
    architecture, reported under ``"random_init_baseline"``."""
    from pointssl.backbones import random_backbone
    from pointssl.evaluate.svm import svm_eval

    bb = _backbone(backbone)
    train, test = as_dataset(train), as_dataset(test)
    res = svm_eval(bb, train, test, seed=seed, **options)
    if baseline:
        base = svm_eval(random_backbone(bb.name, seed, **bb.config), train, test, seed=seed,
                        **options)
        res["random_init_baseline"] = {k: base[k] for k in ("accuracy", "C", "cv_accuracy")}
    return res


def fewshot(backbone, train, test, *, way: int | None = None, shot: int | None = None,
            settings=None, baseline: bool = True, seed: int = 0, **options) -> dict:
    """N-way K-shot linear SVM on frozen global features: seeded episodes (support from
    ``train``, 20 queries per class from ``test``), mean ± std per setting. ``settings``: a
    list of ``(way, shot)`` (default the papers' 5w10s 5w20s 10w10s 10w20s), or one
    ``way`` and ``shot``, whose numbers then sit at the top of the result. With ``baseline``
    the seeded random-init twin runs the identical episodes (``"random_init_baseline"``).
    ``options``: episodes, query, num_points, batch_size, device, C."""
    from pointssl.evaluate.fewshot import DEFAULT_SETTINGS, fewshot_eval

    if (way is None) != (shot is None) or (way is not None and settings is not None):
        raise PointSSLError("fewshot: give way and shot together, or settings")
    one = way is not None
    res = fewshot_eval(_backbone(backbone), as_dataset(train), as_dataset(test),
                       settings=((way, shot),) if one else settings or DEFAULT_SETTINGS,
                       seed=seed, baseline=baseline, **options)
    return {**res.pop("settings")[0], **res} if one else res


def finetune(backbone, train, test, *, task: str = "cls", mode: str = "finetune",
             fraction=1.0, **options) -> dict:
    """Supervised fine-tuning on a label ``fraction`` of ``train`` in one of the regimes
    ``fix`` / ``finetune`` / ``scratch`` (task ``cls`` or ``partseg``). ``backbone``: a
    module, a ``backbone.pt`` path, or a backbone name (a seeded random init: the protocol's
    random-init twin). ``options``: epochs, batch_size, lr, seed, num_points, device, ..."""
    from pointssl.backbones.base import BACKBONES
    from pointssl.evaluate import finetune as ft

    if isinstance(backbone, str) and backbone in BACKBONES:
        return ft.run_finetune(task, mode, fraction, train=train, test=test,
                               backbone_name=backbone, random_init=mode != "scratch", **options)
    if isinstance(backbone, (str, bytes)) or hasattr(backbone, "__fspath__"):
        return ft.run_finetune(task, mode, fraction, train=train, test=test,
                               checkpoint=backbone, **options)
    fn = ft.finetune_classification if task == "cls" else ft.finetune_partseg
    return fn(backbone, train, test, mode, fraction, **options)
