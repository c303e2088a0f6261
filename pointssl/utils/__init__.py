"""Small shared pieces, each with one home: atomic writes and strict JSON, the cache folder,
device choice, safe checkpoint loading and the registries' decorator."""

from pointssl.utils.cache import cache_dir
from pointssl.utils.checkpoint import load_checkpoint
from pointssl.utils.device import resolve_device
from pointssl.utils.io import (
    atomic_path,
    atomic_savez,
    atomic_torch_save,
    dumps_json,
    plain,
    write_json_atomic,
    write_text_atomic,
    write_yaml_atomic,
)
from pointssl.utils.registry import Registry

__all__ = ["cache_dir", "load_checkpoint", "resolve_device", "atomic_path", "atomic_savez",
           "atomic_torch_save", "dumps_json", "plain", "write_json_atomic", "write_text_atomic",
           "write_yaml_atomic", "Registry"]
