import os
import platform
import subprocess
import sys

import pytest
import torch

from pointssl.errors import PointSSLError
from pointssl.utils import resolve_device

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

_PROBE = """
from pointssl.utils import resolve_device
from pointssl.utils.device import tune_cpu_allocator
resolve_device("cpu")
print(int(tune_cpu_allocator()))
"""


def _probe(**env) -> str:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="the allocator tuning is glibc's mallopt")
def test_choosing_the_cpu_tunes_the_allocator_unless_switched_off():
    assert _probe() == "1"
    assert _probe(POINTSSL_MALLOC_TUNING="0") == "0"


def test_resolve_device_refuses_cuda_without_cuda_and_unknown_names():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(PointSSLError, match="unknown device"):
        resolve_device("tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(PointSSLError, match="CUDA is not available"):
            resolve_device("cuda")
