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


# Shapes for the three forms of the layout kernel (cuda/layout_convert.cu): thin for fewer than 8 channels; chunked
# where C and D*H*W are whole 16-byte chunks (multiples of 8 elements of 2 bytes, 4 of 4, 2 of 8) and the tensors
# aligned, in whole tiles (64 x 64 elements of 2 bytes) or cut ones; element for the rest. 128^3 volumes: 2^21 rows
# of NDHWC -> NCDHW, past what a 2-D grid of 32-row tiles can address (65535 x 32).
LAYOUT_SHAPES = [
    (2, 3, 5, 7, 9),  # thin: a 3-channel first layer
    (5, 1, 2, 3, 4),  # thin, both axes short
    (1, 2, 128, 128, 128),  # thin, 2^21 positions
    (1, 64, 4, 33, 31),  # element: odd D*H*W
    (3, 40, 1, 1, 70),  # element for 2- and 4-byte, chunked for 8-byte
    (1, 9, 128, 128, 128),  # element, 2^21 rows
    (2, 64, 4, 8, 16),  # chunked, whole tiles
    (3, 32, 3, 5, 8),  # chunked, cut tiles both ways
    (2, 192, 2, 7, 8),  # chunked, three tiles of channels
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape", LAYOUT_SHAPES)
def test_layout_conversion_kernel_moves_channels_exactly(dtype, shape):
    """Both directions into NaN-poisoned outputs (an unwritten element fails torch.equal), bit for bit."""
    from jaxconv3d import _ext
    from jaxconv3d.torch import _ops

    x = torch.randn(shape, device="cuda").to(dtype)
    stream = _ops._stream(x)
    cl = torch.full_like(x, float("nan"), memory_format=torch.channels_last_3d)
    _ext.torch_adapter.convert_layout(_ops._cap(x), _ops._cap(cl), True, stream)  # contiguous -> channels_last_3d
    assert torch.equal(cl, x)
    back = torch.full_like(x, float("nan"), memory_format=torch.contiguous_format)
    _ext.torch_adapter.convert_layout(_ops._cap(cl), _ops._cap(back), False, stream)  # and back
    assert torch.equal(back, x)
    moved = _ops._moved_channels(x, True)  # the front's own entry
    assert moved.is_contiguous(memory_format=torch.channels_last_3d) and torch.equal(moved, x)
    short = torch.empty(1, 3, 1, 1, 1, device="cuda", dtype=dtype)  # channels-last compact, 3 elements
    with pytest.raises(ValueError, match="as many elements"):
        _ext.torch_adapter.convert_layout(_ops._cap(x), _ops._cap(short), True, stream)


def test_ncdhw_16bit_volume_of_2_21_positions():
    """A 128^3 NCDHW volume on a family that reads NDHWC: its output comes back through the layout kernel with 2^21
    rows (v31's kernel refused it: a 2-D grid of 32-row tiles stops at 65535 x 32 rows)."""
    from jaxconv3d import _plan, conv_config

    x = torch.randn(1, 16, 128, 128, 128, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(16, 16, 3, 3, 3, device="cuda") * 0.1).to(torch.bfloat16)
    cfg = conv_config(tuple(x.shape), tuple(w.shape), None, padding=1)
    if _plan.plan(cfg, x.dtype, _plan.cc_of(x.device), "forward", 0)["layout"] != "NDHWC":
        pytest.skip("this card's family reads NCDHW: no layout conversion to test")
    y = jt.conv3d(x, w, padding=1)
    assert y.is_contiguous()
    assert_close(y, F.conv3d(x.double(), w.double(), padding=1), 1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layout_conversion_of_unaligned_tensors(dtype):
    """Tensors 16-byte aligned nowhere (views one element into their storage) take the element form, exactly."""
    from jaxconv3d import _ext
    from jaxconv3d.torch import _ops

    shape = (2, 64, 4, 8, 16)
    n = torch.Size(shape).numel()
    x = torch.randn(n + 1, device="cuda").to(dtype)[1:].view(shape)
    out = torch.full((n + 1,), float("nan"), device="cuda", dtype=dtype)
    cl = out[1:].view(shape[0], *shape[2:], shape[1]).permute(0, 4, 1, 2, 3)  # channels_last_3d, offset by one
    assert cl.is_contiguous(memory_format=torch.channels_last_3d)
    _ext.torch_adapter.convert_layout(_ops._cap(x), _ops._cap(cl), True, _ops._stream(x))
    assert torch.equal(cl, x) and torch.isnan(out[0])
