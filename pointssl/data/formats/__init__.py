"""One reader per file type, the checks they share, ``read_cloud`` and ``check_root``.

ply (clouds and meshes), pcd (with its LZF), off/obj meshes (+ sampling), xyz/txt,
npy/npz, h5 (PointNet's schema), bin (ScanNet x, y, z, r, g, b rows).
"""

from pointssl.data.formats.bin import read_bin, read_scannet_bin
from pointssl.data.formats.cache import read_cached
from pointssl.data.formats.check import CHECK_EXTS, check_root
from pointssl.data.formats.files import data_files, is_name_list, is_side_file
from pointssl.data.formats.h5 import read_h5
from pointssl.data.formats.mesh import MESH_EXTS, MeshFile, read_mesh, sample_mesh
from pointssl.data.formats.pcd import lzf_decompress
from pointssl.data.formats.read import CLOUD_EXTS, READ_EXTS, read_cloud
from pointssl.data.formats.validate import Cloud, DataWarning, check_points, split_columns

__all__ = ["read_bin", "read_scannet_bin", "read_cached", "CHECK_EXTS", "check_root",
           "data_files", "is_name_list", "is_side_file", "read_h5", "MESH_EXTS", "MeshFile",
           "read_mesh", "sample_mesh", "lzf_decompress", "CLOUD_EXTS", "READ_EXTS",
           "read_cloud", "Cloud", "DataWarning", "check_points", "split_columns"]
