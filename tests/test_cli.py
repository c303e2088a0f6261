"""End-to-end CLI: pretrain -> export -> eval svm / embed, data check, one-line errors."""

import json

import numpy as np
import pytest

from pointssl.cli import main

TINY = ["--set", "num_points=64", "--set", "proj_hidden=32", "--set", "proj_dim=16",
        "--set", "pred_hidden=8"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """root/{train,test}/<class>/*.npy: two classes a linear probe can tell apart."""
    root = tmp_path_factory.mktemp("clouds")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        for c, scale in (("flat", (1.0, 1.0, 0.1)), ("tall", (0.2, 0.2, 1.0))):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                np.save(d / f"{c}_{i}.npy", (rng.normal(size=(128, 3)) * scale).astype("f4"))
    return root


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    rc = main(["pretrain", "--method", "conclu", "--backbone", "pointnet", "--data", "folder",
               "--root", str(folder / "train"), "--epochs", "2", "--batch-size", "8",
               "--out", str(out), *TINY])
    assert rc == 0
    return out


def test_pretrain_writes_a_complete_run_folder(run):
    for f in ("config.yaml", "metrics.csv", "metrics.json", "backbone.pt",
              "checkpoints/last.pt"):
        assert (run / f).exists(), f
    m = json.loads((run / "metrics.json").read_text())
    assert m["stop_reason"] == "completed" and m["steps"] == 2 * (24 // 8)


def test_second_pretrain_into_same_folder_is_refused(run, folder, capsys):
    rc = main(["pretrain", "--method", "conclu", "--data", "folder", "--root", str(folder),
               "--out", str(run), *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and "--resume" in err and "Traceback" not in err


def test_eval_svm_json_has_protocol_fields_and_baseline(run, folder, capsys):
    rc = main(["eval", "svm", "--checkpoint", str(run / "backbone.pt"), "--data", "folder",
               "--root", str(folder), "--folds", "3", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n_train"] == 24 and res["n_test"] == 12
    assert 0 <= res["accuracy"] <= 1 and str(res["C"]) in res["cv_accuracy"]
    assert "accuracy" in res["random_init_baseline"]


def test_eval_svm_random_init_separates_easy_classes(folder, capsys):
    rc = main(["eval", "svm", "--backbone", "pointnet", "--random-init", "--data", "folder",
               "--root", str(folder), "--folds", "3", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert res["random_init"] is True and res["accuracy"] >= 0.9


def test_embed_writes_features(run, folder, tmp_path):
    out = tmp_path / "f.npz"
    assert main(["embed", "--checkpoint", str(run / "backbone.pt"), "--data", "folder",
                 "--root", str(folder), "--out", str(out)]) == 0
    z = np.load(out)
    assert z["train_features"].shape == (24, 1024) and z["test_features"].shape == (12, 1024)
    assert set(z["test_labels"].tolist()) == {0, 1}


def test_missing_checkpoint_is_one_line(folder, capsys):
    rc = main(["eval", "svm", "--checkpoint", "/nonexistent/backbone.pt", "--data", "folder",
               "--root", str(folder)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "/nonexistent/backbone.pt" in err[0]


def test_data_check_lists_every_bad_file(folder, tmp_path, capsys):
    assert main(["data", "check", str(folder)]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "ok.npy", np.zeros((10, 3), "f4"))
    np.save(bad / "nan.npy", np.full((10, 3), np.nan, "f4"))
    (bad / "cut.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 9\n")
    (bad / "x.foo").write_text("?")
    assert main(["data", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    for name in ("nan.npy", "cut.ply", "x.foo"):
        assert sum(name in line for line in out.splitlines()) == 1
    assert "ok.npy" not in out


def test_unknown_method_and_bad_override_are_one_line(folder, tmp_path, capsys):
    assert main(["pretrain", "--method", "nope", "--data", "folder", "--root", str(folder),
                 "--out", str(tmp_path / "x")]) == 2
    assert main(["pretrain", "--method", "conclu", "--data", "folder", "--root", str(folder),
                 "--out", str(tmp_path / "y"), "--set", "tau=abc"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "tau=abc" in err and "Traceback" not in err


def test_eval_fewshot_json_reports_episodes_and_twin(run, folder, capsys):
    rc = main(["eval", "fewshot", "--checkpoint", str(run / "backbone.pt"), "--data", "folder",
               "--root", str(folder), "--way", "2", "--shot", "3", "--query", "4",
               "--episodes", "2", "--json"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)
    assert (res["way"], res["shot"], res["query"], res["episodes"]) == (2, 3, 4, 2)
    assert len(res["per_episode"]) == 2 and 0 <= res["mean"] <= 1
    assert len(res["random_init_baseline"]["per_episode"]) == 2


def test_folder_without_split_needs_holdout_and_records_it(folder, capsys):
    flat = folder / "train"  # <class>/*.npy: no train/test split
    assert main(["eval", "svm", "--backbone", "pointnet", "--random-init", "--data", "folder",
                 "--root", str(flat), "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--holdout" in err[0]
    assert main(["eval", "svm", "--backbone", "pointnet", "--random-init", "--data", "folder",
                 "--root", str(flat), "--holdout", "0.25", "--folds", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["split"] == {"holdout": 0.25, "seed": 0}
    assert (res["n_train"], res["n_test"]) == (18, 6)  # 3 of each class's 12 held out


def test_test_split_linked_to_train_is_refused(folder, tmp_path, capsys):
    leak = tmp_path / "leak"
    leak.mkdir()
    (leak / "train").symlink_to(folder / "train")
    (leak / "test").symlink_to(folder / "train")
    rc = main(["eval", "svm", "--backbone", "pointnet", "--random-init", "--data", "folder",
               "--root", str(leak), "--json"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert rc == 2 and len(err) == 1 and "never tests on its training data" in err[0]
    assert "24 test cloud(s) are also in train" in err[0]


def test_set_reaches_the_backbone_and_is_recorded(folder, tmp_path, capsys):
    out = tmp_path / "plain"
    assert main(["pretrain", "--method", "conclu", "--data", "folder", "--root", str(folder),
                 "--epochs", "1", "--batch-size", "8", "--out", str(out), *TINY,
                 "--set", "tnet=false"]) == 0
    from pointssl import api

    bb = api.load_backbone(out / "backbone.pt")
    assert bb.config["tnet"] is False and bb.tnet is None
    capsys.readouterr()
    rc = main(["eval", "svm", "--checkpoint", str(out / "backbone.pt"), "--set", "tnet=true",
               "--data", "folder", "--root", str(folder)])
    assert rc == 2 and "--checkpoint" in capsys.readouterr().err


def test_num_workers_is_auto_by_default_or_a_count():
    from pointssl.cli import build_parser

    base = ["pretrain", "--method", "conclu", "--data", "folder", "--out", "o"]
    assert build_parser().parse_args(base).num_workers == "auto"
    assert build_parser().parse_args([*base, "--num-workers", "3"]).num_workers == 3
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--num-workers", "-1"])
