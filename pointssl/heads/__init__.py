"""Heads: small networks on top of a backbone's features, one per file.

ProjectionHead / PredictionHead: ConClu's projector g and predictor q (SimSiam-style);
ClassificationHead: the PointNet/DGCNN shape classifier; SegmentationHead: the one per-point
head of ParAE and the part-segmentation protocol; CorrespondenceHead: the cross-modal
method's F_f (is this image of the same object as these points).
"""

from pointssl.heads.classification import ClassificationHead
from pointssl.heads.correspondence import CorrespondenceHead
from pointssl.heads.prediction import PredictionHead
from pointssl.heads.projection import ProjectionHead
from pointssl.heads.segmentation import SegmentationHead

__all__ = ["ClassificationHead", "CorrespondenceHead", "PredictionHead", "ProjectionHead",
           "SegmentationHead"]
