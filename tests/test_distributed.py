"""torch.distributed: two CPU processes (gloo) train exactly like one process with the same
global batch, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import flowfit
from flowfit import datasets

STEPS, BATCH = 25, 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_once() -> torch.Tensor:
    torch.manual_seed(0)
    flow = flowfit.RealNVP(2, layers=2, hidden=(16,))
    data = datasets.moons(800, seed=0)
    # float32 products: bfloat16 ones round differently in a batch of 32 than in one of 64
    options = dict(steps=STEPS, batch_size=BATCH, lr=3e-3, seed=0, val_every=5, mixed_precision="off")
    flowfit.fit(flow, data, **options, progress=False)
    return torch.cat([p.detach().flatten() for p in flow.parameters()])


def worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.save(train_once(), os.path.join(out, f"rank{rank}.pt"))
        dist.barrier()  # both ranks done before either tears gloo down (a rank leaving first can abort the other)
    finally:
        dist.destroy_process_group()


def test_two_ranks_match_each_other_and_a_single_process(tmp_path) -> None:
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(rank0, rank1)
    single = train_once()
    torch.testing.assert_close(rank0, single, atol=1e-5, rtol=1e-4)


def test_torchrun_cli_writes_once(tmp_path) -> None:
    data = tmp_path / "data.csv"
    np.savetxt(data, datasets.moons(400, seed=0).numpy(), delimiter=",", header="a,b", comments="")
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port",
        str(free_port()),
        "-m",
        "flowfit",
        "train",
        "--data",
        str(data),
        "--layers",
        "2",
        "--hidden",
        "8",
        "--steps",
        "6",
        "--batch-size",
        "32",
        "--out",
        str(out),
        "--no-progress",
        "--no-plots",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("test NLL") == 1  # one summary: rank 0's
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert not (tmp_path / "run.partial").exists()
