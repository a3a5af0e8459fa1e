"""The 3x3x3 depthwise kernels (sm80 `stencil_3x3x3_stream`, cuda/sm80/stencil3_stream.cu, for the forward and a
grad-input of channel multiplier 1; its tensor-core form `stencil_3x3x3_mma`, stencil3_mma.cu, for 16-bit tensors of
multiplier 1 whose source rows hold a multiple of 4 elements and output rows an even count; `stencil_3x3x3_regs`,
stencil3.cu, for a grad-input that sums several dy channels; `wgrad_depthwise_3x3x3_regs`, wgrad_dw3.cu, and in
float32 where x and dy have the same extents and the channel multiplier is 1 `wgrad_depthwise_3x3x3_stream`,
dw3_bwd_stream.cu): forward, grad-input and grad-weight of a stride-1, dilation-1, 3x3x3 depthwise layer (one input
channel per group, any channel multiplier).

Anywhere: which problems the rule table gives it (and which it leaves to the general stencil). On a GPU: the kernel
straight through the DLPack adapter into NaN-poisoned outputs (an unwritten element shows; grad-weight with a
garbage-filled workspace), every dtype it takes, against float64 F.conv3d and autograd from the raw arguments; the
cases cut the 8 x 16 x 32 output brick at every edge, the streaming kernels' 16-plane D chunks and strips (16 x 32;
float32 28 or 32 x 32), the tensor-core forms' 16 x 32 windows (15 x 32 for grad-weight) and warp runs of planes at
every edge, use padding 0 to 3 and asymmetric (the tensor-core form's window shift e = 0..3), channel multipliers
(grad-input sums several dy channels), bias, and one output position."""

from __future__ import annotations

import pytest
import torch
from torch.utils.dlpack import to_dlpack

import jaxconv3d
from helpers import BOUNDS, STENCIL_PRECISIONS, assert_close, stencil_case
from jaxconv3d import _ext, _plan, conv_config
from jaxconv3d.reference import reference_and_grads

TILE = "stencil_3x3x3_regs"
STREAM = "stencil_3x3x3_stream"
MMA = "stencil_3x3x3_mma"
WGRAD = "wgrad_depthwise_3x3x3_regs"
WGRAD_MMA = "wgrad_depthwise_3x3x3_mma"
WGRAD_STREAM = "wgrad_depthwise_3x3x3_stream"


@pytest.mark.parametrize(
    "x_shape,w_shape,kw,tiles",
    [
        ((8, 192, 16, 28, 28), (192, 1, 3, 3, 3), dict(padding=1, groups=192), (STREAM, STREAM)),  # the suite's
        ((2, 4, 9, 9, 9), (8, 1, 3, 3, 3), dict(padding="same", groups=4), (STREAM, TILE)),  # multiplier 2
        ((2, 4, 9, 9, 9), (4, 1, 3, 3, 3), dict(padding=1, groups=4, dilation=2), ("stencil", "stencil")),
        ((2, 4, 9, 9, 9), (4, 1, 3, 3, 3), dict(padding=1, groups=4, stride=2), ("gemm_ffma_128x16",) * 2),
        ((2, 4, 9, 9, 9), (4, 1, 3, 3, 5), dict(padding=1, groups=4), ("stencil", "stencil")),
        ((2, 4, 9, 9, 9), (4, 2, 3, 3, 3), dict(padding=1, groups=2), ("gemm_ffma_128x16", "stencil")),  # 2 a group
    ],
)
def test_rules(x_shape, w_shape, kw, tiles):
    for cc in (80, 90):
        a = jaxconv3d.explain(x_shape, w_shape, cc=cc, **kw)
        assert (a["forward"]["tile"], a["grad_input"]["tile"]) == tiles
        assert (a["grad_weight"]["tile"] in (WGRAD, WGRAD_STREAM)) == (tiles[0] == STREAM)
        if tiles[0] == STREAM:
            assert a["grad_weight"]["tile"] == expected_wgrad(WGRAD, x_shape, w_shape, kw, "float32")
    f64 = jaxconv3d.explain(x_shape, w_shape, dtype="float64", cc=90, **kw)
    assert not {TILE, STREAM, WGRAD} & {f64["forward"]["tile"], f64["grad_input"]["tile"], f64["grad_weight"]["tile"]}
    for dtype in ("bfloat16", "float16"):  # 16-bit: the tensor-core form where it applies
        h = jaxconv3d.explain(x_shape, w_shape, dtype=dtype, cc=90, **kw)
        assert (h["forward"]["tile"], h["grad_input"]["tile"]) == tuple(
            expected_tile(t, op, x_shape, w_shape, kw, dtype) for op, t in zip(("forward", "grad_input"), tiles))
        assert h["grad_weight"]["tile"] == expected_wgrad(a["grad_weight"]["tile"], x_shape, w_shape, kw, dtype)


