"""The cross-modal 2D-3D paper's protocols on frozen encoders (Sections 4.2-4.4):

- :func:`image_features`: one 512-d image feature per shape, max-pooled over ``v`` of its
  cached rendered views (Sec. 4.3: "max pooled from v extracted features of v random views");
- :func:`topk_retrieval` / :func:`retrieval_eval`: shape retrieval, Table 3. The paper gives
  no formula; its top-K numbers rise to ~99% at K = 50, which fits this definition (used
  here): a query is a hit at K when at least one of its K nearest gallery shapes (Euclidean
  distance on the global features) has its class; top-K accuracy = the fraction of hits.
  Queries are the test split, the gallery the training split (disjoint: checked). The mean
  precision at K (the fraction of the K that share the class) is reported beside it;
- :func:`image_svm_eval`: 2D shape recognition, Table 2: the linear-SVM protocol
  (:mod:`pointssl.evaluate.svm`) on those max-pooled image features;
- :func:`pretext_eval`: Table 1 from a training checkpoint: cross-modality accuracy of F_f on
  2D-3D pairs drawn from the test split (ten times its size, half positive), and the mean
  (± std) feature distance of positive and negative 2D-2D pairs (as many, half each).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from pointssl.backbones.resnet import images_to_input
from pointssl.data.render import RenderCache, render_key
from pointssl.errors import PointSSLError
from pointssl.evaluate.features import split_features
from pointssl.evaluate.splits import check_disjoint
from pointssl.utils import resolve_device

__all__ = ["DEFAULT_KS", "topk_retrieval", "image_features", "retrieval_eval",
           "image_svm_eval", "pretext_eval"]

DEFAULT_KS = (1, 5, 10, 20, 50)  # Table 3


def topk_retrieval(query_X, query_y, gallery_X, gallery_y, ks=DEFAULT_KS,
                   chunk: int = 1024) -> dict:
    """Top-K accuracy and mean precision at K of Euclidean nearest-neighbour retrieval
    (see the module doc); K larger than the gallery is left out."""
    q = torch.as_tensor(np.asarray(query_X, np.float32))
    g = torch.as_tensor(np.asarray(gallery_X, np.float32))
    qy = torch.as_tensor(np.asarray(query_y))
    gy = torch.as_tensor(np.asarray(gallery_y))
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise PointSSLError(f"retrieval: features of shapes {tuple(q.shape)} and "
                            f"{tuple(g.shape)} do not match")
    ks = [int(k) for k in ks if int(k) <= len(g)]
    kmax = max(ks)
    hits = {k: 0 for k in ks}
    prec = {k: 0.0 for k in ks}
    for s in range(0, len(q), chunk):
        d = torch.cdist(q[s:s + chunk].double(), g.double())
        # ties broken by gallery order: a stable sort, so the result is deterministic
        nn_idx = torch.sort(d, dim=1, stable=True).indices[:, :kmax]
        same = (gy[nn_idx] == qy[s:s + chunk, None]).float()
        for k in ks:
            hits[k] += int((same[:, :k].sum(1) > 0).sum())
            prec[k] += float(same[:, :k].mean(1).sum())
    n = len(q)
    return {"top_k": {k: hits[k] / n for k in ks},
            "precision_at_k": {k: prec[k] / n for k in ks}, "n_query": n,
            "n_gallery": len(g), "metric": "euclidean"}


def _renders(data, cache: RenderCache, i: int) -> np.ndarray:
    item = data[i]
    return cache.load(render_key(item))


@torch.inference_mode()
def image_features(encoder, data, render_dir, views: int = 1, seed: int = 0,
                   batch_size: int = 64, device=None) -> np.ndarray:
    """(n, C) image features of every shape of ``data``: the encoder's features of ``views``
    of its cached renders (drawn at random, seeded, without replacement) max-pooled."""
    device = resolve_device(device)
    cache = RenderCache(render_dir)
    rng = np.random.default_rng(seed)
    was = encoder.training
    encoder.eval().to(device)
    pending, owners = [], []

    def flush():
        x = images_to_input(torch.from_numpy(np.stack(pending))[:, None].to(device))
        f = encoder(x).float().cpu()
        return f, np.asarray(owners)

    feats = {}
    try:
        for i in range(len(data)):
            imgs = _renders(data, cache, i)
            if views > len(imgs):
                raise PointSSLError(f"{views} views asked but {cache.path(render_key(data[i]))}"
                                    f" holds {len(imgs)}: render with --views >= {views}")
            for j in rng.choice(len(imgs), size=views, replace=False):
                pending.append(imgs[j])
                owners.append(i)
            if len(pending) >= batch_size or i == len(data) - 1:
                f, own = flush()
                for k, o in enumerate(own):
                    feats[o] = f[k] if o not in feats else torch.maximum(feats[o], f[k])
                pending, owners = [], []
        out = torch.stack([feats[i] for i in range(len(data))]).numpy()
    finally:
        encoder.train(was)
    return out


def retrieval_eval(train, test, *, backbone=None, image_encoder=None, render_dir=None,
                   views: int = 1, ks=DEFAULT_KS, seed: int = 0, num_points=None,
                   batch_size: int = 32, device=None) -> dict:
    """Top-K retrieval of ``test`` queries in the ``train`` gallery with the point
    backbone's global features and/or the image encoder's (``views`` per shape,
    max-pooled). Refuses a test split that shares files with train."""
    if backbone is None and image_encoder is None:
        raise PointSSLError("retrieval: give a point backbone and/or an image encoder")
    check_disjoint(train, test, "retrieval")
    res: dict = {"definition": "hit when one of the K nearest train shapes has the query's "
                               "class; test queries, train gallery; Euclidean"}
    t0 = time.time()
    if backbone is not None:
        xtr, ytr, xte, yte = split_features(backbone, train, test, seed=seed,
                                            num_points=num_points, batch_size=batch_size,
                                            device=device)
        res["points"] = topk_retrieval(xte, yte, xtr, ytr, ks)
    if image_encoder is not None:
        if render_dir is None:
            raise PointSSLError("image retrieval needs the renders (--renders DIR)")
        ftr = image_features(image_encoder, train, render_dir, views, seed, device=device)
        fte = image_features(image_encoder, test, render_dir, views, seed + 1, device=device)
        res["images"] = dict(topk_retrieval(fte, test.labels, ftr, train.labels, ks),
                             views=views)
    res["seconds"] = round(time.time() - t0, 2)
    return res


def image_svm_eval(image_encoder, train, test, render_dir, *, views: int = 1, seed: int = 0,
                   folds: int = 5, Cs=None, device=None, baseline: bool = False) -> dict:
    """2D recognition (Table 2): linear SVM (C by CV on train) on image features max-pooled
    over ``views`` random cached views per shape (train views seeded ``seed``, test
    ``seed + 1``). ``baseline``: the same protocol on a seeded random-init twin of the
    encoder, under ``"random_init_baseline"``."""
    from pointssl.backbones.resnet import build_image_encoder
    from pointssl.evaluate.svm import linear_svm_protocol

    check_disjoint(train, test, "svm")
    if baseline:
        torch.manual_seed(int(seed))
        twin = build_image_encoder(image_encoder.name, **image_encoder.config)
        base = image_svm_eval(twin, train, test, render_dir, views=views, seed=seed,
                              folds=folds, Cs=Cs, device=device)
        res = image_svm_eval(image_encoder, train, test, render_dir, views=views, seed=seed,
                             folds=folds, Cs=Cs, device=device)
        res["random_init_baseline"] = {k: base[k] for k in ("accuracy", "C", "cv_accuracy")}
        return res
    t0 = time.time()
    xtr = image_features(image_encoder, train, render_dir, views, seed, device=device)
    xte = image_features(image_encoder, test, render_dir, views, seed + 1, device=device)
    feat_s = time.time() - t0
    res = linear_svm_protocol(xtr, train.labels, xte, test.labels, Cs=Cs, folds=folds,
                              seed=seed)
    res.update(views=views, feature_seconds=round(feat_s, 2),
               total_seconds=round(time.time() - t0, 2))
    return res


@torch.inference_mode()
def pretext_eval(method, test, render_dir, *, pairs_per_shape: int = 10, seed: int = 0,
                 num_points=None, batch_size: int = 32, device=None) -> dict:
    """Table 1 on ``test`` with a trained cross-modal method (``load_method`` of its
    checkpoint): ``cross_modality_accuracy`` of F_f on ``pairs_per_shape`` x n (image, points)
    pairs, half positive (a random view of the same shape) and half negative (a random view
    of another shape); ``positive_distance`` / ``negative_distance`` mean and std of the
    image-feature distance of as many 2D-2D pairs (two different views of one shape / views
    of two shapes)."""
    from pointssl.evaluate.features import extract_features

    device = resolve_device(device)
    n = len(test)
    if n < 2:
        raise PointSSLError("pretext protocol: the test split needs >= 2 shapes")
    rng = np.random.default_rng(seed)
    cache = RenderCache(render_dir)
    was = method.training
    method.eval().to(device)
    try:
        fp, _ = extract_features(method.backbone, test, num_points=num_points,
                                 batch_size=batch_size, device=device, seed=seed)
        renders = [_renders(test, cache, i) for i in range(n)]
        m = pairs_per_shape * n
        half = m // 2
        label = np.r_[np.ones(half, int), np.zeros(m - half, int)]
        shape = rng.integers(0, n, size=m)
        other = (shape + rng.integers(1, n, size=m)) % n  # never the shape itself
        img_owner = np.where(label == 1, shape, other)

        def enc(owners, views):
            out = []
            for s in range(0, len(owners), 128):
                x = np.stack([renders[o][v] for o, v in zip(owners[s:s + 128],
                                                             views[s:s + 128])])
                x = images_to_input(torch.from_numpy(x)[:, None].to(device))
                out.append(method.image_encoder(x).float())
            return torch.cat(out)

        def view_of(owners):
            return np.array([rng.integers(len(renders[o])) for o in owners])

        fi = enc(img_owner, view_of(img_owner))
        logits = method.head(fi, torch.as_tensor(fp[shape], device=device))
        acc = float((logits.argmax(1).cpu().numpy() == label).mean())
        # 2D-2D pairs: positive = two different views of a shape, negative = two shapes
        v1 = view_of(shape)
        v2 = np.array([(a + rng.integers(1, len(renders[o]))) % len(renders[o])
                       if len(renders[o]) > 1 else a for a, o in zip(v1, shape)])
        f1 = enc(shape, v1)
        f2 = enc(img_owner, np.where(label == 1, v2, view_of(img_owner)))
        d = (f1 - f2).norm(dim=1).cpu().numpy()
    finally:
        method.train(was)
    pos, neg = d[label == 1], d[label == 0]
    return {"cross_modality_accuracy": acc, "pairs": int(m), "positive_fraction": half / m,
            "positive_distance": {"mean": float(pos.mean()), "std": float(pos.std())},
            "negative_distance": {"mean": float(neg.mean()), "std": float(neg.std())},
            "n_test": n}
