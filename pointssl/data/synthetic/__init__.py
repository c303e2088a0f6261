"""Built-in synthetic shape collection (``--data synthetic``): part-labelled meshes, no download.

Each category is a small procedural model built from trimesh primitives, with continuous and
discrete shape parameters (leg count, round or square tops, optional arms, wing sweep, number
of shelves...) so that categories overlap in gross statistics (tables, beds, sofas and
shelves are all boxy; bottles, vases, lamps and mugs are all solids of revolution). Shape
``i`` of split ``s`` depends only on ``(seed, s, category, i)``.

geometry (building blocks) -> objects (categories, part tables) -> sampling (random
streams, visible-surface samples) -> collection (a split as a CloudSet, cached).
"""

from pointssl.data.synthetic.collection import (
    DEFAULT_SHAPES_PER_CLASS,
    SyntheticMesh,
    load_synthetic,
)
from pointssl.data.synthetic.objects import (
    CATEGORIES,
    CATEGORY_PARTS,
    GENERATOR_VERSION,
    PART_NAMES,
    make_shape,
)
from pointssl.data.synthetic.sampling import sample_shape, shape_rng

__all__ = ["DEFAULT_SHAPES_PER_CLASS", "SyntheticMesh", "load_synthetic", "CATEGORIES",
           "CATEGORY_PARTS", "GENERATOR_VERSION", "PART_NAMES", "make_shape", "sample_shape",
           "shape_rng"]
