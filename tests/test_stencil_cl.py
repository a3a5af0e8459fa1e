"""The stencil family (cuda/stencil/): forward, grad-input and grad-weight of 3x3x3 stride-1 dilation-1 depthwise
layers of channel multiplier 1, read and written channels-last (NDHWC activations, a (C, 3, 3, 3, 1) filter) with
no layout transposes.

Anywhere: the rule table gives it exactly those problems when the caller holds channels-last tensors, never NCDHW
ones, float64 or anything strided, dilated, wider, more padded or with a channel multiplier. On a GPU: all three
operations straight through the DLPack adapter into NaN-poisoned channels_last_3d outputs (an unwritten element
shows; grad-weight's workspace poisoned too), every dtype it takes, against float64 F.conv3d and autograd from the
raw arguments. The cases cut the block's 32 / 64 channels, 4 H rows and 4 / 7 / 8 W outputs at every edge, run the
three copy widths (16-byte and 4-byte cp.async, 16-bit element copies for an odd C), put several column segments in
one block and use padding 0 to 2 (asymmetric too), bias and one output position; on Hopper, 16-bit tensors with C
a multiple of 16 run the tensor-core forward and grad-input (its 16-channel groups, 16 x 16 windows cut at every
edge: H 5..35, W 5..66, up to five W strips), and an off-alignment view the FFMA kernel; the fronts (torch channels_last_3d, JAX layout="NDHWC") run a whole
training step bitwise alike, twice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.dlpack import to_dlpack

import jaxconv3d
from helpers import BOUNDS, STENCIL_PRECISIONS, TORCH_DTYPES, assert_close, stencil_case
from jaxconv3d import _ext, _plan, conv_config
from jaxconv3d.reference import reference_and_grads

CL = torch.channels_last_3d
OPS = ("forward", "grad_input", "grad_weight")
TILES = ("depthwise3_ndhwc_staged", "depthwise3_ndhwc_staged_flipped", "depthwise3_ndhwc_staged_27sums")
OURS = ("stencil",) * 3


def families(x_shape, w_shape, kw, dtype="float32", layout=1, cc=90):
    cfg = conv_config(x_shape, w_shape, None, **kw)
    return tuple(_plan.plan(cfg, dtype, cc, op, layout)["family"] for op in OPS)


def test_rules_take_channels_last_depthwise_3x3x3_only():
    suite = ((8, 192, 16, 28, 28), (192, 1, 3, 3, 3), dict(padding=1, groups=192))
    for cc in (80, 86, 90):
        for dtype in ("float32", "bfloat16", "float16"):
            assert families(*suite, dtype=dtype, cc=cc) == OURS
        assert "stencil" not in families(*suite, cc=cc, layout=0)  # NCDHW holders keep the sm80 stencils
    cfg = conv_config(*suite[:2], None, **suite[2])
    assert [_plan.plan(cfg, "float32", 90, op, 1)["tile"] for op in OPS] == list(TILES)
    assert [_plan.plan(cfg, "float32", 90, op, 1)["workspace_bytes"] for op in OPS[:2]] == [0, 0]
    # grad-weight's partial sums: a float per (channel group, block, tap, channel); ~640 blocks in all (float32)
    assert 0 < _plan.plan(cfg, "float32", 90, "grad_weight", 1)["workspace_bytes"] <= 4 * 27 * 32 * (640 + 6)
    # on Hopper, 16-bit tensors whose channels come in whole groups of 16 take the tensor-core forward and grad-input
    band = ("depthwise3_ndhwc_band_tma", "depthwise3_ndhwc_band_tma_flipped", TILES[2])
    for dtype in ("bfloat16", "float16"):
        assert [_plan.plan(cfg, dtype, 90, op, 1)["tile"] for op in OPS] == list(band)
        assert [_plan.plan(cfg, dtype, 80, op, 1)["tile"] for op in OPS] == list(TILES)  # TMA: Hopper only
        odd = conv_config((2, 24, 9, 9, 9), (24, 1, 3, 3, 3), None, padding=1, groups=24)
        assert [_plan.plan(odd, dtype, 90, op, 1)["tile"] for op in OPS] == list(TILES)
    assert families(*suite, dtype="float64") == ("sm80",) * 3
    assert families(*suite, cc=0) == ("cpu",) * 3
    x, w = (2, 8, 9, 9, 9), (8, 1, 3, 3, 3)
    assert families(x, w, dict(padding=((0, 2), (2, 1), (1, 0)), groups=8)) == OURS
    for kw in (dict(padding=1, groups=8, stride=2), dict(padding=1, groups=8, dilation=2), dict(padding=3, groups=8)):
        assert "stencil" not in families(x, w, kw)
    assert "stencil" not in families(x, (16, 1, 3, 3, 3), dict(padding=1, groups=8))  # channel multiplier 2
    assert "stencil" not in families(x, (8, 1, 3, 3, 5), dict(padding=1, groups=8))  # not 3x3x3
    assert "stencil" not in families(x, (8, 8, 3, 3, 3), dict(padding=1))  # dense
    # the JAX front's layout="NDHWC" (x NDHWC, w DHWIO) asks for the same family
    jax_cl = jaxconv3d.explain((2, 9, 9, 9, 8), (3, 3, 3, 1, 8), padding=1, groups=8, layout="NDHWC", cc=90)
    assert tuple(jax_cl[op]["family"] for op in OPS) == OURS


CASES = [  # (x_shape, w_shape, kw): channel multiplier 1 throughout
    ((2, 3, 17, 9, 19), (3, 1, 3, 3, 3), dict(padding=1, groups=3)),  # 3 of 32 lanes; W cut 8 + 8 + 3
    ((1, 40, 6, 7, 8), (40, 1, 3, 3, 3), dict(padding=0, groups=40)),  # two channel groups, 40 = 32 + 8
    ((2, 5, 5, 7, 9), (5, 1, 3, 3, 3), dict(padding=((0, 2), (2, 1), (1, 2)), groups=5)),  # asymmetric
    ((1, 33, 3, 3, 3), (33, 1, 3, 3, 3), dict(padding=0, groups=33)),  # one output position
    ((3, 64, 12, 10, 30), (64, 1, 3, 3, 3), dict(padding="same", groups=64)),  # H cut 4 + 4 + 2
    ((1, 8, 35, 6, 5), (8, 1, 3, 3, 3), dict(padding=1, groups=8)),  # a long column, shared by blocks
    ((4, 16, 10, 13, 11), (16, 1, 3, 3, 3), dict(padding=2, groups=16)),  # padding 2: grad-input pad' = 0
    ((9, 32, 5, 17, 9), (32, 1, 3, 3, 3), dict(padding=(0, 1, 2), groups=32)),  # mixed padding, batch 9
    ((2, 10, 9, 11, 13), (10, 1, 3, 3, 3), dict(padding=1, groups=10)),  # 16-bit pairs in 4-byte copies
    ((16, 6, 20, 9, 14), (6, 1, 3, 3, 3), dict(padding=1, groups=6)),  # blocks of several column segments
    ((2, 32, 7, 21, 37), (32, 1, 3, 3, 3), dict(padding=((1, 1), (0, 2), (2, 0)), groups=32)),  # H cut 4 x 5 + 1
    ((1, 48, 20, 35, 9), (48, 1, 3, 3, 3), dict(padding=1, groups=48)),  # 48 = 32 + 16 channels, 20 planes
    ((3, 16, 4, 5, 66), (16, 1, 3, 3, 3), dict(padding=0, groups=16)),  # two output planes, W 64 = 8 x 8
    ((2, 16, 5, 10, 28), (16, 1, 3, 3, 3), dict(padding=1, groups=16)),  # H cut 4 + 4 + 2, W 28 = 7 x 4
    ((1, 56, 9, 5, 29), (56, 1, 3, 3, 3), dict(padding=((1, 1), (0, 2), (0, 0)), groups=56)),  # 56 = 32 + 24
    ((6, 8, 20, 4, 28), (8, 1, 3, 3, 3), dict(padding=1, groups=8)),  # 8 channels, blocks of several columns
    ((2, 24, 7, 11, 19), (24, 1, 3, 3, 3), dict(padding=(2, 0, 1), groups=24)),  # mixed padding, 24 channels
]


@pytest.mark.gpu
@STENCIL_PRECISIONS
@pytest.mark.parametrize("case", range(len(CASES)))
def test_stencil_against_float64(rng, case, dtype, math):
    c = stencil_case(rng, (case, CASES[case]), dtype, math, 1)
    cfg, tdt, x, w, dy, b = c.cfg, c.tdt, c.x, c.w, c.dy, c.b
    assert tuple(c.plans[op]["family"] for op in OPS) == OURS and c.plans["forward"]["layout"] == "NDHWC"
    dev = lambda t: t.to("cuda", tdt).contiguous(memory_format=CL)  # noqa: E731
    nan = lambda shape: torch.full(shape, float("nan"), dtype=tdt, device="cuda").contiguous(memory_format=CL)  # noqa
    attrs = c.attrs
    y, dx = nan(cfg.y_shape), nan(cfg.x_shape)
    _ext.torch_adapter.fwd(to_dlpack(dev(x)), to_dlpack(dev(w)), None if b is None else to_dlpack(b.to("cuda", tdt)),
                           to_dlpack(y), None, *attrs)
    _ext.torch_adapter.dgrad(to_dlpack(dev(dy)), to_dlpack(dev(w)), to_dlpack(dx), None, *attrs)
    dw = nan(cfg.w_shape)
    ws = torch.full((c.plans["grad_weight"]["workspace_bytes"],), 255, dtype=torch.uint8, device="cuda")
    _ext.torch_adapter.wgrad(to_dlpack(dev(x)), to_dlpack(dev(dy)), to_dlpack(dw), to_dlpack(ws), *attrs)
    ref = reference_and_grads(x, w, b, dy, **c.kw)
    bound = BOUNDS[dtype]  # FFMA in every mode: tf32 math is held to float32's bound
    assert_close(y, ref[0], bound, f"forward {CASES[case]} {dtype}")
    assert_close(dx, ref[1], bound, f"grad-input {CASES[case]} {dtype}")
    assert_close(dw, ref[2], bound, f"grad-weight {CASES[case]} {dtype}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_band_falls_back_off_alignment(rng, dtype):
    """The tensor-core forward and grad-input load and store through TMA, which needs 16-byte aligned tensors: x, dy,
    y and dx one element off (channels_last_3d views into a larger buffer) run the FFMA kernels instead; against
    float64, outputs NaN-poisoned."""
    index = 4  # C 64: the tensor-core kernel on Hopper when aligned
    c = stencil_case(rng, (index, CASES[index]), dtype, 0, 1)
    if torch.cuda.get_device_capability() == (9, 0):
        assert c.plans["forward"]["tile"] == "depthwise3_ndhwc_band_tma"

    def off_by_one(shape, src=None):  # a channels_last_3d view one element into its buffer: 2-byte aligned only
        n, ch, d, h, w = shape
        buf = torch.empty(n * ch * d * h * w + 1, dtype=c.tdt, device="cuda")
        view = buf[1:].view(n, d, h, w, ch).permute(0, 4, 1, 2, 3)
        assert view.is_contiguous(memory_format=CL) and view.data_ptr() % 16 != 0
        view.copy_(src) if src is not None else view.fill_(float("nan"))
        return view

    x, dy = off_by_one(c.cfg.x_shape, c.x.to(c.tdt)), off_by_one(c.cfg.y_shape, c.dy.to(c.tdt))
    w = c.w.to("cuda", c.tdt).contiguous(memory_format=CL)
    y, dx = off_by_one(c.cfg.y_shape), off_by_one(c.cfg.x_shape)
    _ext.torch_adapter.fwd(to_dlpack(x), to_dlpack(w), None if c.b is None else to_dlpack(c.b.to("cuda", c.tdt)),
                           to_dlpack(y), None, *c.attrs)
    _ext.torch_adapter.dgrad(to_dlpack(dy), to_dlpack(w), to_dlpack(dx), None, *c.attrs)
    ref = reference_and_grads(c.x, c.w, c.b, c.dy, **c.kw)
    assert_close(y, ref[0], BOUNDS[dtype], f"forward off alignment {dtype}")
    assert_close(dx, ref[1], BOUNDS[dtype], f"grad-input off alignment {dtype}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fronts_run_it_bitwise_alike_and_deterministically(rng, dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    import jax

    import jaxconv3d.torch as jt

    x_shape, w_shape, kw = (2, 48, 9, 11, 13), (48, 1, 3, 3, 3), dict(padding=1, groups=48)
    tdt = TORCH_DTYPES[dtype]
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    dy = rng.standard_normal((2, 48, 9, 11, 13)).astype(np.float32)
    runs = []
    for _ in range(2):
        xt = torch.as_tensor(x).to("cuda", tdt).contiguous(memory_format=CL).requires_grad_(True)
        wt = torch.as_tensor(w).to("cuda", tdt).contiguous(memory_format=CL).requires_grad_(True)
        y = jt.conv3d(xt, wt, **kw)
        assert y.is_contiguous(memory_format=CL)
        dx, dw = torch.autograd.grad(y, (xt, wt), torch.as_tensor(dy).to("cuda", tdt).contiguous(memory_format=CL))
        runs.append([t.detach().float().cpu().numpy() for t in (y, dx, dw)])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    jdt = jax.numpy.dtype(dtype)
    xj = jax.numpy.moveaxis(jax.numpy.asarray(x, jdt), 1, -1)
    wj = jax.numpy.transpose(jax.numpy.asarray(w, jdt), (2, 3, 4, 1, 0))
    dyj = jax.numpy.moveaxis(jax.numpy.asarray(dy, jdt), 1, -1)
    yj, vjp = jax.vjp(lambda a, b: jaxconv3d.conv3d(a, b, layout="NDHWC", **kw), xj, wj)
    dxj, dwj = vjp(dyj)
    as_np = lambda a: np.asarray(a.astype(jax.numpy.float32))  # noqa: E731
    np.testing.assert_array_equal(runs[0][0], np.moveaxis(as_np(yj), -1, 1))
    np.testing.assert_array_equal(runs[0][1], np.moveaxis(as_np(dxj), -1, 1))
    np.testing.assert_array_equal(runs[0][2], np.transpose(as_np(dwj), (4, 3, 0, 1, 2)))
