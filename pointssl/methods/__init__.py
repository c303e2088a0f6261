"""Pretext methods: each file registers its method with ``@METHODS.register(name)``.

``build_method`` makes one by name, ``load_method`` rebuilds one (weights included) from a
training checkpoint, whichever method and backbone wrote it.
"""

from __future__ import annotations

import dataclasses

from pointssl.errors import PointSSLError
from pointssl.methods.base import (
    METHODS,
    Method,
    OptimConfig,
    collate_point_batches,
    method_spec,
)
from pointssl.utils.overrides import parse_overrides as typed_overrides

__all__ = ["METHODS", "Method", "OptimConfig", "collate_point_batches", "method_spec",
           "method_classes", "parse_overrides", "split_overrides", "build_method",
           "method_from_spec", "load_method"]


def method_classes(name: str) -> tuple[type[Method], type]:
    """(Method class, its config dataclass) of a registered method."""
    cls = METHODS.get(name)
    return cls, cls.config_class


def parse_overrides(cfg_cls, overrides: dict[str, str]) -> dict:
    """Typed ``--set key=value`` overrides for a config dataclass; unknown keys are errors."""
    defaults = {f.name: f.default for f in dataclasses.fields(cfg_cls)}
    return typed_overrides(defaults, overrides, f"a {cfg_cls.__name__} field")


def split_overrides(method: str, backbone: str, overrides: dict[str, str]
                    ) -> tuple[dict, dict]:
    """``--set`` pairs -> (typed method config fields, typed backbone kwargs): a key the
    method's config has goes to the method, else to the backbone (``tnet=false``); a key
    neither knows is one error listing both."""
    from pointssl.backbones import backbone_fields, parse_backbone_overrides

    _, cfg_cls = method_classes(method)
    known = {f.name for f in dataclasses.fields(cfg_cls)}
    bb_known = backbone_fields(backbone)
    mine = {k: v for k, v in overrides.items() if k in known}
    theirs = {k: v for k, v in overrides.items() if k not in known}
    unknown = sorted(k for k in theirs if k not in bb_known)
    if unknown:
        raise PointSSLError(f"--set {unknown[0]}: neither a {cfg_cls.__name__} field (known: "
                            f"{', '.join(sorted(known))}) nor a {backbone} backbone option "
                            f"(known: {', '.join(sorted(bb_known))})")
    return parse_overrides(cfg_cls, mine), parse_backbone_overrides(backbone, theirs)


def build_method(name: str, backbone, overrides: dict | None = None):
    """(method, config) for a registered method around ``backbone``."""
    cls, cfg_cls = method_classes(name)
    cfg = cfg_cls(**(overrides or {}))
    return cls(backbone, cfg), cfg


def _strip_prefixes(state: dict) -> dict:
    """Drop DDP ('module.') and torch.compile ('_orig_mod.') wrappers from the keys."""
    out = {}
    for k, v in state.items():
        while k.startswith(("module.", "_orig_mod.")):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def method_from_spec(blob: dict, source: str = "checkpoint") -> Method:
    """The method (fresh weights) that a checkpoint's ``method`` / ``backbone`` entries
    describe; ``source`` names the file in errors."""
    from pointssl.backbones import rebuild_backbone

    m, b = blob.get("method"), blob.get("backbone")
    if not (isinstance(m, dict) and isinstance(b, dict)):
        raise PointSSLError(f"{source}: not a pointssl training checkpoint (no method and "
                            "backbone description)")
    cls, cfg_cls = method_classes(m["name"])
    known = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(m["config"]) - known)
    if unknown:
        raise PointSSLError(f"{source}: {m['name']} config has fields this version does not "
                            f"know: {', '.join(unknown)}")
    return cls(rebuild_backbone(b["name"], b["config"]), cfg_cls(**m["config"]))


def load_method(path, map_location="cpu") -> Method:
    """Rebuild any registered method with its weights from a training checkpoint
    (``checkpoints/last.pt``): the checkpoint names the method and the backbone and carries
    both configs. Read with ``weights_only=True``: a checkpoint never runs code."""
    from pointssl.utils import load_checkpoint

    blob = load_checkpoint(path, map_location=map_location)
    method = method_from_spec(blob, str(path))
    state = blob.get("model")
    if not isinstance(state, dict):
        raise PointSSLError(f"{path}: no model weights in the checkpoint")
    try:
        method.load_state_dict(_strip_prefixes(state))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise PointSSLError(f"{path}: weights do not fit {method.name} ({first})") from None
    return method
