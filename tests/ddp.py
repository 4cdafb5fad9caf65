"""Run an example script under ``torch.distributed.run`` with 2 gloo ranks on this machine (loopback only)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def torchrun(script: Path, args: list[str], *, timeout: float) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 script args`` on loopback, one thread per rank; fails with both logs."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2"]
    # the rendezvous store listens on a port the OS assigns (0) and hands it to the ranks: no port is picked
    # beforehand, so tests running in parallel can never race for one (what --standalone does, on 127.0.0.1)
    cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0", "--rdzv-id", uuid.uuid4().hex]
    cmd += [str(script), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
