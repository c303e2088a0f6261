import os
from pathlib import Path

import pytest
import torch

# OMP_NUM_THREADS wins when set; else at most 2 threads (the machine's size)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))

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
