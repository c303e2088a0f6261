"""Registries filled by a decorator in each backbone / method / dataset file.

A registry knows the package its entries live in and imports every module of it on the
first lookup, so adding a backbone is one new file that says ``@BACKBONES.register("name")``:
the CLI choices, its help and the contract tests pick it up with no other edit.
"""

from __future__ import annotations

import importlib
import pkgutil

from pointssl.errors import PointSSLError


def _qualname(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


class Registry:
    def __init__(self, kind: str, package: str):
        self.kind = kind
        self.package = package
        self._entries: dict[str, object] = {}
        self._loaded = False

    def register(self, name: str):
        """Class (or function) decorator: ``@REGISTRY.register("name")``."""
        def deco(obj):
            prev = self._entries.get(name)
            # re-importing the same module (a reload) registers the same qualified name again
            if prev is not None and _qualname(prev) != _qualname(obj):
                raise PointSSLError(f"{self.kind} {name!r} is registered twice "
                                    f"({prev.__module__} and {obj.__module__})")
            self._entries[name] = obj
            return obj
        return deco

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{self.package}.{mod.name}")

    def get(self, name: str):
        self._load()
        if name not in self._entries:
            raise PointSSLError(f"unknown {self.kind} {name!r}; choose one of "
                                f"{', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, object]]:
        self._load()
        return sorted(self._entries.items())

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def help(self) -> str:
        """``a | b | c`` for CLI help strings."""
        return " | ".join(self.names())
