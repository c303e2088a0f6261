"""What every benchmark script shares: each configuration measured in a fresh child process
(its own peak memory, no state carried between rows), re-running the script with --child."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def add_child_args(ap) -> None:
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    ap.add_argument("--out", help="write the rows as JSON here (atomic)")
    ap.add_argument("--child", help=argparse.SUPPRESS)


def run_child(script: str, spec: dict, env: dict, timeout: float) -> dict:
    """The row ``script --child SPEC`` prints last, or ``spec`` with an ``error``."""
    cmd = [sys.executable, os.path.abspath(script), "--child", json.dumps(spec)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timeout after {timeout:.0f} s"}
    if p.returncode:
        err = p.stderr.strip().splitlines() or [f"exit {p.returncode}"]
        return {**spec, "error": err[-1][:200]}
    return json.loads(p.stdout.strip().splitlines()[-1])
