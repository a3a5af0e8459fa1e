"""PyTorch DistributedDataParallel on the CPU (gloo, 2 processes on localhost): a small 3D CNN of jaxconv3d.torch
layers trains to the same weights as the same model of nn.Conv3d / nn.ConvTranspose3d layers, within the float32
tolerance, and both ranks end with identical weights. (The NCCL variant on 2 GPUs is a GPU test.)"""

from __future__ import annotations

import copy
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import jaxconv3d.torch as jt

STEPS = 4


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Conv3d(2, 8, 3, stride=2, padding=1)
        self.mid = nn.Conv3d(8, 8, 3, padding=1, groups=2)
        self.up = nn.ConvTranspose3d(8, 4, 2, stride=2)
        self.head = nn.Conv3d(4, 1, 1)

    def forward(self, x):
        return self.head(torch.relu(self.up(torch.relu(self.mid(torch.relu(self.down(x)))))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        ref = Net()
        ours = jt.convert_conv3d(copy.deepcopy(ref))
        assert isinstance(ours.up, jt.ConvTranspose3d) and isinstance(ours.down, jt.Conv3d)
        models = [nn.parallel.DistributedDataParallel(m) for m in (ref, ours)]
        opts = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in models]
        gen = torch.Generator().manual_seed(1)
        for _ in range(STEPS):
            x = torch.randn(2 * world, 2, 8, 8, 8, generator=gen)[2 * rank : 2 * rank + 2]  # this rank's shard
            target = torch.randn(2 * world, 1, 8, 8, 8, generator=gen)[2 * rank : 2 * rank + 2]
            for model, opt in zip(models, opts):
                opt.zero_grad()
                F.mse_loss(model(x), target).backward()
                opt.step()
        state = {name: [p.detach().clone() for p in m.module.parameters()] for name, m in zip(("ref", "ours"), models)}
        torch.save(state, f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed gloo")
def test_ddp_gloo_two_processes_match_nn_conv3d(tmp_path):
    world = 2
    out = str(tmp_path / "weights")
    mp.spawn(_worker, args=(world, _free_port(), out), nprocs=world, join=True)
    states = [torch.load(f"{out}.{r}") for r in range(world)]
    for ref_w, ours_w in zip(states[0]["ref"], states[0]["ours"]):
        assert torch.allclose(ours_w, ref_w, rtol=1e-4, atol=1e-5), (ours_w - ref_w).abs().max()
    for a, b in zip(states[0]["ours"], states[1]["ours"]):  # DDP keeps the replicas in step
        assert torch.equal(a, b)
    torch.manual_seed(0)
    initial = [p.detach() for p in Net().parameters()]  # the workers' initial weights: training moved them
    assert all(not torch.allclose(a, b) for a, b in zip(states[0]["ours"], initial))
