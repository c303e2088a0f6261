"""Octree HRNet: MID-Net's backbone (Wang et al., "Unsupervised Pre-training for 3D Point
Cloud Understanding: Multiresolution Instance Discrimination", Sec. 3.2, Fig. 1), built from
the pure-PyTorch ``ocnn`` package's octree blocks.

The packed points (+ normals; PCA normals, cached per cloud, when the batch has none) become one
octree of ``depth`` (6: 64^3, Sec. 3.2) inside ``forward``. Three parallel branches at depths
``depth-1``, ``depth-2``, ``depth-3`` with ``c, 2c, 4c`` channels, each ``resblocks``
bottleneck ResNet blocks (ResBlk(3)), fused between stages (down: max-pool + 1x1 conv,
up: 1x1 conv + up-sampling; ReLU after the sum). Two heads, as in the authors' release
(``tensorflow/script/network_hrnet.py`` of microsoft/O-CNN, ``mid_hrnet_d6.yaml``):

- shape feature: every branch max-pooled to ``depth-3``, concatenated, 1x1 conv to ``8c`` +
  BN + ReLU, global average pool: the release's ``fc1`` (1024-d at ``c`` = 128), the feature
  its downstream protocols read (``feature.py`` / ``run_linear_cls_cmd.py`` train the linear
  classifier on ``fc1``; ``network_cls`` replaces the FC after it). The release's 128-d FC
  after it (``fc2``, ``nouts[0]``) feeds the MID loss only: :class:`~pointssl.methods.mid.MID`
  owns it (``shape_dim``). ``global_dim`` > 0 puts an FC to that width inside the backbone
  instead (older checkpoints, which have one);
- point features (``point_dim`` = 64): every branch up-sampled to ``depth-1``, concatenated,
  tri-linearly interpolated at the input points, concatenated with the first ``depth``
  convolution's feature (nearest), then a 2-layer MLP (``2c`` hidden, BN + ReLU).

Options: ``fusion`` 2 (every fusion layer), 1 (MID-1Fusion: the first one removed) or 0
(MID-NoFusion) — Table 8; the paper's text does not say which layers Fig. 1 counts: here they
are the stage-2 -> 3 transition's cross-resolution links and the heads' concatenation of all
branches (the stage-1 -> 2 transition has a single branch, nothing to fuse). ``upsample``
"nearest" (the release) or "linear" (the paper's "tri-linear up-sampling").

``arch="unet"``: Table 8's U-Net, which "cascades sequential convolutional layers from high
to low resolutions and then recovers high resolution features from low-resolution ones in a
reversed order" (Sec. 3.2); the paper gives no more detail, so it is the HRNet's parts
rearranged: the same front, resolutions and widths (``c, 2c, 4c``), ``resblocks`` ResBlks at
each encoder level (max-pool + 1x1 conv down), then a decoder (1x1 conv + up-sample, concat
with the encoder's skip, 1x1 conv, ``resblocks`` ResBlks) back to ``depth-1``; the shape head
reads the bottleneck (``depth-3``), the point head the decoder's last level. ``fusion`` is
an HRNet option (must stay 2).

``ocnn`` imports torchvision at its top for one model we never use: :func:`import_ocnn` gives
it a stand-in module for that import and removes it from ``sys.modules`` right after.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import sys
import types
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from pointssl.backbones.base import BACKBONES, Backbone, autocast_operands
from pointssl.data.views.transforms import pca_normals
from pointssl.errors import PointSSLError
from pointssl.structures import BackboneOutput, PointBatch, as_point_batch

__all__ = ["OctreeHRNet", "import_ocnn", "estimate_normals", "shape_normals"]

_EPS = 1e-6


def import_ocnn():
    """``import ocnn`` without torchvision installed (and without leaving a fake one)."""
    if "ocnn" in sys.modules:
        return sys.modules["ocnn"]
    stand_in = importlib.util.find_spec("torchvision") is None
    if stand_in:
        def _resnet18(*_a, **_k):
            raise PointSSLError("torchvision is not installed (ocnn's Image2Shape needs it)")

        tv, tvm = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")
        tvm.resnet18 = _resnet18
        tv.models = tvm
        sys.modules["torchvision"], sys.modules["torchvision.models"] = tv, tvm
    try:
        import ocnn
    except ImportError as e:
        raise PointSSLError(f"the octree backbones need the ocnn package ({e}); install it "
                            "with `pip install --no-deps ocnn` (see the Makefile)") from None
    finally:
        if stand_in:
            sys.modules.pop("torchvision", None)
            sys.modules.pop("torchvision.models", None)
    return ocnn


class _GatherConv(torch.autograd.Function):
    """out = [data_pad[neigh[:, 0]], ..., data_pad[neigh[:, K-1]]] @ W, data_pad = data with a
    zero row where ``neigh`` is -1 (an empty neighbour): ocnn's octree2col + GEMM, with one
    ``index_select`` building the columns. ocnn's ``explicit_gemm`` fills them through a
    boolean-masked assignment, whose autograd backward is an accumulating ``index_put_``;
    ``block_gemm`` scatters with an element-wise ``scatter_add_``. Backward scatters the
    columns' gradient with one ``index_add_``, or, for a stride-1 3x3x3 kernel (``symmetric``:
    j is i's neighbour at offset k iff i is j's at 26 - k), gathers it instead (gather is
    parallel, the scatter is not). The columns are rebuilt in backward, not kept."""

    @staticmethod
    def _columns(data, idx, rows):
        """octree2col: (rows, K * C) neighbour features, zeros for empty neighbours."""
        pad = torch.cat([data, data.new_zeros(1, data.shape[1])])
        return pad.index_select(0, idx).view(rows, -1)

    @staticmethod
    def forward(ctx, data, weights, neigh, symmetric):
        # data and weights share a dtype (GatherOctreeConv gives autocast's operands)
        n, k = len(data), neigh.shape[1]
        idx = torch.where(neigh >= 0, neigh, n).reshape(-1)
        out = _GatherConv._columns(data, idx, len(neigh)) @ weights.flatten(0, 1)
        ctx.save_for_backward(data, weights, neigh, idx)
        ctx.symmetric = bool(symmetric) and k == 27 and len(neigh) == n
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        data, weights, neigh, idx = ctx.saved_tensors
        (n, c), (m, k) = data.shape, neigh.shape
        gd = gw = None
        if ctx.needs_input_grad[0]:
            gcol = g.new_empty(m * k + 1, c)  # + a zero row for empty neighbours
            torch.mm(g, weights.flatten(0, 1).T, out=gcol[:-1].view(m, k * c))
            gcol[-1] = 0
            if ctx.symmetric:  # gd[j] = sum_k gcol[(neigh[j, 26 - k], k)]
                inv = neigh.flip(1)
                src = torch.where(inv >= 0, inv * k + torch.arange(k, device=inv.device), m * k)
                gd = gcol.index_select(0, src.reshape(-1)).view(n, k, c).sum(1)
            else:
                gd = data.new_zeros(n + 1, c).index_add_(0, idx, gcol[:-1])[:n]
        if ctx.needs_input_grad[1]:
            gw = (_GatherConv._columns(data, idx, m).T @ g).view_as(weights)
        return gd, gw, None, None


_GATHER_CONV = None


def gather_conv_class():
    """``ocnn.nn.OctreeConv`` with one more ``method``, ``"gather"`` (:class:`_GatherConv`;
    the others are ocnn's). The octree backbone's convolutions are of this class."""
    global _GATHER_CONV
    if _GATHER_CONV is None:
        ocnn = import_ocnn()

        class GatherOctreeConv(ocnn.nn.OctreeConv):
            def check_method(self, method: str) -> str:
                return method if method == "gather" else super().check_method(method)

            def forward(self, data, octree, depth):
                if self.method != "gather":
                    return super().forward(data, octree, depth)
                neigh = octree.get_neigh(depth, self.kernel, self.stride, self.nempty)
                x, w = autocast_operands(data, self.weights)
                with torch.autocast(x.device.type, enabled=False):
                    out = _GatherConv.apply(x, w, neigh, self.stride == 1 and self.kernel == "333")
                if self.use_bias:
                    out = out + self.bias
                if self.stride == 2 and not self.nempty:
                    out = ocnn.nn.octree_pad(out, octree, depth - 1)
                return out

        _GATHER_CONV = GatherOctreeConv
    return _GATHER_CONV


# PCA normals of the clouds a forward has seen, by content: the protocols (svm, finetune fix,
# registration, embed) feed the same clouds again and again (a random-init twin, every epoch
# of a fine-tune that recomputes features, a repeated evaluation) and the estimate costs about
# as much as an eighth of the depth-5 forward. Least recently used entries go past the limit.
_NORMALS: OrderedDict[bytes, np.ndarray] = OrderedDict()
_NORMALS_LIMIT_BYTES = 256 << 20
_normals_bytes = 0


def shape_normals(xyz: np.ndarray, k: int = 16) -> np.ndarray:
    """(N, 3) float32 unit PCA normals of one cloud, exactly those a MID training view of the
    same points gets (:meth:`pointssl.methods.mid.MID.prepare`: ``pca_normals`` stored at
    float16; the view re-normalises), computed once per cloud content and ``k`` in this
    process."""
    global _normals_bytes
    xyz = np.ascontiguousarray(np.asarray(xyz)[:, :3], dtype=np.float32)
    h = hashlib.sha1(xyz.tobytes())
    h.update(f"|{len(xyz)}|{int(k)}".encode())
    key = h.digest()
    hit = _NORMALS.get(key)
    if hit is None:
        hit = pca_normals(xyz, k).astype(np.float16)
        _NORMALS[key] = hit
        _normals_bytes += hit.nbytes
        while _normals_bytes > _NORMALS_LIMIT_BYTES and len(_NORMALS) > 1:
            _normals_bytes -= _NORMALS.popitem(last=False)[1].nbytes
    else:
        _NORMALS.move_to_end(key)
    n = hit.astype(np.float64)  # unit again, as the view re-normalises its transformed normals
    return (n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def estimate_normals(coord: torch.Tensor, offset: torch.Tensor, k: int = 16) -> torch.Tensor:
    """(P, 3) PCA normals (oriented away from each cloud's centroid) of packed clouds, each
    cloud's from :func:`shape_normals` (cached by content)."""
    xyz = coord.detach().float().cpu().numpy()
    off = offset.tolist()
    out = np.concatenate([shape_normals(xyz[lo:hi], k) for lo, hi in zip(off[:-1], off[1:])])
    return torch.from_numpy(out).to(coord.device, coord.dtype)


class _Transition(nn.Module):
    """Branches ``n`` -> ``n + 1`` (Fig. 1's fusion): output j = ReLU(sum over inputs i of
    down (max-pool, 1x1 conv + BN) / up (1x1 conv + BN, up-sample) / identity). Without
    fusion an output takes its own branch only, and the new branch the lowest one."""

    def __init__(self, ocnn, channels: list[int], fuse: bool, nempty: bool, upsample: str):
        super().__init__()
        n = len(channels) - 1
        self.n, self.nempty = n, nempty
        self.links = nn.ModuleDict()
        for i in range(n):
            for j in range(n + 1):
                if not (fuse or i == j or (j == n and i == n - 1)):
                    continue
                self.links[f"{i}_{j}"] = (nn.Identity() if i == j else
                                          ocnn.modules.Conv1x1Bn(channels[i], channels[j]))
        self.pool = ocnn.nn.OctreeMaxPool(nempty)
        self.up = ocnn.nn.OctreeUpsample(upsample, nempty)
        self.relu = nn.ReLU()  # not in place: an identity link shares its input

    def forward(self, data: list[torch.Tensor], octree, depth: int) -> list[torch.Tensor]:
        outs = []
        for j in range(self.n + 1):
            acc = None
            for i in range(self.n):
                key = f"{i}_{j}"
                if key not in self.links:
                    continue
                x = data[i]
                if i < j:  # down: max-pool to depth - j, then 1x1 conv
                    for d in range(depth - i, depth - j, -1):
                        x = self.pool(x, octree, d)
                    x = self.links[key](x)
                elif i > j:  # up: 1x1 conv, then up-sample to depth - j
                    x = self.links[key](x)
                    for d in range(depth - i, depth - j):
                        x = self.up(x, octree, d)
                acc = x if acc is None else acc + x
            outs.append(self.relu(acc))
        return outs


@BACKBONES.register("octree_hrnet")
class OctreeHRNet(Backbone):
    """MID-Net's octree HRNet (Sec. 3.2): global (B, ``global_dim``) + point (P, ``point_dim``).

    Input: xyz (+ normals as the first 3 feature columns; estimated by PCA with ``normal_k``
    neighbours when absent). Coordinates are read in the box ``[-box, box]^3`` (points
    outside are clamped onto it, so every input point keeps a feature).
    """

    name = "octree_hrnet"
    in_dim = 6  # xyz + normals (normals estimated when the batch carries none)

    def __init__(self, depth: int = 6, channels: int = 128, resblocks: int = 3,
                 fusion: int = 2, global_dim: int = 0, point_dim: int = 64,
                 signal_abs: bool = True, upsample: str = "nearest", box: float = 1.0,
                 normal_k: int = 16, nempty: bool = True, conv_method: str = "auto",
                 arch: str = "hrnet"):
        # depth 6 = 64^3 (Sec. 3.2); channels 128 = 64 * factor 2, signal_abs, upsample
        # "nearest", nouts 128,64: the release's mid_hrnet_d6.yaml; resblocks 3: ResBlk(3);
        # global_dim 0: the global feature is the pooled 8c (release fc1, what its linear
        # classifier reads); the 128 of nouts is the MID method's shape head
        super().__init__(depth=depth, channels=channels, resblocks=resblocks, fusion=fusion,
                         global_dim=global_dim, point_dim=point_dim, signal_abs=signal_abs,
                         upsample=upsample, box=box, normal_k=normal_k, nempty=nempty,
                         conv_method=conv_method, arch=arch)
        if int(depth) < 5:
            raise PointSSLError(f"octree_hrnet depth {depth}: at least 5 (three branches "
                                "below the input depth, the coarsest above full depth 2)")
        if fusion not in (0, 1, 2):
            raise PointSSLError(f"octree_hrnet fusion {fusion}: 2 (all), 1 or 0 (none)")
        if arch not in ("hrnet", "unet"):
            raise PointSSLError(f"octree_hrnet arch {arch!r}: hrnet or unet (Table 8)")
        if arch == "unet" and fusion != 2:
            raise PointSSLError("octree_hrnet fusion is an HRNet option; arch=unet has none")
        if upsample not in ("nearest", "linear"):
            raise PointSSLError(f"octree_hrnet upsample {upsample!r}: nearest or linear")
        if conv_method not in ("auto", "gather", "explicit_gemm", "block_gemm", "triton"):
            raise PointSSLError(f"octree_hrnet conv_method {conv_method!r}: auto, gather, "
                                "explicit_gemm, block_gemm or triton")
        ocnn = import_ocnn()
        self.depth, self.box, self.normal_k = int(depth), float(box), int(normal_k)
        self.signal_abs, self.nempty, self.conv_method = bool(signal_abs), bool(nempty), \
            conv_method
        c = int(channels)
        self.global_dim, self.point_dim = int(global_dim) or 8 * c, int(point_dim)
        chans = [c, 2 * c, 4 * c]
        self.channels = chans
        c0 = max(c // 4, 1)
        # front (release: conv at depth 6 to c/4, max-pool, conv at depth 5 to c)
        self.front0 = ocnn.modules.OctreeConvBnRelu(4, c0, nempty=nempty)
        self.front_pool = ocnn.nn.OctreeMaxPool(nempty)
        self.front1 = ocnn.modules.OctreeConvBnRelu(c0, c, nempty=nempty)

        def blocks(ch):
            return ocnn.modules.OctreeResBlocks(ch, ch, int(resblocks), 4 if ch < 256 else 8,
                                                nempty=nempty)

        self.arch = arch
        if arch == "unet":
            conv1 = ocnn.modules.Conv1x1BnRelu
            self.enc = nn.ModuleList(blocks(ch) for ch in chans)
            self.enc_down = nn.ModuleList(conv1(chans[i], chans[i + 1]) for i in range(2))
            self.dec_up = nn.ModuleList(conv1(chans[i + 1], chans[i]) for i in range(2))
            self.dec_fuse = nn.ModuleList(conv1(2 * chans[i], chans[i]) for i in range(2))
            self.dec = nn.ModuleList(blocks(chans[i]) for i in range(2))
            shape_in, point_in = chans[-1], chans[0]  # the bottleneck; the decoder's output
        else:
            self.stages = nn.ModuleList(
                nn.ModuleList(blocks(chans[i]) for i in range(s + 1)) for s in range(3))
            # Table 8's fusion layers: the stage-2 -> 3 transition (the first one that has
            # two branches to fuse) and the heads' concatenation of every resolution. fusion
            # 1 (MID-1Fusion) drops the first, 0 (MID-NoFusion) both: each head then reads
            # one branch (shape: the coarsest, points: the finest)
            self.head_fusion = fusion >= 1
            self.transitions = nn.ModuleList(
                _Transition(ocnn, chans[:s + 2], s == 0 or fusion == 2, nempty, upsample)
                for s in range(2))
            shape_in = sum(chans) if self.head_fusion else chans[-1]
            point_in = sum(chans) if self.head_fusion else chans[0]
        self.pool = ocnn.nn.OctreeMaxPool(nempty)
        self.up = ocnn.nn.OctreeUpsample(upsample, nempty)
        # shape head: concat at depth-3, 1x1 conv to 512 * factor, global pool, FC
        self.cls_conv = ocnn.modules.Conv1x1BnRelu(shape_in, 8 * c)
        self.global_pool = ocnn.nn.OctreeGlobalPool(nempty)
        self.cls_fc = nn.Linear(8 * c, self.global_dim) if global_dim else nn.Identity()
        # point head: 2-layer MLP, 128 * factor hidden (release predict_module)
        self.seg_mlp = nn.Sequential(nn.Linear(point_in + c0, 2 * c, bias=False),
                                     nn.BatchNorm1d(2 * c), nn.ReLU(inplace=True),
                                     nn.Linear(2 * c, self.point_dim))
        gather = gather_conv_class()
        for m in self.modules():  # ocnn's blocks build plain OctreeConvs: same weights
            if type(m) is ocnn.nn.OctreeConv:
                m.__class__ = gather
        self._conv_device: str | None = None
        self._global_only = False

    def _unet(self, x, octree, hr: int):
        """(shape inputs at ``hr - 2``, point inputs at ``hr``) of the U-Net trunk."""
        skips = []
        for i, blk in enumerate(self.enc):
            if i:
                x = self.enc_down[i - 1](self.pool(x, octree, hr - i + 1))
            x = blk(x, octree, hr - i)
            skips.append(x)
        bottleneck = x
        if self._global_only:
            return [bottleneck], None
        for i in (1, 0):  # decoder: depth hr - 2 -> hr - 1 -> hr
            x = self.up(self.dec_up[i](x), octree, hr - i - 1)
            x = self.dec_fuse[i](torch.cat([x, skips[i]], dim=1))
            x = self.dec[i](x, octree, hr - i)
        return [bottleneck], [x]

    def _hrnet(self, x, octree, hr: int):
        """(shape inputs at ``hr - 2``, point inputs at ``hr``) of the HRNet trunk."""
        convs = [x]
        for s in range(3):
            convs = [blk(t, octree, hr - i) for i, (blk, t) in enumerate(zip(self.stages[s],
                                                                               convs))]
            if s < 2:
                convs = self.transitions[s](convs, octree, hr)
        pooled = []
        for i, t in enumerate(convs):
            if not self.head_fusion and i < len(convs) - 1:
                continue
            for d in range(hr - i, hr - 2, -1):
                t = self.pool(t, octree, d)
            pooled.append(t)
        if self._global_only:
            return pooled, None
        ups = []
        for i, t in enumerate(convs):
            if not self.head_fusion and i > 0:
                continue
            for d in range(hr - i, hr):
                t = self.up(t, octree, d)
            ups.append(t)
        return pooled, ups

    @contextlib.contextmanager
    def global_only(self):
        """Within: ``forward`` skips the point head (interpolation at the points, MLP: about
        half of an inference forward) and returns (P, 0) point features. For the protocols
        that read the global feature only (svm, ``finetune --task cls --mode fix``)."""
        before, self._global_only = self._global_only, True
        try:
            yield self
        finally:
            self._global_only = before

    @classmethod
    def test_config(cls) -> dict:
        return {"depth": 5, "channels": 16, "resblocks": 1, "point_dim": 16}

    # ------------------------------------------------------------------ dispatch
    def forward(self, x) -> BackboneOutput:
        """Dense ``(B, N, 3 [+ 3 normals + ...])``, packed PointBatch or list of clouds."""
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self._device())
        if isinstance(x, torch.Tensor) and x.ndim == 3:
            b, n, _ = x.shape
            out = self._run(PointBatch.from_dense(x))
            return BackboneOutput(out.global_feat,
                                  out.point_feat.reshape(b, n, out.point_feat.shape[-1]))
        pb = as_point_batch(x)
        if isinstance(x, (list, tuple)):
            pb = pb.to(self._device())
        return self._run(pb)

    def _set_conv_method(self, device: torch.device) -> None:
        want = self.conv_method
        if want == "auto":  # CPU: "gather" (a MID step 1.13x faster than with explicit GEMM,
            # itself 10-30% faster than block GEMM, DESIGN.md); GPU: ocnn's own choice
            want = "gather" if device.type == "cpu" else None
        if self._conv_device == (str(device), want):
            return
        conv = gather_conv_class() if want == "gather" else import_ocnn().nn.OctreeConv
        for m in self.modules():
            if isinstance(m, conv) and want is not None:
                m.method = m.check_method(want) if want == "triton" else want
        self._conv_device = (str(device), want)

    def build_octree(self, coord: torch.Tensor, normals: torch.Tensor,
                     batch: torch.Tensor, batch_size: int):
        """The batch's octree (all clouds at once, batch id in the keys) and the points
        scaled to [-1, 1)."""
        ocnn = import_ocnn()
        pts = (coord / self.box).clamp(-1.0 + _EPS, 1.0 - _EPS)
        cloud = ocnn.octree.Points(pts, normals, batch_id=batch[:, None],
                                   batch_size=batch_size)
        octree = ocnn.octree.Octree(self.depth, full_depth=2, batch_size=batch_size,
                                    device=coord.device)
        octree.build_octree(cloud)
        octree.construct_all_neigh()
        return octree, pts

    def _run(self, pb: PointBatch) -> BackboneOutput:
        ocnn, depth = import_ocnn(), self.depth
        coord = pb.coord.float()
        if pb.num_feat >= 3:
            normals = torch.nn.functional.normalize(pb.feat[:, :3].float(), dim=1)
        else:
            normals = estimate_normals(coord, pb.offset, self.normal_k)
        self._set_conv_method(coord.device)
        bsz = pb.batch_size
        batch = pb.batch_index
        with torch.no_grad():
            octree, pts = self.build_octree(coord.detach(), normals.detach(), batch, bsz)
            data = octree.get_input_feature("ND", nempty=self.nempty)
            if self.signal_abs:  # release: signal_abs: True
                data = data.abs()
        conv0 = self.front0(data, octree, depth)
        x = self.front1(self.front_pool(conv0, octree, depth), octree, depth - 1)
        hr = depth - 1
        pooled, ups = (self._unet if self.arch == "unet" else self._hrnet)(x, octree, hr)
        g = self.cls_conv(torch.cat(pooled, dim=1))
        g = self.global_pool(g, octree, hr - 2)
        global_feat = self.cls_fc(g)
        if self._global_only:
            return BackboneOutput(global_feat, coord.new_zeros(len(coord), 0), pb.offset)
        # point features at the input points
        feat_hr = torch.cat(ups, dim=1)
        bcol = batch[:, None].to(pts.dtype)
        q_hr = torch.cat([(pts + 1.0) * 2 ** (hr - 1), bcol], dim=1)
        q_d = torch.cat([(pts + 1.0) * 2 ** (depth - 1), bcol], dim=1)
        # ocnn's sparse interpolation matrix is valid by construction: no invariant checks
        # (and no warning that they are implicitly off)
        # (outside autocast: its sparse matrix times bf16 features has no backward)
        with torch.sparse.check_sparse_tensor_invariants(enable=False), \
                torch.autocast(coord.device.type, enabled=False):
            f_hr = ocnn.nn.octree_linear_pts(feat_hr.float(), octree, hr, q_hr,
                                             nempty=self.nempty)
        f_d = ocnn.nn.octree_nearest_pts(conv0, octree, depth, q_d, nempty=self.nempty).float()
        point_feat = self.seg_mlp(torch.cat([f_hr, f_d], dim=1))
        return BackboneOutput(global_feat, point_feat, pb.offset)
