"""``--set key=value`` parsing shared by method configs and backbone options: each value is
typed like the default it replaces."""

from __future__ import annotations

from pointssl.errors import PointSSLError

_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def typed_value(raw: str, default):
    """``raw`` typed like ``default`` (None: a bool if it reads as one, else the string);
    ValueError when it does not parse."""
    low = raw.strip().lower()
    if isinstance(default, bool) or (default is None and low in _TRUE + _FALSE):
        if low not in _TRUE + _FALSE:
            raise ValueError("true or false")
        return low in _TRUE
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, (list, tuple)):
        return [int(c) for c in raw.replace("-", ",").split(",") if c.strip()]
    return raw


def parse_overrides(defaults: dict, overrides: dict[str, str], what: str) -> dict:
    """Typed overrides for the fields in ``defaults`` (name -> default); an unknown key or a
    value that does not parse is one error (``what`` names the thing, e.g. "a ConCluConfig
    field")."""
    out = {}
    for key, raw in overrides.items():
        if key not in defaults:
            raise PointSSLError(f"--set {key}: not {what} (known: {', '.join(sorted(defaults))})")
        try:
            out[key] = typed_value(raw, defaults[key])
        except ValueError as e:
            want = "true or false" if str(e) == "true or false" else type(defaults[key]).__name__
            raise PointSSLError(f"--set {key}={raw}: expected {want}") from None
    return out
