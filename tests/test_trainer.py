"""Trainer: data order, exact resume, budgets, exports, logs, collapse monitor, DDP."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _tiny import TwoNetMethod, VarSizeMethod, make_method, tiny_data
from torch.utils.data import DataLoader

import pointssl.engine.trainer as trainer_mod
from pointssl.engine import Hook
from pointssl.engine.logging import collapse_std
from pointssl.engine.state import capture_rng, restore_rng
from pointssl.engine.trainer import Trainer, ViewsDataset, epoch_batches
from pointssl.errors import PointSSLError
from pointssl.methods import collate_point_batches
from pointssl.structures import PointBatch
from pointssl.utils import load_checkpoint

# 22 shapes, batch 4 -> 5 steps per epoch (2 dropped), 2 epochs -> 10 steps.
STEPS = 10


def run(out, method=None, **kw):
    method = method or make_method()
    kw = {"progress": False, "log_every": 2, **kw}
    metrics = Trainer(method, tiny_data(), out, **kw).fit()
    return method, metrics


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{k} differs"


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """One uninterrupted 2-epoch run that the interrupted ones must reproduce exactly."""
    out = tmp_path_factory.mktemp("baseline")
    method, metrics = run(out, config_to_save={"method": "tiny", "crop": (1, 2)})
    return out, method, metrics


@pytest.fixture
def fake_clock(monkeypatch):
    """Wall clock that advances one minute per forward call (drives budgets/snapshots)."""
    t = {"now": 0.0}
    monkeypatch.setattr(trainer_mod, "_clock", lambda: t["now"])

    def tick(_method, _calls):
        t["now"] += 60.0

    return tick


def test_epoch_batches_are_seeded_disjoint_and_drop_last():
    b0 = epoch_batches(22, 4, seed=3, epoch=0)
    assert b0 == epoch_batches(22, 4, seed=3, epoch=0)
    assert b0 != epoch_batches(22, 4, seed=3, epoch=1)
    assert b0 != epoch_batches(22, 4, seed=4, epoch=0)
    assert len(b0) == 5 and all(len(b) == 4 for b in b0)
    flat = [i for b in b0 for i in b]
    assert len(set(flat)) == 20
    r0 = [i for b in epoch_batches(23, 2, 3, 0, rank=0, world=2) for i in b]
    r1 = [i for b in epoch_batches(23, 2, 3, 0, rank=1, world=2) for i in b]
    assert len(r0) == len(r1) == 10 and not set(r0) & set(r1)


def test_views_depend_only_on_seed_epoch_index_not_workers():
    m, data = make_method(), tiny_data()
    views = ViewsDataset(data, m.make_views, seed=5)
    keys = [[(1, i) for i in b] for b in epoch_batches(len(data), 4, 5, 1)]
    single = list(DataLoader(views, batch_sampler=keys, num_workers=0))
    multi = list(DataLoader(views, batch_sampler=keys, num_workers=2))
    for x, y in zip(single, multi, strict=True):
        assert torch.equal(x["a"], y["a"]) and torch.equal(x["b"], y["b"])
    assert not np.array_equal(views[(1, 3)]["a"], views[(2, 3)]["a"])  # epoch matters
    assert np.array_equal(views[(1, 3)]["a"], views[(1, 3)]["a"])
    assert views[(1, 3)]["index"] == 3


def test_run_folder_contents(baseline):
    out, method, metrics = baseline
    assert metrics["stop_reason"] == "completed"
    assert metrics["steps"] == STEPS and metrics["epochs_done"] == 2
    assert json.loads((out / "metrics.json").read_text())["steps"] == STEPS
    for key in ("loss", "shapes_per_s", "peak_rss_mib", "wall_minutes", "cpu_minutes"):
        assert metrics[key] is not None and metrics[key] >= 0, key
    assert yaml.safe_load((out / "config.yaml").read_text()) == {"method": "tiny",
                                                                  "crop": [1, 2]}
    blob = load_checkpoint(out / "backbone.pt")
    assert blob["backbone"] == "tiny" and blob["meta"]["steps"] == STEPS
    for k, v in method.backbone.state_dict().items():
        assert torch.equal(blob["state_dict"][k], v)
    rows = read_csv(out / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10]
    for col in ("epoch", "lr", "loss", "cos", "collapse_std", "shapes_per_s", "wall_s"):
        assert rows[0][col] != "", col
    # StepLR(step 1, gamma .5): epoch 0 at lr 1e-2, epoch 1 at 5e-3.
    assert float(rows[0]["lr"]) == pytest.approx(1e-2)
    assert float(rows[-1]["lr"]) == pytest.approx(5e-3)
    assert metrics["loss"] == pytest.approx(float(rows[-1]["loss"]), rel=1e-5)
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())
    ck = load_checkpoint(out / "checkpoints" / "last.pt")
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (2, 0, STEPS)


def test_workers_do_not_change_the_result(baseline, tmp_path):
    method, _ = run(tmp_path, num_workers=2)
    assert_same_state(method, baseline[1])


def test_auto_workers_none_on_cpu_some_on_a_gpu(monkeypatch, tmp_path):
    from pointssl.engine.data import auto_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)), raising=False)
    assert auto_workers(torch.device("cpu")) == 0
    assert auto_workers(torch.device("cuda", 0)) == 4  # capped
    assert auto_workers(torch.device("cuda", 0), world=4) == 3  # 16 cores / 4 ranks - 1
    assert auto_workers(torch.device("cuda", 0), world=16) == 0
    t = Trainer(make_method(), tiny_data(), tmp_path / "a", progress=False)  # default auto
    assert t.num_workers == 0
    assert Trainer(make_method(), tiny_data(), tmp_path / "b", num_workers=2).num_workers == 2
    for bad in (-1, "two", 1.5):
        with pytest.raises(PointSSLError, match="num_workers"):
            Trainer(make_method(), tiny_data(), tmp_path / "c", num_workers=bad)


def test_mid_epoch_stop_then_resume_is_bit_identical(baseline, tmp_path):
    m1, met = run(tmp_path, max_steps=7)  # stops in epoch 1 after its 2nd batch
    assert met["stop_reason"] == "max_steps" and met["steps"] == 7
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert (ck["epoch"], ck["step_in_epoch"]) == (1, 2)
    assert load_checkpoint(tmp_path / "backbone.pt")["meta"]["steps"] == 7
    m2, met2 = run(tmp_path, resume=True)  # a fresh process would build a fresh method
    assert m2.calls == STEPS - 7  # already-done batches of epoch 1 were skipped
    assert met2["stop_reason"] == "completed" and met2["resumed_from_step"] == 7
    assert_same_state(m2, baseline[1])
    rows = read_csv(tmp_path / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 7, 8, 10]


def test_sgd_and_scheduler_state_resume_bit_identically(tmp_path):
    # StepLR every 2 epochs: a resumed run that lost the scheduler's epoch count would decay
    # at the wrong epoch.
    def m():
        return make_method(optimizer="sgd", lr_step_epochs=2, epochs=3)

    full, _ = run(tmp_path / "full", method=m())
    run(tmp_path / "cut", method=m(), max_steps=7)
    resumed, _ = run(tmp_path / "cut", method=m(), resume=True)
    assert_same_state(resumed, full)
    assert float(read_csv(tmp_path / "cut" / "metrics.csv")[-1]["lr"]) == pytest.approx(5e-3)


def test_crash_resumes_from_last_periodic_checkpoint(baseline, tmp_path):
    m = make_method()

    def crash(_m, calls):
        if calls == 8:
            raise RuntimeError("simulated crash")

    m.hook = crash
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, method=m, ckpt_every_steps=3, log_every=1)
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ck["global_step"] == 6  # saved at step 3, at the epoch end (5) and at step 6
    assert [int(r["step"]) for r in read_csv(tmp_path / "metrics.csv")] == list(range(1, 8))
    m2, _ = run(tmp_path, resume=True, log_every=1)
    assert_same_state(m2, baseline[1])
    # Rows logged after the checkpoint (step 7) were dropped and redone, not duplicated.
    assert [int(r["step"]) for r in read_csv(tmp_path / "metrics.csv")] == list(range(1, 11))


@pytest.mark.parametrize("sig, exc", [(signal.SIGINT, KeyboardInterrupt),
                                      (signal.SIGTERM, SystemExit)])
def test_signal_finishes_the_step_checkpoints_and_reraises(baseline, tmp_path, sig, exc):
    if sig == signal.SIGTERM and signal.getsignal(sig) is not signal.SIG_DFL:
        pytest.skip("SIGTERM already handled by the test runner")
    before = signal.getsignal(sig)
    m = make_method()

    def send(_m, calls):
        if calls == 4:
            os.kill(os.getpid(), sig)

    m.hook = send
    with pytest.raises(exc):
        run(tmp_path, method=m)
    assert m.calls == 4
    assert signal.getsignal(sig) is before  # handler restored
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ck["global_step"] == 4
    m2, _ = run(tmp_path, resume=True)
    assert_same_state(m2, baseline[1])


def test_keyboard_interrupt_mid_forward_saves_last_completed_step(baseline, tmp_path):
    m = make_method()

    def interrupt(_m, calls):
        if calls == 4:
            raise KeyboardInterrupt

    m.hook = interrupt
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, method=m, ckpt_every_steps=100)
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ck["global_step"] == 3
    m2, _ = run(tmp_path, resume=True)
    assert_same_state(m2, baseline[1])


def test_max_minutes_and_snapshots_count_time_before_resume(baseline, tmp_path, fake_clock):
    m = make_method()
    m.hook = fake_clock
    _, met = run(tmp_path, method=m, max_minutes=3.5, snapshot_minutes=(2, 5, 99))
    assert met["stop_reason"] == "max_minutes" and met["steps"] == 4
    assert met["wall_minutes"] == pytest.approx(4.0)
    assert met["snapshots"]["2"]["step"] == 2 and set(met["snapshots"]) == {"2"}
    snap = load_checkpoint(tmp_path / "backbone_2min.pt")
    assert snap["meta"]["steps"] == 2
    assert not torch.equal(snap["state_dict"]["fc2.weight"],
                           m.backbone.state_dict()["fc2.weight"])
    assert json.loads((tmp_path / "metrics.json").read_text())["stop_reason"] == "max_minutes"

    m2 = make_method()
    m2.hook = fake_clock
    _, met2 = run(tmp_path, method=m2, resume=True, snapshot_minutes=(2, 5, 99))
    assert met2["snapshots"]["5"]["step"] == 5  # 4 min before the resume + 1 after
    assert met2["snapshots"]["2"]["step"] == 2 and "99" not in met2["snapshots"]
    assert (tmp_path / "backbone_5min.pt").is_file()
    assert met2["wall_minutes"] == pytest.approx(STEPS)
    assert_same_state(m2, baseline[1])


def test_budget_already_spent_stops_before_any_step(tmp_path, fake_clock):
    m = make_method()
    m.hook = fake_clock
    run(tmp_path, method=m, max_minutes=2)
    m2 = make_method()
    _, met = run(tmp_path, method=m2, resume=True, max_minutes=2)
    assert m2.calls == 0 and met["stop_reason"] == "max_minutes" and met["steps"] == 2


def test_refuses_to_overwrite_and_checks_resume_compatibility(tmp_path):
    run(tmp_path, max_steps=2)
    with pytest.raises(PointSSLError, match="already holds a run"):
        run(tmp_path)
    with pytest.raises(PointSSLError, match="batch_size 4 -> 2"):
        run(tmp_path, resume=True, batch_size=2)


def test_bad_settings_are_reported():
    with pytest.raises(PointSSLError, match="unknown optimizer"):
        run("/nonexistent-unused", method=make_method(optimizer="lamb"))
    with pytest.raises(PointSSLError, match="fewer than one batch"):
        Trainer(make_method(), tiny_data(n=3), "/nonexistent-unused", batch_size=4)


def test_collapse_std_is_zero_for_constant_and_one_for_random():
    assert collapse_std(torch.zeros(64, 32)).item() == pytest.approx(0.0, abs=1e-6)
    assert collapse_std(torch.ones(64, 32) * 3).item() == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    assert collapse_std(torch.randn(2048, 64, generator=g)).item() == pytest.approx(1.0, abs=0.03)
    assert math.isnan(collapse_std(torch.randn(1, 8)).item())


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    worker = Path(__file__).with_name("_ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(worker), str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world"] == r1["world"] == 2
    # 26 shapes, 2 ranks, 4 per rank -> 3 steps per epoch, 12 indices per rank per epoch.
    for e in range(2):
        s0, s1 = r0["seen"][12 * e:12 * (e + 1)], r1["seen"][12 * e:12 * (e + 1)]
        assert not set(s0) & set(s1)
        assert s0 == [i for b in epoch_batches(26, 4, 0, e, 0, 2) for i in b]
        assert s1 == [i for b in epoch_batches(26, 4, 0, e, 1, 2) for i in b]
    # Ranks started from different inits; DDP broadcast rank 0's and kept them in sync.
    # (BatchNorm running stats are per-rank on CPU, where there is no SyncBatchNorm.)
    for k, v in r0["state"].items():
        if not k.startswith("backbone.bn.running") and "num_batches" not in k:
            assert torch.equal(v, r1["state"][k]), k
    run_dir = tmp_path / "run"
    blob = load_checkpoint(run_dir / "backbone.pt")
    assert torch.equal(blob["state_dict"]["fc1.weight"], r0["state"]["backbone.fc1.weight"])
    assert blob["meta"]["steps"] == 6
    rows = read_csv(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 7))  # rank 0 only wrote
    assert r0["metrics"]["batch_size"] == 8 and r0["metrics"]["world_size"] == 2


# ------------------------------------------------------------------ TrainState = the checkpoint


def test_checkpoint_is_exactly_the_train_state(baseline):
    out, method, _ = baseline
    ck = load_checkpoint(out / "checkpoints" / "last.pt")  # weights_only: plain data only
    t = Trainer(make_method(seed=1), tiny_data(), out / "unused", progress=False)
    assert set(ck) == set(t.state.state_dict())
    assert ck["method"] == {"name": "tiny", "config": dataclasses.asdict(method.cfg)}
    assert ck["backbone"] == {"name": "tiny", "config": {"dim": 8}}
    t.state.load_state_dict(ck)
    again = t.state.state_dict()
    for k in ("epoch", "step_in_epoch", "global_step", "wall_s", "cpu_s", "snapshots",
              "throughputs", "last_row", "signature", "method", "backbone"):
        assert again[k] == ck[k], k
    assert_same_state(t.method, method)
    assert again["optimizer"]["param_groups"] == ck["optimizer"]["param_groups"]
    assert again["scheduler"] == ck["scheduler"]
    assert len(ck["rng"]) == 1 and isinstance(ck["rng"][0]["numpy"]["keys"], torch.Tensor)


def test_resumed_trainer_holds_the_state_before_fit(tmp_path):
    fresh = Trainer(make_method(), tiny_data(), tmp_path, progress=False, max_steps=7)
    assert (fresh.state.epoch, fresh.state.global_step) == (0, 0)
    assert isinstance(fresh.state.optimizer, torch.optim.AdamW)
    fresh.fit()
    m = make_method(seed=5)  # another init: the checkpoint's weights must replace it
    t = Trainer(m, tiny_data(), tmp_path, progress=False, resume=True)
    assert (t.state.epoch, t.state.step_in_epoch, t.state.global_step) == (1, 2, 7)
    assert t.resumed_from == 7 and t.state.last_row["step"] == 7
    assert_same_state(m, fresh.method)
    assert t.state.scheduler.last_epoch == 1


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path):
    import random

    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    np.random.normal()  # leaves a cached gaussian in numpy's legacy state
    st = capture_rng(torch.device("cpu"))
    draws = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    torch.save(st, tmp_path / "rng.pt")
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True), torch.device("cpu"))
    again = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1])
    assert draws[2:] == again[2:]


def test_nan_loss_stops_before_its_weights_reach_a_checkpoint(tmp_path):
    m = make_method()
    m.nan_at = 4
    with pytest.raises(PointSSLError, match="loss is nan at step 4; the last good checkpoint"):
        run(tmp_path, method=m, log_every=1, ckpt_every_steps=1)
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ck["global_step"] == 3
    assert [int(r["step"]) for r in read_csv(tmp_path / "metrics.csv")] == [1, 2, 3, 4]


def test_every_declared_network_is_exported_and_snapshotted(tmp_path, fake_clock):
    m = make_method(cls=TwoNetMethod)
    m.hook = fake_clock
    _, met = run(tmp_path, method=m, snapshot_minutes=(2,), max_steps=3)
    for name, net in m.exports().items():
        blob = load_checkpoint(tmp_path / f"{name}.pt", fmt="pointssl-backbone/1")
        assert blob["backbone"] == "tiny" and blob["meta"]["steps"] == 3
        for k, v in net.state_dict().items():
            assert torch.equal(blob["state_dict"][k], v), (name, k)
    assert not torch.equal(m.target.fc1.weight, m.backbone.fc1.weight)
    snap = met["snapshots"]["2"]
    assert snap["file"] == "backbone_2min.pt"
    assert snap["files"] == ["backbone_2min.pt", "target_2min.pt"]
    assert (tmp_path / "target_2min.pt").is_file()


def test_extra_hooks_see_every_step(tmp_path):
    class Record(Hook):
        def __init__(self):
            self.steps, self.closed = [], 0

        def after_step(self, trainer, out):
            self.steps.append((trainer.state.global_step, trainer.epoch_end, trainer.stop))

        def close(self, trainer):
            self.closed += 1

    h = Record()
    Trainer(make_method(), tiny_data(), tmp_path, progress=False, max_steps=6,
            hooks=[h]).fit()
    assert [s for s, _, _ in h.steps] == [1, 2, 3, 4, 5, 6]
    assert [s for s, end, _ in h.steps if end] == [5]
    assert h.steps[-1][2] == "max_steps" and h.closed >= 1


def test_collate_point_batches_packs_one_key_and_stacks_the_rest():
    rng = np.random.default_rng(0)
    samples = [{"a": rng.normal(size=(n, 4)).astype(np.float32), "b": np.full(2, n),
                "index": np.int64(i)} for i, n in enumerate((3, 5, 2))]
    batch = collate_point_batches(samples, ["a"])
    pb = batch["a"]
    assert isinstance(pb, PointBatch) and pb.offset.tolist() == [0, 3, 8, 10]
    assert torch.equal(pb[1], torch.from_numpy(samples[1]["a"]))  # feat column kept
    assert batch["b"].tolist() == [[3, 3], [5, 5], [2, 2]] and batch["index"].tolist() == [0, 1, 2]
    with pytest.raises(PointSSLError, match="no"):
        collate_point_batches(samples, ["c"])


def test_variable_size_views_train_through_the_loader(tmp_path):
    """A views recipe whose clouds differ in size: packed, moved, trained; workers agree."""
    m0 = make_method(cls=VarSizeMethod)
    before = {k: v.clone() for k, v in m0.state_dict().items()}
    run(tmp_path / "w0", method=m0, max_steps=2)
    assert m0.calls == 2 and len(set(m0.sizes)) > 1
    assert not torch.equal(before["backbone.fc1.weight"], m0.backbone.fc1.weight)
    m2 = make_method(cls=VarSizeMethod)
    run(tmp_path / "w2", method=m2, max_steps=2, num_workers=2)
    assert_same_state(m0, m2)

