import os
from pathlib import Path

import pytest
import torch

# The suite's tensors are tiny: a second intra-op thread only adds OpenMP barrier waits, which
# grow 10-20x on a shared, oversubscribed CPU. OMP_NUM_THREADS overrides.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))

DATA = Path(os.environ.get("POINTSSL_DATA",
                           Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_path(*parts) -> Path:
    """A path under the shared real-data folder; the test skips when it is absent."""
    p = DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not present: {p} (set POINTSSL_DATA)")
    return p


@pytest.fixture
def modelnet40_root() -> Path:
    return shared_path("modelnet40_1024")
