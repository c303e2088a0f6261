"""Scenes: synthetic indoor rooms and readers for the public scene layouts (ScanNet .ply,
S3DIS). The registered datasets ``synthetic_rooms``, ``scannet_ply`` and ``s3dis`` (in
``pointssl.data.datasets``) wrap them as CloudSets with per-point ``semantic`` labels."""

from pointssl.data.scenes.readers import (
    S3DIS_CLASSES,
    SCANNET_CLASSES,
    read_s3dis_room,
    read_scannet_ply,
)
from pointssl.data.scenes.rooms import ROOM_CLASSES, load_rooms, make_room

__all__ = ["ROOM_CLASSES", "S3DIS_CLASSES", "SCANNET_CLASSES", "load_rooms", "make_room",
           "read_s3dis_room", "read_scannet_ply"]
