"""Pins the protocol-honesty claims (issue 9, item 7) so that each would fail if broken:
the test set chooses nothing in the SVM protocol; label fractions are stratified and nested
through the protocols; part predictions stay in the shape's category; ``fix`` leaves the
backbone alone while ``finetune``/``scratch`` train it; ConClu's Eqs. 5-9 with two distinct
views; DGCNN's graph is rebuilt per layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointssl.backbones import build_backbone
from pointssl.backbones import dgcnn as dgcnn_mod
from pointssl.data.datasets import CloudSet
from pointssl.evaluate import finetune as ft
from pointssl.evaluate import svm as svm_mod
from pointssl.evaluate.finetune import finetune_classification, finetune_partseg, run_finetune
from pointssl.evaluate.svm import linear_svm_protocol, svm_eval
from pointssl.losses.clustering import SwappedClustering
from pointssl.structures import PointBatch

PN = {"channels": (8, 16), "emb_dim": 32}  # a tiny PointNet (it has BatchNorm)


def tiny_pointnet(seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone("pointnet", **PN)


def state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict, b: dict, keys=None) -> bool:
    return all(torch.equal(a[k], b[k]) for k in (a if keys is None else keys))


def bn_keys(sd: dict) -> list[str]:
    keys = [k for k in sd if k.endswith(("running_mean", "running_var"))]
    assert keys, "the backbone has no BatchNorm statistics: the test would prove nothing"
    return keys


def weight_keys(sd: dict) -> list[str]:
    return [k for k in sd if sd[k].is_floating_point() and k not in bn_keys(sd)]


def clouds(labels, n_points: int, seed: int, sizes=None) -> CloudSet:
    """Class c is an anisotropic Gaussian stretched along axis c % 3 (learnable, not trivial)."""
    rng = np.random.default_rng(seed)
    pts = []
    for i, c in enumerate(labels):
        scale = np.ones(3)
        scale[c % 3] = 2.0 + c // 3
        n = n_points if sizes is None else sizes[i]
        pts.append((rng.normal(size=(n, 3)) * scale).astype(np.float32))
    return CloudSet(points=pts, labels=np.asarray(labels))


# ----------------------------------------------------------------- 1. the SVM's test set


def _svm_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], 20)
    means = rng.normal(size=(3, 8))
    x = means[y] + 1.5 * rng.normal(size=(60, 8))
    return x, y, means


def _leaky_standardize(train, *others, eps=1e-8):
    """A deliberately broken standardisation: statistics over train AND test rows."""
    train = np.asarray(train, dtype=np.float64)
    allx = np.concatenate([train, *(np.asarray(o, dtype=np.float64) for o in others)])
    mean, std = allx.mean(0), allx.std(0)
    std = np.where(std < eps, 1.0, std)
    return tuple((np.asarray(a, dtype=np.float64) - mean) / std for a in (train, *others))


def _choices(res: dict):
    return res["C"], res["cv_accuracy"], res["train_accuracy"], res["n_train"], res["n_iter"]


def test_svm_protocol_choices_do_not_depend_on_the_test_set(monkeypatch):
    x, y, means = _svm_data()
    rng = np.random.default_rng(1)
    y1 = np.repeat([0, 1, 2], 10)
    x1 = means[y1] + 1.5 * rng.normal(size=(30, 8))
    # a second test set: other size, other labels, wildly other scale and offset
    y2 = np.repeat([2, 0], [25, 16])
    x2 = 50.0 * rng.normal(size=(41, 8)) + np.arange(8) * 10.0
    r1 = linear_svm_protocol(x, y, x1, y1)
    r2 = linear_svm_protocol(x, y, x2, y2)
    assert _choices(r1) == _choices(r2)
    assert set(r1["cv_accuracy"]) == set(svm_mod.DEFAULT_CS)
    assert (r1["n_test"], r2["n_test"]) == (30, 41) and r1["accuracy"] != r2["accuracy"]
    # The same comparison catches a protocol that lets the test rows into any choice: with
    # test statistics in the standardisation the two runs no longer agree.
    monkeypatch.setattr(svm_mod, "standardize", _leaky_standardize)
    l1 = linear_svm_protocol(x, y, x1, y1)
    l2 = linear_svm_protocol(x, y, x2, y2)
    assert _choices(l1) != _choices(l2)


def test_svm_eval_choices_do_not_depend_on_the_test_set():
    labels = np.repeat([0, 1, 2], 10)
    train = clouds(labels, 32, seed=0)
    test_a = clouds(np.repeat([0, 1, 2], 4), 32, seed=1)
    # other shapes, other sizes (packed path), one class missing
    test_b = clouds(np.repeat([1, 2], 7), 0, seed=2, sizes=[20 + i for i in range(14)])
    bb = tiny_pointnet()
    before = state(bb)
    # num_points below the cloud size: training features depend on their sampling seed,
    # which must not depend on the test set either
    ra = svm_eval(bb, train, test_a, seed=0, folds=3, num_points=24)
    rb = svm_eval(bb, train, test_b, seed=0, folds=3, num_points=24)
    assert _choices(ra) == _choices(rb)
    assert (ra["n_test"], rb["n_test"]) == (12, 14)
    assert same(before, state(bb))  # features come from a frozen backbone


@pytest.mark.parametrize("mode", ["fix", "finetune"])
def test_finetune_model_and_selected_epoch_do_not_depend_on_the_test_set(mode):
    """Same for the fine-tuning protocol: the trained weights, the validation split and
    the validation-selected epoch are functions of the training set only."""
    train = clouds(np.repeat([0, 1, 2], 8), 24, seed=0)
    test_a = clouds(np.repeat([0, 1, 2], 3), 24, seed=1)
    test_b = clouds(np.repeat([2, 0], [5, 2]), 0, seed=2, sizes=[18, 24, 30, 24, 20, 26, 24])
    kw = dict(epochs=3, batch_size=6, lr=1e-2, seed=0, num_points=24, val_fraction=0.25,
              log=None, return_model=True)
    ra, (bb_a, head_a) = finetune_classification(tiny_pointnet(), train, test_a, mode, 1.0,
                                                 **kw)
    rb, (bb_b, head_b) = finetune_classification(tiny_pointnet(), train, test_b, mode, 1.0,
                                                 **kw)
    assert same(state(bb_a), state(bb_b)) and same(state(head_a), state(head_b))
    assert (ra["n_train"], ra["n_val"]) == (rb["n_train"], rb["n_val"]) == (18, 6)
    sel_a, sel_b = ra["selected"], rb["selected"]
    assert (sel_a["epoch"], sel_a["val_accuracy"]) == (sel_b["epoch"], sel_b["val_accuracy"])
    assert (ra["n_test"], rb["n_test"]) == (9, 7)


# ----------------------------------------------------------------- 2. label fractions


IMBALANCED = np.repeat([0, 1, 2], [100, 38, 10])
# max(1, round(f * n_c)) for n_c = 100 / 38 / 10, by hand: 1.9 and 7.6 round up, so a
# truncating count (1 and 7) fails; 0.38, 0.1 and 0.5 still keep one shape of their class
EXPECTED = {0.01: [1, 1, 1], 0.05: [5, 2, 1], 0.2: [20, 8, 2]}


def _record_training_items(monkeypatch, task_cls) -> list:
    """Every training item the protocol samples a batch from (its labelled subset)."""
    seen: list = []
    orig = task_cls.sample

    def sample(self, items, d, rng):
        seen.extend(int(i) for i in items)
        return orig(self, items, d, rng)

    monkeypatch.setattr(task_cls, "sample", sample)
    return seen


@pytest.mark.parametrize("path", ["finetune_classification/fix", "run_finetune/scratch"])
def test_label_fractions_are_stratified_and_nested_through_the_protocol(path, monkeypatch):
    train = clouds(IMBALANCED, 16, seed=0)
    test = clouds(np.repeat([0, 1, 2], 2), 16, seed=1)
    seen = _record_training_items(monkeypatch, ft.ClassificationTask)
    kw = dict(epochs=1, batch_size=8, seed=3, num_points=16, log=None)
    subsets = {}
    for f in (0.01, 0.05, 0.2):
        seen.clear()
        if path.startswith("finetune_classification"):
            r = finetune_classification(tiny_pointnet(), train, test, "fix", f, **kw)
        else:
            r = run_finetune("cls", "scratch", f, train=train, test=test,
                             backbone_name="pointnet", backbone_config=PN, **kw)
        used = np.array(sorted(set(seen)))
        assert np.bincount(IMBALANCED[used], minlength=3).tolist() == EXPECTED[f], f
        assert r["n_labeled"] == len(used) == sum(EXPECTED[f]) and r["fraction"] == f
        subsets[f] = set(used.tolist())
    assert subsets[0.01] < subsets[0.05] < subsets[0.2]  # nested for one seed


def test_fix_and_scratch_train_on_the_same_labelled_shapes(monkeypatch):
    """The pre-trained number and its random-init twin see the same labels."""
    train = clouds(IMBALANCED, 16, seed=0)
    test = clouds(np.repeat([0, 1, 2], 2), 16, seed=1)
    seen = _record_training_items(monkeypatch, ft.ClassificationTask)
    kw = dict(epochs=1, batch_size=8, seed=5, num_points=16, log=None)
    used = []
    for mode in ("fix", "finetune", "scratch"):
        seen.clear()
        finetune_classification(tiny_pointnet(), train, test, mode, 0.05, **kw)
        used.append(set(seen))
    assert used[0] == used[1] == used[2] and len(used[0]) == 8


def test_partseg_fraction_is_stratified_through_the_protocol(monkeypatch):
    labels = np.repeat([0, 1], [60, 20])
    train = clouds(labels, 16, seed=0)
    train.parts = [(p[:, 0] > 0).astype(np.int64) + 2 * c for p, c in zip(train.points, labels)]
    test = clouds(np.array([0, 1]), 16, seed=1)
    test.parts = [(p[:, 0] > 0).astype(np.int64) + 2 * c for p, c in zip(test.points, [0, 1])]
    seen = _record_training_items(monkeypatch, ft.PartSegTask)
    r = finetune_partseg(tiny_pointnet(), train, test, "fix", 0.05, epochs=1, batch_size=4,
                         num_points=16, log=None, category_parts={0: [0, 1], 1: [2, 3]})
    used = np.array(sorted(set(seen)))
    assert np.bincount(labels[used], minlength=2).tolist() == [3, 1]
    assert r["n_labeled"] == 4


# ----------------------------------------------------------------- 3. part predictions

CAT_PARTS = {0: [0, 1], 1: [2, 3], 2: [4]}
FORBIDDEN = 4  # a part of category 2 only


def _partseg_sets():
    rng = np.random.default_rng(0)

    def make(cats, sizes):
        pts, parts = [], []
        for c, n in zip(cats, sizes):
            p = rng.normal(size=(n, 3)).astype(np.float32)
            pts.append(p)
            ids = CAT_PARTS[c]
            parts.append(np.asarray(ids)[(p[:, 0] > 0).astype(int) % len(ids)])
        return CloudSet(points=pts, labels=np.asarray(cats), parts=parts,
                        class_names=["a", "b", "c"])

    train = make([0, 1, 2] * 4, [24] * 12)
    test = make([0, 1, 0, 1, 2], [24, 31, 17, 24, 20])  # different sizes: every point scored
    return train, test


@pytest.mark.parametrize("mode", ["fix", "finetune"])
def test_partseg_predictions_stay_in_the_category_parts(mode, monkeypatch):
    """The head is rigged so that its raw argmax is part 4 at every point; categories 0 and
    1 do not have part 4, so any unrestricted prediction fails the check."""
    train, test = _partseg_sets()
    raw_argmax: list = []
    orig_head = ft.PartSegTask.make_head

    def rigged_head(self, bb):
        head = orig_head(self, bb)

        def bias(module, args, out):
            out = out.clone()
            out[..., FORBIDDEN] += 1e3
            raw_argmax.append(out.argmax(-1).detach())
            return out

        head.register_forward_hook(bias)
        return head

    captured = {}
    orig_metrics = ft.partseg_metrics

    def metrics(preds, targets, categories, *a, **k):
        captured.update(preds=[np.asarray(p) for p in preds], cats=np.asarray(categories))
        return orig_metrics(preds, targets, categories, *a, **k)

    monkeypatch.setattr(ft.PartSegTask, "make_head", rigged_head)
    monkeypatch.setattr(ft, "partseg_metrics", metrics)
    finetune_partseg(tiny_pointnet(), train, test, mode, 1.0, epochs=1, batch_size=4,
                     num_points=24, log=None, category_parts=CAT_PARTS)
    assert raw_argmax and all(bool((a == FORBIDDEN).all()) for a in raw_argmax)
    preds = captured["preds"]
    assert [len(p) for p in preds] == [len(p) for p in test.points]
    for p, c in zip(preds, captured["cats"]):
        assert set(np.unique(p).tolist()) <= set(CAT_PARTS[int(c)]), (c, np.unique(p))
    assert all((p == FORBIDDEN).all() for p, c in zip(preds, captured["cats"]) if c == 2)


# ----------------------------------------------------------------- 4. what each regime trains


def _regime_data():
    labels = np.repeat([0, 1, 2], 6)
    train = clouds(labels, 24, seed=0)
    test = clouds(np.repeat([0, 1, 2], 2), 24, seed=1)
    train.parts = [(p[:, 0] > 0).astype(np.int64) for p in train.points]
    test.parts = [(p[:, 0] > 0).astype(np.int64) for p in test.points]
    return train, test


def _run(task, bb, train, test, mode):
    kw = dict(epochs=2, batch_size=6, lr=1e-2, seed=0, num_points=24, log=None,
              return_model=True)
    if task == "cls":
        return finetune_classification(bb, train, test, mode, 1.0, **kw)[1][0]
    return finetune_partseg(bb, train, test, mode, 1.0,
                            category_parts={0: [0, 1], 1: [0, 1], 2: [0, 1]}, **kw)[1][0]


def _caller(bb):
    return state(bb), bb.training, [p.requires_grad for p in bb.parameters()]


@pytest.mark.parametrize("task", ["cls", "partseg"])
def test_fix_leaves_weights_and_bn_statistics_unchanged(task):
    train, test = _regime_data()
    bb = tiny_pointnet()
    bb.train()  # a forward pass in this mode would move the BN statistics
    before = _caller(bb)
    used = _run(task, bb, train, test, "fix")
    sd = state(used)
    assert same(before[0], sd, bn_keys(sd)) and same(before[0], sd)
    assert _caller(bb)[1:] == before[1:] and same(before[0], state(bb))
    # The check has teeth: one train-mode pass of this backbone does move its statistics.
    probe = tiny_pointnet()
    probe.train()(torch.from_numpy(np.stack(train.points[:4])))
    assert not same(before[0], state(probe), bn_keys(sd))


@pytest.mark.parametrize("task", ["cls", "partseg"])
def test_finetune_changes_weights_and_bn_statistics_of_a_copy(task):
    train, test = _regime_data()
    bb = tiny_pointnet()
    before = _caller(bb)
    sd = state(_run(task, bb, train, test, "finetune"))
    assert not same(before[0], sd, weight_keys(sd))
    assert not same(before[0], sd, bn_keys(sd))
    assert _caller(bb)[1:] == before[1:] and same(before[0], state(bb))


def test_scratch_trains_its_fresh_initialisation(monkeypatch):
    train, test = _regime_data()
    inits = []
    orig = ft.random_backbone

    def spy(*a, **k):
        net = orig(*a, **k)
        inits.append(state(net))
        return net

    monkeypatch.setattr(ft, "random_backbone", spy)
    bb = tiny_pointnet()
    before = _caller(bb)
    sd = state(_run("cls", bb, train, test, "scratch"))
    assert len(inits) == 1
    assert not same(inits[0], sd, weight_keys(sd))
    assert not same(inits[0], sd, bn_keys(sd))
    assert not same(before[0], inits[0], weight_keys(sd))  # a fresh start, not the given one
    assert _caller(bb)[1:] == before[1:] and same(before[0], state(bb))


# ----------------------------------------------------------------- 5. ConClu Eqs. 5-9


def _np_codes(z, protos, eps, iters):
    """Eq. 6 cost D(c_j, z_i) = |c_j/|c_j| - z_i/|z_i||^2, then Sinkhorn-Knopp towards the
    Eq. 7 marginals (rows 1/B, columns 1/J; the row step last), rows rescaled to sum 1."""
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    cn = protos / np.linalg.norm(protos, axis=1, keepdims=True)
    cost = ((zn[:, None, :] - cn[None, :, :]) ** 2).sum(-1)
    b, j = cost.shape
    plan = np.exp(-cost / eps)
    plan /= plan.sum()
    for _ in range(iters):
        plan /= plan.sum(0, keepdims=True) * j
        plan /= plan.sum(1, keepdims=True) * b
    return cost, plan, plan * b


def _np_log_gamma(q, protos, tau):
    """Eq. 5: log softmax_j(cos(c_j, q_i) / tau)."""
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ \
        (protos / np.linalg.norm(protos, axis=1, keepdims=True)).T
    logits = cos / tau
    m = logits.max(1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))


def _np_swapped(qa, za, qb, zb, protos, tau=0.01, eps=0.1, iters=3, swap=True):
    """Eq. 9's cross-entropy: codes from view b's z supervise view a's q and vice versa
    (Sec. 2: "s_i^b and gamma_i^a"); swap=False pairs each view with itself."""
    s_a = _np_codes(za, protos, eps, iters)[2]
    s_b = _np_codes(zb, protos, eps, iters)[2]
    la, lb = _np_log_gamma(qa, protos, tau), _np_log_gamma(qb, protos, tau)
    if swap:
        return -((s_b * la).sum(1).mean() + (s_a * lb).sum(1).mean())
    return -((s_a * la).sum(1).mean() + (s_b * lb).sum(1).mean())


def _four_views(b=4, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(b, d)) for _ in range(4)], rng.normal(size=(3, d))


def test_swapped_clustering_matches_eqs_5_to_9_with_two_distinct_views():
    (qa, za, qb, zb), protos = _four_views()
    clu = SwappedClustering(5, num_prototypes=3).double()  # paper defaults: tau 0.01
    with torch.no_grad():
        clu.prototypes.weight.copy_(torch.from_numpy(protos))
    t = [torch.from_numpy(v) for v in (qa, za, qb, zb)]
    out = clu(*t)
    hand = _np_swapped(qa, za, qb, zb, protos)
    assert out["swap_ce"].item() == pytest.approx(hand, rel=1e-9)
    pn = protos / np.linalg.norm(protos, axis=1, keepdims=True)
    orth = np.abs(pn @ pn.T - np.eye(3)).sum()  # Eq. 8
    assert out["orth"].item() == pytest.approx(orth, rel=1e-9)
    assert out["clu"].item() == pytest.approx(hand + orth, rel=1e-9)
    # A wrong pairing (un-swapped) or codes from q instead of sg(z) give another value, so
    # such a bug cannot pass.
    for wrong in (_np_swapped(qa, za, qb, zb, protos, swap=False),
                  _np_swapped(qa, qa, qb, qb, protos)):
        assert abs(wrong - hand) > 1e-3 * abs(hand)
    assert abs(clu(t[0], t[3], t[2], t[1])["swap_ce"].item() - hand) > 1e-3 * abs(hand)
    # each view's codes are its own: Eq. 6 cost and Eq. 7 rows, by hand
    for z in (za, zb):
        cost, plan, s = _np_codes(z, protos, 0.1, 3)
        np.testing.assert_allclose(clu.codes(torch.from_numpy(z)).numpy(), s, rtol=1e-9)
        np.testing.assert_allclose(plan.sum(1), 1 / 4)
        cos = clu.prototypes.cosine(torch.from_numpy(z)).detach().numpy()
        np.testing.assert_allclose(2 - 2 * cos, cost, atol=1e-12)
    assert not np.allclose(clu.codes(t[1]).numpy(), clu.codes(t[3]).numpy())


def test_codes_solve_the_eq6_transport_problem():
    """With a small entropic weight the codes' plan attains the linear program of Eq. 6
    under Eq. 7 within eps * log(B J), and beats the plan computed from the other view."""
    from scipy.optimize import linprog

    (_, za, _, zb), protos = _four_views(b=6, seed=1)
    clu = SwappedClustering(5, num_prototypes=3, sinkhorn_eps=0.01,
                            sinkhorn_iters=3000).double()
    with torch.no_grad():
        clu.prototypes.weight.copy_(torch.from_numpy(protos))
    b, j = 6, 3
    for z, other in ((za, zb), (zb, za)):
        cost = _np_codes(z, protos, 0.01, 0)[0]
        rows = np.kron(np.eye(b), np.ones(j))  # S 1_J = 1/B
        cols = np.kron(np.ones(b), np.eye(j))  # S^T 1_B = 1/J
        lp = linprog(cost.ravel(), A_eq=np.vstack([rows, cols]),
                     b_eq=np.r_[np.full(b, 1 / b), np.full(j, 1 / j)], bounds=(0, None))
        plan = clu.codes(torch.from_numpy(z)).numpy() / b
        # at eps = 0.01 Sinkhorn converges slowly: columns are within 1e-4 after 3000 steps
        np.testing.assert_allclose(plan.sum(0), 1 / j, atol=1e-4)
        got = (plan * cost).sum()
        assert lp.fun - 1e-3 <= got <= lp.fun + 0.01 * np.log(b * j) + 1e-3, (got, lp.fun)
        wrong = clu.codes(torch.from_numpy(other)).numpy() / b
        assert (wrong * cost).sum() > got + 0.05, ((wrong * cost).sum(), got)


def test_conclu_forward_pairs_each_views_codes_with_the_other_views_predictions():
    from pointssl.methods.conclu import ConClu, ConCluConfig

    torch.manual_seed(0)
    cfg = ConCluConfig(num_points=32, proj_hidden=16, proj_dim=8, pred_hidden=8,
                       num_prototypes=3)
    m = ConClu(build_backbone("pointnet", **PN), cfg).double()
    g = torch.Generator().manual_seed(0)
    va = torch.randn(5, 32, 3, generator=g, dtype=torch.float64)
    vb = torch.randn(5, 32, 3, generator=g, dtype=torch.float64) * 1.5
    out = m({"view_a": va, "view_b": vb})
    with torch.no_grad():
        q_a, z_a = (v.numpy() for v in m.branch(va))
        q_b, z_b = (v.numpy() for v in m.branch(vb))
    protos = m.cluster.prototypes.weight.detach().numpy()
    hand = _np_swapped(q_a, z_a, q_b, z_b, protos, cfg.tau, cfg.sinkhorn_eps,
                       cfg.sinkhorn_iters)
    assert out["swap_ce"].item() == pytest.approx(hand, rel=1e-7)
    wrong = _np_swapped(q_a, z_a, q_b, z_b, protos, cfg.tau, cfg.sinkhorn_eps,
                        cfg.sinkhorn_iters, swap=False)
    assert abs(wrong - hand) > 1e-4 * abs(hand)


# ----------------------------------------------------------------- 6. DGCNN's dynamic graph


def _record_knn(monkeypatch):
    calls = []
    orig = dgcnn_mod.knn_indices

    def spy(x, k):
        idx = orig(x, k)
        calls.append((x.detach().clone(), k, idx))
        return idx

    monkeypatch.setattr(dgcnn_mod, "knn_indices", spy)
    return calls


def _record_convs(bb):
    seen = []
    for conv in bb.convs:
        conv.register_forward_hook(
            lambda mod, args, out: seen.append((args[0].detach().clone(), args[1],
                                                out.detach().clone())))
    return seen


def _neighbour_sets(idx):
    return [frozenset(r) for r in idx.reshape(-1, idx.shape[-1]).tolist()]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("in_dim", [3, 6])
def test_dgcnn_rebuilds_the_knn_graph_on_each_layers_features(in_dim, training, monkeypatch):
    channels = (8, 16, 32)
    torch.manual_seed(0)
    bb = build_backbone("dgcnn", k=5, channels=channels, emb_dim=32, in_dim=in_dim)
    bb.train(training)
    calls, convs = _record_knn(monkeypatch), _record_convs(bb)
    x = torch.randn(2, 40, in_dim)
    bb(x)
    assert len(calls) == len(channels) == len(convs)  # one graph per EdgeConv
    assert [c[0].shape[-1] for c in calls] == [3, 8, 16]  # xyz, then each layer's width
    assert torch.equal(calls[0][0], x[..., :3])
    for layer in (1, 2):
        assert torch.equal(calls[layer][0], convs[layer - 1][2])  # the previous output
    for layer, (inp, idx, _) in enumerate(convs):
        assert torch.equal(idx, calls[layer][2])  # the conv uses that layer's graph ...
        if layer:
            assert torch.equal(inp, calls[layer][0])  # ... built on its own input features
    assert all(c[1] == 5 for c in calls)
    graphs = [_neighbour_sets(c[2]) for c in calls]
    for a in range(3):
        for b in range(a + 1, 3):
            differ = sum(ga != gb for ga, gb in zip(graphs[a], graphs[b]))
            assert differ > len(graphs[a]) // 4, (a, b, differ)


def test_dgcnn_packed_batch_rebuilds_the_graph_per_layer_and_cloud(monkeypatch):
    torch.manual_seed(0)
    bb = build_backbone("dgcnn", k=4, channels=(8, 16), emb_dim=32).eval()
    calls = _record_knn(monkeypatch)
    g = torch.Generator().manual_seed(1)
    pb = PointBatch.from_list([torch.randn(30, 3, generator=g).numpy(),
                               torch.randn(23, 3, generator=g).numpy()])
    bb(pb)
    # knn_packed builds each cloud's graph alone: 2 layers x 2 clouds, widths 3 then 8
    assert [(c[0].shape[1], c[0].shape[-1]) for c in calls] == [(30, 3), (23, 3),
                                                                (30, 8), (23, 8)]
    for cloud in (0, 1):
        assert _neighbour_sets(calls[cloud][2]) != _neighbour_sets(calls[2 + cloud][2])
