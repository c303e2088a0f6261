"""pointssl: self-supervised pre-training of 3D point-cloud networks, and the field's protocols
to show what the pre-training bought.

The public surface (each CLI verb is a thin layer over one of these)::

    pointssl.load_backbone(path)            pointssl.embed(backbone, clouds)
    pointssl.build_backbone(name)           pointssl.build_method(name, backbone, **cfg)
    pointssl.pretrain(method, data, out)    pointssl.load_method(checkpoint)
    pointssl.load_dataset(name, root)       pointssl.linear_svm(backbone, train, test)
    pointssl.fewshot(backbone, train, test, way=5, shot=10)
    pointssl.finetune(backbone, train, test, task=..., mode=..., fraction=...)
    pointssl.PointBatch                     (the packed-point batch every backbone takes)
"""

__version__ = "0.1.0"

_API = ("load_backbone", "build_backbone", "embed", "build_method", "load_method",
        "as_dataset", "load_dataset", "pretrain", "linear_svm", "fewshot", "finetune")
__all__ = [*_API, "PointBatch", "__version__"]


def __getattr__(name):
    # Lazy, so `import pointssl` (and the CLI's --help) does not import torch up front.
    if name in _API:
        from pointssl import api

        return getattr(api, name)
    if name == "PointBatch":
        from pointssl.structures import PointBatch

        return PointBatch
    raise AttributeError(f"module 'pointssl' has no attribute {name!r}")
