"""Built-in synthetic shape collection (``--data synthetic``): part-labelled scans, no download.

Each category is a small procedural model built from trimesh primitives, with continuous and
discrete shape parameters (leg count, round or square tops, optional arms, wing sweep, number
of shelves...). Generator v3 has 23 categories in near-neighbour groups that share kinds of
parts and differ in their arrangement and proportions (chair / stool / bench / sofa / bed;
table / desk / shelf / cabinet; mug / cup / bowl / jar / vase / bottle; car / truck / bus;
lamp / fan / monitor / ladder; airplane), and every cloud is a simulated scan (:mod:`.scan`:
a single view's visible surface, occluders, uneven density, jitter, flying-pixel outliers).
``scan=False, categories=V2_CATEGORIES`` rebuilds generator v2's clean collection exactly.
Shape ``i`` of split ``s`` depends only on ``(seed, s, category, i)``.

geometry (building blocks) -> objects (categories, part tables) -> sampling (random
streams, visible-surface samples) -> scan (sensor simulation) -> collection (a split as a
CloudSet, cached).
"""

from pointssl.data.synthetic.collection import (
    DEFAULT_SHAPES_PER_CLASS,
    SyntheticMesh,
    load_synthetic,
    shape_cloud,
)
from pointssl.data.synthetic.objects import (
    CATEGORIES,
    CATEGORY_PARTS,
    GENERATOR_VERSION,
    PART_NAMES,
    V2_CATEGORIES,
    make_shape,
)
from pointssl.data.synthetic.sampling import sample_shape, sample_surface, shape_rng
from pointssl.data.synthetic.scan import simulate_scan, visible_from

__all__ = ["DEFAULT_SHAPES_PER_CLASS", "SyntheticMesh", "load_synthetic", "shape_cloud",
           "CATEGORIES", "CATEGORY_PARTS", "GENERATOR_VERSION", "PART_NAMES", "V2_CATEGORIES",
           "make_shape", "sample_shape", "sample_surface", "shape_rng", "simulate_scan",
           "visible_from"]
