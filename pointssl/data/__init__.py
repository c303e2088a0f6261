"""Data: ``formats`` (one reader per file type) -> ``datasets`` (layouts and splits, each
registered; all return a ``CloudSet``), ``synthetic`` (built-in objects), ``views``
(samplers, transforms, crops for a method's views recipe)."""
