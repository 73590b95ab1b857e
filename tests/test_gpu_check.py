"""`make gpu-check` on a machine without CUDA says it needs one and exits 0 without running anything
(CI never has a GPU); its job runner itself is checked on the CPU by `bench/gpu_check.py --cpu-smoke`."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_without_cuda_says_so_and_exits_0():
    p = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py")], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stderr
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert last["gpu_check"] == "skipped" and "CUDA" in last["reason"]