def expected_wgrad(fp32_tile: str, x_shape, w_shape, kw, dtype: str) -> str:
    """The 3x3x3 grad-weight's tile for `dtype` (`fp32_tile`: one of the 3x3x3 grad-weights, or another tile, which
    is returned as it is): in 16-bit on tensor cores when x's and dy's rows hold a multiple of 4 elements (any
    channel multiplier); in float32 the streaming form when x and dy have the same extents and the multiplier is 1."""
    if fp32_tile not in (WGRAD, WGRAD_STREAM):
        return fp32_tile
    y_shape = conv_config(x_shape, w_shape, None, **kw).y_shape
    if dtype == "float32":
        same = tuple(y_shape[2:]) == tuple(x_shape[2:]) and w_shape[0] == x_shape[1]
        return WGRAD_STREAM if same else WGRAD
    return WGRAD_MMA if x_shape[-1] % 4 == 0 and y_shape[-1] % 4 == 0 else WGRAD


def expected_tile(fp32_tile: str, op: str, x_shape, w_shape, kw, dtype: str) -> str:
    """The 3x3x3 stencil's tile for `dtype`: the streaming stencil's problems in 16-bit go to the tensor-core form
    when the channel multiplier is 1, the source rows (x forward, dy grad-input) hold a multiple of 4 elements and
    the output rows an even count."""
    if fp32_tile != STREAM or dtype not in ("bfloat16", "float16") or w_shape[0] != x_shape[1]:
        return fp32_tile
    y_w = conv_config(x_shape, w_shape, None, **kw).y_shape[-1]
    src, out = (x_shape[-1], y_w) if op == "forward" else (y_w, x_shape[-1])
    return MMA if src % 4 == 0 and out % 2 == 0 else STREAM


def test_float32_stream_planes_within_32_bit_byte_offsets():
    """The float32 streaming kernels address a copy inside a source plane by a 32-bit byte offset: planes of up to
    2^30 elements take them, larger ones the brick kernels (64-bit offsets)."""
    for w, tiles in ((32768, (STREAM, STREAM, WGRAD_STREAM)), (32769, (TILE, TILE, WGRAD))):
        a = jaxconv3d.explain((1, 1, 3, 32768, w), (1, 1, 3, 3, 3), padding=1, cc=90)
        assert (a["forward"]["tile"], a["grad_input"]["tile"], a["grad_weight"]["tile"]) == tiles, w


def test_grad_weight_splits():
    """About 2 x 1056 blocks of (channel, split), each a contiguous run of one channel's bricks; a split's partial
    sums (27 floats a channel) live in the workspace."""
    suite = jaxconv3d.explain((8, 192, 16, 28, 28), (192, 1, 3, 3, 3), padding=1, groups=192, cc=90)["grad_weight"]
    # float32 runs the streaming form: 8 strips a channel, 8 splits; the workspace holds the brick form's too
    # (8 x 2 x 2 x 1 = 32 bricks a channel: 11 splits of 3)
    assert (suite["tile"], suite["workspace_bytes"]) == (WGRAD_STREAM, 11 * 192 * 27 * 4)
    one = jaxconv3d.explain((1, 4096, 4, 4, 4), (4096, 1, 3, 3, 3), padding=1, groups=4096, cc=90)["grad_weight"]
    assert (one["tile"], one["workspace_bytes"]) == (WGRAD_STREAM, 0)  # one strip (and brick) a channel: no splits
    brick = jaxconv3d.explain((1, 4096, 4, 4, 4), (4096, 1, 3, 3, 3), padding=0, groups=4096, cc=90)["grad_weight"]
    assert (brick["tile"], brick["workspace_bytes"]) == (WGRAD, 0)  # dy 2 x 2 x 2: not x's extents
    # 16-bit on tensor cores: 8 x 2 x 1 (15-row, 32-column) blocks x 16 planes = 256 units a channel, 8 splits
    # (runs of 8 planes a warp); the workspace holds either form's splits (misaligned tensors run the brick
    # kernel's 11)
    h = jaxconv3d.explain((8, 192, 16, 28, 28), (192, 1, 3, 3, 3), padding=1, groups=192, dtype="bfloat16",
                          cc=90)["grad_weight"]
    assert (h["tile"], h["workspace_bytes"]) == (WGRAD_MMA, 11 * 192 * 27 * 4)
    big = jaxconv3d.explain((64, 8, 16, 64, 64), (8, 1, 3, 3, 3), padding=1, groups=8, dtype="float16",
                            cc=90)["grad_weight"]  # 64 x 5 x 2 x 16 units: 263 splits of 39 (at most 264); bricks 256
    assert (big["tile"], big["workspace_bytes"]) == (WGRAD_MMA, 263 * 8 * 27 * 4)


