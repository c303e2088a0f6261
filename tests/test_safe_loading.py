"""Files never run code: a crafted pickle payload in every file type pointssl loads is refused
with one line naming the file, and its command never runs."""

import os
import pickle

import numpy as np
import pytest
import torch

from pointssl.errors import PointSSLError


class Payload:
    """Unpickling this runs ``touch MARKER``: what a malicious shared file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "the payload's command ran"


def _one_line(err: Exception, path) -> str:
    text = str(err)
    assert "\n" not in text and str(path) in text
    return text


def test_payload_really_runs_when_unpickled(tmp_path):
    """The fixture's payload is live (so the refusals below are meaningful)."""
    m = tmp_path / "ran"
    pickle.loads(pickle.dumps(Payload(m)))
    assert m.exists()


def _crafted_pt(path, marker, **extra):
    torch.save({"format": "pointssl-backbone/1", "backbone": "pointnet", "config": {},
                "state_dict": {}, "meta": {"x": Payload(marker)}, **extra}, path)
    return path


def test_crafted_backbone_export_is_refused(tmp_path, marker):
    from pointssl import api
    from pointssl.backbones import load_backbone

    p = _crafted_pt(tmp_path / "backbone.pt", marker)
    for load in (load_backbone, api.load_backbone, api.embed):
        args = (p,) if load is not api.embed else (p, [np.zeros((8, 3), "f4")])
        with pytest.raises(PointSSLError) as e:
            load(*args)
        assert "could run code" in _one_line(e.value, p)


def test_crafted_training_checkpoint_is_refused_by_every_reader(tmp_path, marker):
    from pointssl.engine.state import TrainState
    from pointssl.methods import load_method
    from pointssl.viz.gmm import viz_gmm_from_checkpoint

    p = _crafted_pt(tmp_path / "last.pt", marker, model=Payload(marker))
    readers = (TrainState.read, load_method,
               lambda q: viz_gmm_from_checkpoint(q, np.zeros((16, 3), "f4"), tmp_path / "f"))
    for read in readers:
        with pytest.raises(PointSSLError) as e:
            read(p)
        _one_line(e.value, p)


def test_cli_eval_with_crafted_checkpoint_is_one_line(tmp_path, marker, capsys):
    from pointssl.cli import main

    p = _crafted_pt(tmp_path / "backbone.pt", marker)
    rc = main(["eval", "svm", "--checkpoint", str(p), "--data", "synthetic", "--root",
               str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and str(p) in err[0]


@pytest.mark.parametrize("ext", [".npy", ".npz"])
def test_crafted_numpy_cloud_is_refused(tmp_path, marker, ext):
    from pointssl.data.formats import read_cloud
    from pointssl.errors import DataError

    arr = np.array([Payload(marker)] * 3, dtype=object)
    p = tmp_path / f"cloud{ext}"
    if ext == ".npy":
        np.save(p, arr, allow_pickle=True)
    else:
        np.savez(p, points=arr)
    with pytest.raises(DataError) as e:
        read_cloud(p)
    _one_line(e.value, p)


def test_crafted_synthetic_cache_is_regenerated_not_run(tmp_path, marker, monkeypatch):
    from pointssl.data.synthetic import load_synthetic

    small = dict(num_points=64, shapes_per_class=1, seed=0)
    first = load_synthetic("train", cache_dir=tmp_path, **small)
    (entry,) = tmp_path.glob("*.npz")
    np.savez(entry, meta=np.array([Payload(marker)], dtype=object))  # poison it
    fresh = load_synthetic("train", cache_dir=tmp_path, **small)
    assert len(fresh) == len(first) and np.array_equal(fresh.points, first.points)
