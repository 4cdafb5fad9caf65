"""Run a hostile-input check in a fresh interpreter under a memory cap: torch and the package imported first, then
the address space limited (RLIMIT_AS) to what they take plus a few hundred MiB, less than any bomb asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_PRELUDE = r"""
import json, resource, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(1)
import slowfast_zoo
{imports}

def vm_bytes():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))

cap = vm_bytes() + ({headroom_mib} << 20)  # everything imported; then this much more address space
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
"""


def run_capped(body: str, args: list[str], *, headroom_mib: int, imports: str = "") -> Any:
    """Run ``body`` (after ``imports`` and the cap) with ``args`` in ``sys.argv[1:]``; it prints its result as JSON on
    its last line, which is returned. The child sees only this checkout's package and one thread."""
    script = _PRELUDE.format(imports=imports, headroom_mib=headroom_mib) + body
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])
