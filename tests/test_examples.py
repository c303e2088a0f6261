"""Each one-file recipe in examples/ runs as a user would run it."""

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(*args, cwd=None) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                       env=env, cwd=cwd, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_every_example_is_tested():
    assert {p.name for p in EXAMPLES.glob("*.py")} == {
        "embed_your_points.py", "pretrain_on_arrays.py", "custom_backbone.py"}


def test_embed_your_points(tmp_path):
    out = _run(EXAMPLES / "embed_your_points.py", cwd=tmp_path)
    assert "global (3, 1024)" in out
    assert "cloud (500, 3) -> per-point (500, 320)" in out


def test_pretrain_on_arrays_then_svm(tmp_path):
    out = _run(EXAMPLES / "pretrain_on_arrays.py", tmp_path / "run", 1, cwd=tmp_path)
    assert (tmp_path / "run" / "backbone.pt").is_file()
    assert "linear SVM: pre-trained" in out and "random init" in out


def test_custom_backbone_trains_with_a_registered_method(tmp_path):
    out = _run(EXAMPLES / "custom_backbone.py", cwd=tmp_path)
    assert "embed: (3, 64)" in out and "dense: (4, 64) (4, 128, 64)" in out
    assert "pre-trained 2 steps; exported: tiny_mlp" in out
