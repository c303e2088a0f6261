"""Trainer: data order, exact resume, budgets, exports, logs, collapse monitor, DDP."""

from __future__ import annotations

import csv
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
from _tiny import make_method, tiny_data
from torch.utils.data import DataLoader

import pointssl.engine.trainer as trainer_mod
from pointssl.engine.logging import collapse_std
from pointssl.engine.trainer import Trainer, ViewsDataset, epoch_batches
from pointssl.errors import PointSSLError

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
    blob = torch.load(out / "backbone.pt", weights_only=False)
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
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert (ck["epoch"], ck["step_in_epoch"], ck["global_step"]) == (2, 0, STEPS)


def test_workers_do_not_change_the_result(baseline, tmp_path):
    method, _ = run(tmp_path, num_workers=2)
    assert_same_state(method, baseline[1])


def test_mid_epoch_stop_then_resume_is_bit_identical(baseline, tmp_path):
    m1, met = run(tmp_path, max_steps=7)  # stops in epoch 1 after its 2nd batch
    assert met["stop_reason"] == "max_steps" and met["steps"] == 7
    ck = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert (ck["epoch"], ck["step_in_epoch"]) == (1, 2)
    assert torch.load(tmp_path / "backbone.pt", weights_only=False)["meta"]["steps"] == 7
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
    ck = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
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
    ck = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
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
    ck = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
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
    snap = torch.load(tmp_path / "backbone_2min.pt", weights_only=False)
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
    blob = torch.load(run_dir / "backbone.pt", weights_only=False)
    assert torch.equal(blob["state_dict"]["fc1.weight"], r0["state"]["backbone.fc1.weight"])
    assert blob["meta"]["steps"] == 6
    rows = read_csv(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 7))  # rank 0 only wrote
    assert r0["metrics"]["batch_size"] == 8 and r0["metrics"]["world_size"] == 2
