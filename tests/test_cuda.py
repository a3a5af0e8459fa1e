"""CUDA-only behaviour of the torch front: streams, CUDA graphs, several devices, import order."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import jaxconv3d.torch as jt
from helpers import assert_close

pytestmark = pytest.mark.gpu


def test_non_default_stream():
    s = torch.cuda.Stream()
    w = torch.randn(8, 4, 3, 3, 3, device="cuda")
    with torch.cuda.stream(s):
        x = torch.randn(2, 4, 16, 16, 16, device="cuda")  # produced on s; our kernels must run after it on s
        x.requires_grad_(True)
        y = jt.conv3d(x, w, padding=1)
        (gx,) = torch.autograd.grad(y.square().sum(), x)
    s.synchronize()
    ref = F.conv3d(x.detach().double(), w.double(), padding=1)
    assert_close(y, ref, 1e-5)
    xr = x.detach().double().requires_grad_(True)
    (gref,) = torch.autograd.grad(F.conv3d(xr, w.double(), padding=1).square().sum(), xr)
    assert_close(gx, gref, 1e-5)


def test_cuda_graph_capture_forward_backward():
    torch.manual_seed(0)
    model = jt.Conv3d(4, 8, 3, padding=1, groups=2).cuda()
    static_x = torch.randn(2, 4, 12, 12, 12, device="cuda", requires_grad=True)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm up on a side stream, as torch's docs prescribe
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            model(static_x).square().sum().backward()
    torch.cuda.current_stream().wait_stream(s)
    model.zero_grad(set_to_none=True)
    static_x.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = model(static_x)
        static_y.square().sum().backward()
    for _ in range(2):  # replay with new data
        new_x = torch.randn_like(static_x)
        with torch.no_grad():
            static_x.copy_(new_x)
        model.weight.grad.zero_()
        static_x.grad.zero_()
        graph.replay()
        torch.cuda.synchronize()
        xr = new_x.double().requires_grad_(True)
        wr = model.weight.detach().double().requires_grad_(True)
        yr = F.conv3d(xr, wr, model.bias.detach().double(), padding=1, groups=2)
        gx, gw = torch.autograd.grad(yr.square().sum(), (xr, wr))
        assert_close(static_y, yr.detach(), 1e-5)
        assert_close(static_x.grad, gx, 1e-5)
        assert_close(model.weight.grad, gw, 1e-5)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device():
    x = torch.randn(2, 3, 8, 8, 8, device="cuda:1", requires_grad=True)
    w = torch.randn(4, 3, 3, 3, 3, device="cuda:1")
    with torch.cuda.device(0):  # the current device differs from the tensors' device
        y = jt.conv3d(x, w, padding=1)
        y.sum().backward()
    assert y.device == torch.device("cuda:1")
    assert_close(y, F.conv3d(x.detach().double(), w.double(), padding=1), 1e-5)


@pytest.mark.parametrize("first", ["jax", "torch"])
def test_both_import_orders(first):
    script = textwrap.dedent(
        f"""
        import os
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        if "{first}" == "jax":
            import jax, torch
        else:
            import torch, jax
        import numpy as np, jaxconv3d, jaxconv3d.torch as jt
        x = np.random.default_rng(0).standard_normal((1, 3, 8, 8, 8)).astype(np.float32)
        w = np.random.default_rng(1).standard_normal((4, 3, 3, 3, 3)).astype(np.float32)
        a = np.asarray(jaxconv3d.conv3d(jax.device_put(x, jax.devices("gpu")[0]), w))
        b = jt.conv3d(torch.tensor(x, device="cuda"), torch.tensor(w, device="cuda")).cpu().numpy()
        assert np.array_equal(a, b)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7, 9), (1, 64, 4, 33, 31), (3, 40, 1, 1, 70), (5, 1, 2, 3, 4)])
def test_layout_conversion_kernel_moves_channels_exactly(dtype, shape):
    from jaxconv3d import _ext
    from jaxconv3d.torch import _ops

    x = torch.randn(shape, device="cuda").to(dtype)
    cl = _ops._moved_channels(x, True)  # contiguous -> channels_last_3d
    assert cl.is_contiguous(memory_format=torch.channels_last_3d) and torch.equal(cl, x)
    back = _ops._moved_channels(cl, False)  # channels_last_3d -> contiguous
    assert torch.equal(back, x) and back.is_contiguous()
    short = torch.empty(1, 3, 1, 1, 1, device="cuda", dtype=dtype)  # channels-last compact, 3 elements
    with pytest.raises(ValueError, match="as many elements"):
        _ext.torch_adapter.convert_layout(_ops._cap(x), _ops._cap(short), True, _ops._stream(x))
