"""Pre-train on a list of numpy arrays, then judge the features with the linear-SVM protocol
beside the random-init twin of the same architecture.

    python examples/pretrain_on_arrays.py [RUN_FOLDER] [EPOCHS]

Sized to finish in well under a minute on a laptop CPU; for real use raise the epochs and
points and drop the small-head overrides (the paper's values are the defaults).
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

import pointssl
from pointssl.data.synthetic import load_synthetic

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "run"
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 2

# Your unlabeled scans as a list of (N_i, 3) arrays; here 8 shapes per class of the built-in
# synthetic collection, labels dropped.
train = load_synthetic("train", num_points=512, shapes_per_class=8)
clouds = [np.asarray(p) for p in train.points]

method = pointssl.build_method("conclu", "pointnet", num_points=256, batch_size=16,
                               proj_hidden=128, proj_dim=64, pred_hidden=32)
metrics = pointssl.pretrain(method, clouds, out, epochs=epochs, progress=False)
print(f"pre-trained {metrics['steps']} steps -> {out / 'backbone.pt'}")

test = load_synthetic("test", num_points=512, shapes_per_class=4)
res = pointssl.linear_svm(out / "backbone.pt", train, test, folds=3, Cs=[0.01, 0.1])
print(f"linear SVM: pre-trained {100 * res['accuracy']:.1f}%  "
      f"random init {100 * res['random_init_baseline']['accuracy']:.1f}%")