CASES = [  # (x_shape, w_shape, kw)
    ((2, 3, 17, 33, 65), (3, 1, 3, 3, 3), dict(padding=1, groups=3)),  # bricks cut in D, H and W
    ((1, 2, 8, 16, 32), (6, 1, 3, 3, 3), dict(padding=0, groups=2)),  # multiplier 3, whole bricks of dx
    ((2, 2, 5, 7, 9), (4, 1, 3, 3, 3), dict(padding=((0, 2), (3, 1), (2, 2)), groups=2)),  # asymmetric, wide
    ((1, 5, 3, 3, 3), (5, 1, 3, 3, 3), dict(padding=0, groups=5)),  # one output position
    ((3, 4, 12, 10, 30), (4, 1, 3, 3, 3), dict(padding="same", groups=4)),  # W not a multiple of 4 outputs
    ((1, 3, 9, 20, 36), (3, 1, 3, 3, 3), dict(padding=1, groups=3)),  # W a multiple of 4: vector stores
    ((9, 2, 17, 17, 33), (2, 1, 3, 3, 3), dict(padding=1, groups=2)),  # 9 x 3 x 2 x 2 bricks: grad-weight splits
    ((2, 3, 20, 9, 37), (3, 1, 3, 3, 3), dict(padding=((2, 0), (0, 3), (1, 2)), groups=3)),  # stream: D chunks 16 + 4
    ((1, 2, 35, 18, 5), (2, 1, 3, 3, 3), dict(padding=1, groups=2)),  # stream: chunks 16 + 16 + 3, strips cut in H
    # tensor-core form (16-bit): W blocks of 32 cut, H blocks of 16 cut, runs of planes cut inside a column; the
    # window shift e = (-P) mod 4 for P = 0, 1, 2, 3 forward and 2, 1, 0, -1 grad-input
    ((2, 3, 20, 21, 36), (3, 1, 3, 3, 3), dict(padding=1, groups=3)),
    ((1, 4, 9, 17, 64), (4, 1, 3, 3, 3), dict(padding=((0, 0), (0, 0), (2, 2)), groups=4)),
    ((2, 2, 11, 6, 28), (2, 1, 3, 3, 3), dict(padding=((1, 2), (2, 1), (0, 0)), groups=2)),
    ((1, 3, 7, 40, 8), (3, 1, 3, 3, 3), dict(padding=((2, 0), (3, 3), (3, 1)), groups=3)),
    # tensor-core grad-weight (16-bit; x and dy rows a multiple of 4): the staged dy row's offset (P - 2) mod 4 =
    # 2, 0, 1, 3 (P = 0, 2, 3 and 1 with a channel multiplier of 2), 32-column x blocks cut (100 = 3 x 32 + 4),
    # 15-row dy blocks cut (11, 33 = 2 x 15 + 3)
    ((1, 4, 9, 17, 64), (4, 1, 3, 3, 3), dict(padding=((0, 0), (0, 0), (0, 2)), groups=4)),
    ((2, 2, 6, 10, 32), (2, 1, 3, 3, 3), dict(padding=((1, 1), (2, 1), (2, 0)), groups=2)),
    ((1, 3, 5, 40, 8), (3, 1, 3, 3, 3), dict(padding=((2, 0), (3, 3), (3, 3)), groups=3)),
    ((2, 2, 3, 33, 100), (4, 1, 3, 3, 3), dict(padding=1, groups=2)),
    # float32 streaming grad-weight: splits of 3 units (520 channels: 4 splits of the 12 strips a channel), D chunks
    # 16 + 1
    ((6, 520, 17, 5, 7), (520, 1, 3, 3, 3), dict(padding=1, groups=520)),
    # float32 streams in strips of 32 rows where they cover H with fewer rows than 28-row strips (H 61: 2 x 32),
    # elsewhere 28
    ((2, 3, 9, 61, 36), (3, 1, 3, 3, 3), dict(padding=1, groups=3)),
]


