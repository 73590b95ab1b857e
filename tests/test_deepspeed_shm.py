"""A CPU DeepSpeed launch leaves nothing in /dev/shm. DeepSpeed's CPU communication op creates a
66 MB /dev/shm/deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank> per rank when every rank is
local (the launcher sets LOCAL_SIZE) and never removes it: every training run on CPU left one per
rank behind. training.trainer.setup_distributed removes the names once every rank has mapped them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.services import free_port

REPO = Path(__file__).resolve().parents[1]

RANK = """
import os, torch, torch.distributed as dist
from training.trainer import start
d = start()
t = torch.ones(1)
dist.all_reduce(t)  # the ranks still talk after the names are gone
assert t.item() == dist.get_world_size(), t
os.write(1, f"RANK {d.rank} OK\\n".encode())  # one write: print()'s pieces of two ranks interleave
"""


@pytest.mark.timeout(600)
def test_a_cpu_deepspeed_launch_leaves_no_shared_memory_buffer(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm on this system")
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "LOCAL_SIZE": "2"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    launcher = str(Path(sys.executable).parent / "deepspeed")
    done = subprocess.run([launcher, "--num_gpus", "2", "--master_port", str(port), str(script)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=540)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "RANK 0 OK" in out and "RANK 1 OK" in out, out[-3000:]
    assert "deepspeed_shm_comm" in out or "ShareMemComm" in out, out[-3000:]  # the op that makes the buffers ran
    left = sorted(p.name for p in shm.glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    for name in left:  # the test's own mess, whatever the outcome
        (shm / name).unlink()
    assert left == []
