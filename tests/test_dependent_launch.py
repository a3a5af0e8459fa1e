"""Programmatic dependent launch (launch_dependent in cuda/launch_common.cuh): on Hopper the depthwise kernels start
while the kernel before them on the stream drains, and each must wait (pdl_wait) before it reads or writes memory.

On a GPU, for each depthwise path the suite's layer takes (NCDHW 16-bit tensor-core stencil and grad-weight with its
split reduction; NCDHW float32 streaming stencil and grad-weight with its reduction; channels-last 16-bit TMA stencil; channels-last float32 and 16-bit FFMA grad-weight with its
reduction; channels-last float32 FFMA stencil): a chain in which every kernel reads what the one before it wrote,
y = conv(x), dx = grad_input(dy = y), dw = grad_weight(x, dy = y), three times over on one stream with no
synchronisation, into NaN-poisoned outputs and workspaces. The results must equal, bitwise, the same chain with
JAXCONV3D_NO_PDL set (ordinary launches), and float64 references. What it is for: results that stay exact and
deterministic with the kernels launched as dependents. What it does not see: a missing wait. The stencils release
their dependents only at their very end, and the grad-weight kernels just before their partial sums' few stores,
while a dependent grid starts only once every producer block has released: the window is shorter than the
dependent's launch. GPU mutations Q1 (the tensor-core stencil without its wait) and Q2 (the channels-last
grad-weight's reduction without its wait) both survived it (docs/perf.md v25, v26)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.dlpack import to_dlpack

from helpers import BOUNDS, assert_close, stencil_case
from jaxconv3d import _ext
from jaxconv3d.reference import reference_and_grads

CL = torch.channels_last_3d
CASE = ((4, 64, 16, 28, 28), (64, 1, 3, 3, 3), dict(padding=1, groups=64))
BAND = ("depthwise3_ndhwc_band_tma", "depthwise3_ndhwc_band_tma_flipped", "depthwise3_ndhwc_staged_27sums")
TILES = {  # what Hopper runs for each (dtype, layout): the chain must reach the dependent launches
    ("bfloat16", 0): ("stencil_3x3x3_mma", "stencil_3x3x3_mma", "wgrad_depthwise_3x3x3_mma"),
    ("float32", 0): ("stencil_3x3x3_stream", "stencil_3x3x3_stream", "wgrad_depthwise_3x3x3_stream"),
    ("bfloat16", 1): BAND,
    ("float16", 1): BAND,
    ("float32", 1): ("depthwise3_ndhwc_staged", "depthwise3_ndhwc_staged_flipped", "depthwise3_ndhwc_staged_27sums"),
}


def _chain(c, layout, x, w, b, rounds=3):
    """y, dx, dw of the last of `rounds` chains, launched back to back without synchronising."""
    fmt = CL if layout else torch.contiguous_format

    def nan(shape):
        return torch.full(shape, float("nan"), dtype=c.tdt, device="cuda").contiguous(memory_format=fmt)

    for _ in range(rounds):
        y, dx, dw = nan(c.cfg.y_shape), nan(c.cfg.x_shape), nan(c.cfg.w_shape)
        ws = torch.full((max(1, c.plans["grad_weight"]["workspace_bytes"]),), 255, dtype=torch.uint8, device="cuda")
        _ext.torch_adapter.fwd(to_dlpack(x), to_dlpack(w), None if b is None else to_dlpack(b), to_dlpack(y), None,
                               *c.attrs)
        _ext.torch_adapter.dgrad(to_dlpack(y), to_dlpack(w), to_dlpack(dx), None, *c.attrs)
        _ext.torch_adapter.wgrad(to_dlpack(x), to_dlpack(y), to_dlpack(dw), to_dlpack(ws), *c.attrs)
    torch.cuda.synchronize()
    return y, dx, dw


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,layout", list(TILES))
def test_dependent_kernels_wait_for_their_producers(rng, monkeypatch, dtype, layout):
    c = stencil_case(rng, (0, CASE), dtype, 0, layout)  # index 0: with bias
    if torch.cuda.get_device_capability() == (9, 0):
        assert tuple(c.plans[op]["tile"] for op in ("forward", "grad_input", "grad_weight")) == TILES[dtype, layout]
    fmt = CL if layout else torch.contiguous_format
    dev = lambda t: t.to("cuda", c.tdt).contiguous(memory_format=fmt)  # noqa: E731
    # x and w scaled by 2^-3 (exact): grad-weight's centre tap sums w x^2 over 50 k positions, past float16's range
    xs, ws = c.x * 0.125, c.w * 0.125
    x, w, b = dev(xs), dev(ws), c.b.to("cuda", c.tdt)
    monkeypatch.delenv("JAXCONV3D_NO_PDL", raising=False)
    dependent = _chain(c, layout, x, w, b)
    monkeypatch.setenv("JAXCONV3D_NO_PDL", "1")
    ordinary = _chain(c, layout, x, w, b)
    for name, a, o in zip(("forward", "grad-input", "grad-weight"), dependent, ordinary):
        assert torch.equal(a.float().nan_to_num(7.0), o.float().nan_to_num(7.0)), f"{name} {dtype}: launches differ"
    y = dependent[0].double().cpu()
    ref = reference_and_grads(xs, ws, c.b, y, **c.kw)  # dy := our y, as the chain used it
    for name, out, r in zip(("forward", "grad-input", "grad-weight"), dependent, ref):
        assert_close(out, r, BOUNDS[dtype], f"{name} {dtype} layout {layout}")