@pytest.mark.gpu
@STENCIL_PRECISIONS
@pytest.mark.parametrize("case", range(len(CASES)))
def test_stencil3_against_float64(rng, case, dtype, math):
    c = stencil_case(rng, (case, CASES[case]), dtype, math, 0)
    (x_shape, w_shape, kw), cfg, plans, tdt = CASES[case], c.cfg, c.plans, c.tdt
    multiplier = w_shape[0] // x_shape[1]  # grad-input sums this many dy channels: the brick kernel
    assert (plans["forward"]["tile"], plans["grad_input"]["tile"], plans["grad_weight"]["tile"]) == (
        expected_tile(STREAM, "forward", x_shape, w_shape, kw, dtype),
        expected_tile(STREAM if multiplier == 1 else TILE, "grad_input", x_shape, w_shape, kw, dtype),
        expected_wgrad(WGRAD, x_shape, w_shape, kw, dtype))
    x, w, dy, b, attrs = c.x, c.w, c.dy, c.b, c.attrs
    dev = lambda t: t.to("cuda", tdt).contiguous()  # noqa: E731
    y = torch.full(cfg.y_shape, float("nan"), dtype=tdt, device="cuda")
    dx = torch.full(cfg.x_shape, float("nan"), dtype=tdt, device="cuda")
    _ext.torch_adapter.fwd(to_dlpack(dev(x)), to_dlpack(dev(w)), None if b is None else to_dlpack(dev(b)),
                           to_dlpack(y), None, *attrs)
    _ext.torch_adapter.dgrad(to_dlpack(dev(dy)), to_dlpack(dev(w)), to_dlpack(dx), None, *attrs)
    dw = torch.full(cfg.w_shape, float("nan"), dtype=tdt, device="cuda")
    ws = torch.full((plans["grad_weight"]["workspace_bytes"],), 255, dtype=torch.uint8, device="cuda")
    _ext.torch_adapter.wgrad(to_dlpack(dev(x)), to_dlpack(dev(dy)), to_dlpack(dw), to_dlpack(ws), *attrs)
    ref = reference_and_grads(x, w, b, dy, **kw)
    bound = BOUNDS["tf32" if math else dtype]
    assert_close(y, ref[0], bound, f"forward {CASES[case]} {dtype}")
    assert_close(dx, ref[1], bound, f"grad-input {CASES[case]} {dtype}")
    assert_close(dw, ref[2], bound, f"grad-weight {CASES[case]} {dtype}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_wide_copies_fall_back_off_alignment(rng, dtype):
    """The tensor-core stencil and grad-weight copy 8 bytes at a time, the float32 streaming stencil 16: x, dy, y and
    dx one element off that alignment (views into a larger buffer) run the FFMA kernels, or the float32 stencil's
    4-byte copies, instead; the grad-weight with the brick plan's own splits in the same workspace; results against
    float64, outputs NaN-poisoned."""
    index = 9  # W 36: the tensor-core forms and the float32 stencil's 16-byte copies apply when aligned
    c = stencil_case(rng, (index, CASES[index]), dtype, 0, 0)
    (x_shape, w_shape, kw), cfg, plans, tdt = CASES[index], c.cfg, c.plans, c.tdt
    assert (plans["forward"]["tile"], plans["grad_weight"]["tile"]) == (
        expected_tile(STREAM, "forward", x_shape, w_shape, kw, dtype),
        expected_wgrad(WGRAD, x_shape, w_shape, kw, dtype))

    def off_by_one(t, fill=None):  # a view one element into its buffer: 2-byte aligned only
        buf = torch.empty(t.numel() + 1, dtype=tdt, device="cuda")
        view = buf[1:].view(t.shape)
        view.copy_(t) if fill is None else view.fill_(fill)
        return view

    x, dy, w = off_by_one(c.x.to(tdt)), off_by_one(c.dy.to(tdt)), c.w.to("cuda", tdt)
    b = None if c.b is None else c.b.to("cuda", tdt)
    y = off_by_one(torch.empty(cfg.y_shape), float("nan"))
    _ext.torch_adapter.fwd(to_dlpack(x), to_dlpack(w), None if b is None else to_dlpack(b), to_dlpack(y), None,
                           *c.attrs)
    dx = off_by_one(torch.empty(cfg.x_shape), float("nan"))
    _ext.torch_adapter.dgrad(to_dlpack(dy), to_dlpack(w), to_dlpack(dx), None, *c.attrs)
    dw = torch.full(cfg.w_shape, float("nan"), dtype=tdt, device="cuda")
    ws = torch.full((plans["grad_weight"]["workspace_bytes"],), 255, dtype=torch.uint8, device="cuda")
    _ext.torch_adapter.wgrad(to_dlpack(x), to_dlpack(dy), to_dlpack(dw), to_dlpack(ws), *c.attrs)
    ref = reference_and_grads(c.x, c.w, c.b, c.dy, **kw)
    assert_close(y, ref[0], BOUNDS[dtype], f"forward off alignment {dtype}")
    assert_close(dx, ref[1], BOUNDS[dtype], f"grad-input off alignment {dtype}")
    assert_close(dw, ref[2], BOUNDS[dtype], f"grad-weight off alignment {dtype}")
