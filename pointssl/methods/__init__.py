"""Pretext-method registry: name -> (Method class, config dataclass)."""

from __future__ import annotations

import dataclasses

from pointssl.errors import PointSSLError

METHODS = ("conclu", "parae")


def method_classes(name: str):
    if name == "conclu":
        from pointssl.methods.conclu import ConClu, ConCluConfig

        return ConClu, ConCluConfig
    if name == "parae":
        from pointssl.methods.parae import ParAE, ParAEConfig

        return ParAE, ParAEConfig
    raise PointSSLError(f"unknown method {name!r}; choose one of {list(METHODS)}")


def parse_overrides(cfg_cls, overrides: dict[str, str]) -> dict:
    """Typed ``--set key=value`` overrides for a config dataclass; unknown keys are errors."""
    fields = {f.name: f for f in dataclasses.fields(cfg_cls)}
    out = {}
    for key, raw in overrides.items():
        if key not in fields:
            raise PointSSLError(f"--set {key}: not a {cfg_cls.__name__} field "
                                f"(known: {', '.join(sorted(fields))})")
        default = fields[key].default
        try:
            if isinstance(default, bool):
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                out[key] = raw.lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                out[key] = int(raw)
            elif isinstance(default, float):
                out[key] = float(raw)
            else:
                out[key] = raw
        except ValueError:
            raise PointSSLError(f"--set {key}={raw}: expected {type(default).__name__}") from None
    return out


def build_method(name: str, backbone, overrides: dict | None = None):
    cls, cfg_cls = method_classes(name)
    cfg = cfg_cls(**(overrides or {}))
    return cls(backbone, cfg), cfg
