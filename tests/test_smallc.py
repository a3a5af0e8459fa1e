"""The first-layer kernels on registers (family hopper_smallc, cuda/hopper/conv_smallc*.cuh): forward, grad-weight
and the stride-1 grad-input.

Anywhere: what the rule table gives first layers (either layout, the caller's; the K, block, brick and
shared-memory limits). On a Hopper GPU, with the family forced through JAXCONV3D_FAMILY: the kernels straight through
the DLPack adapter into NaN-poisoned outputs (an unwritten element shows) with a garbage-filled workspace, in both
layouts, every dtype and math mode, against float64 F.conv3d and autograd from the raw arguments. The fixed cases
walk the kernels' edges (the reduction at its K limit, output channels short of, past and across 64-wide blocks and
odd, tiles crossing batch boundaries and the end of the positions, grad-input bricks cut by the volume's edges and
D chunks, strides, dilations, asymmetric and oversized padding, bias); a hypothesis sweep draws more, some with
enough positions for hundreds of grad-weight splits, half of them stride 1 (grad-input's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, seed, settings
from hypothesis import strategies as st
from torch.utils.dlpack import to_dlpack

import jaxconv3d
from conftest import TEST_SEED
from helpers import BOUNDS, TORCH_DTYPES, assert_close_scaled
from jaxconv3d import _ext, _plan, conv_config
from jaxconv3d.reference import reference_and_grads
from refs import abs_scales

FAMILY = "hopper_smallc"
MODES = [("float32", 0), ("float32", 1), ("bfloat16", 0), ("float16", 0)]  # math 1: TF32


@pytest.fixture(autouse=True)
def no_forced_family(monkeypatch):
    monkeypatch.delenv("JAXCONV3D_FAMILY", raising=False)


def forward_family(x_shape, w_shape, **kw) -> dict:
    return jaxconv3d.explain(x_shape, w_shape, **kw)["forward"]


def test_first_layer_forward_runs_on_registers_in_the_callers_layout():
    rgb = dict(x_shape=(16, 3, 64, 64, 64), w_shape=(64, 3, 3, 3, 3))
    for dtype, precision, tile in [("float32", None, "regs_im2col_wgmma_64x64_k88_3xtf32"),
                                   ("float32", "tf32", "regs_im2col_wgmma_64x64_k88"),
                                   ("bfloat16", None, "regs_im2col_wgmma_64x64_k96"),
                                   ("float16", None, "regs_im2col_wgmma_64x64_k96")]:
        a = forward_family(**rgb, dtype=dtype, precision=precision, cc=90)
        assert (a["family"], a["tile"], a["layout"], a["workspace_bytes"]) == (FAMILY, tile, "NCDHW", 0), a
    last = forward_family((16, 64, 64, 64, 3), (3, 3, 3, 3, 64), layout="NDHWC", cc=90)  # DHWIO filter
    assert (last["family"], last["layout"]) == (FAMILY, "NDHWC")
    wide = forward_family((2, 3, 9, 9, 9), (96, 3, 3, 3, 3), cc=90)  # 3xTF32: two 64-wide blocks, 96 KB of filter
    assert wide["tile"] == "regs_im2col_wgmma_64x128_k88_3xtf32"


@pytest.mark.parametrize(
    "x_shape,w_shape,kw,expected",
    [
        ((2, 4, 9, 9, 9), (32, 4, 2, 3, 4), {}, FAMILY),  # float32 K = 96: the limit
        ((2, 4, 9, 9, 9), (32, 4, 3, 3, 3), {}, "sm80"),  # float32 K = 108 > 96
        ((2, 3, 9, 9, 9), (32, 3, 4, 4, 4), dict(dtype="bfloat16"), FAMILY),  # 16-bit K = 192: the limit
        ((2, 3, 9, 9, 9), (32, 3, 3, 5, 5), dict(dtype="bfloat16"), "hopper"),  # K = 225: the folded GEMM
        ((2, 3, 9, 9, 9), (8, 3, 3, 3, 3), {}, "sm80"),  # 8 output channels: FFMA
        ((2, 3, 9, 9, 9), (160, 3, 3, 3, 3), {}, "hopper"),  # 3xTF32 filter of three 64-wide blocks > 96 KB: folded
        ((2, 3, 9, 9, 9), (32, 3, 3, 7, 7), {}, "hopper"),  # float32 K = 441 > 96: the folded 3xTF32 GEMM
        ((2, 3, 9, 9, 9), (160, 3, 3, 3, 3), dict(precision="tf32"), FAMILY),  # 72 KB
        ((2, 6, 9, 9, 9), (32, 3, 3, 3, 3), dict(groups=2), "sm80"),  # grouped
        ((2, 16, 9, 9, 9), (32, 16, 1, 1, 1), dict(dtype="bfloat16"), "hopper"),  # 16 channels: not a first layer
        ((2, 3, 9, 9, 9), (32, 3, 3, 3, 3), dict(dtype="float64"), "sm80"),
    ],
)
def test_rules_take_first_layers_within_the_kernels_limits(x_shape, w_shape, kw, expected):
    assert forward_family(x_shape, w_shape, cc=90, **kw)["family"] == expected
    assert forward_family(x_shape, w_shape, cc=80, **kw)["family"] != FAMILY  # sm_90a only


def test_sizes_past_32_bit_positions_go_elsewhere():
    """The kernels decode positions in 32 bits: a problem with 2^32 or more output positions is not theirs."""
    small = forward_family((1000, 3, 64, 64, 64), (64, 3, 3, 3, 3), dtype="bfloat16", cc=90)  # 2.4e8 positions
    huge = forward_family((20000, 3, 64, 64, 64), (64, 3, 3, 3, 3), dtype="bfloat16", cc=90)  # 4.8e9
    assert small["family"] == FAMILY and huge["family"] != FAMILY
    grads = jaxconv3d.explain((20000, 3, 64, 64, 64), (64, 3, 3, 3, 3), dtype="bfloat16", cc=90)
    assert grads["grad_weight"]["family"] != FAMILY


def test_all_three_operations_of_a_stride_1_first_layer():
    answer = jaxconv3d.explain((2, 3, 9, 9, 9), (64, 3, 3, 3, 3), cc=90)
    assert {answer[op]["family"] for op in ("forward", "grad_input", "grad_weight")} == {FAMILY}
    assert answer["grads"]["family"] == ""  # no fused backward for a first layer
    gi = answer["grad_input"]
    # 81 (channel, tap) columns padded to 88; the whole 9 x 9 plane is one brick (11 x 11 dy positions in two
    # 64-row tiles), and 2 samples x 1 brick make too few blocks: D is cut into chunks, of 4 planes at least (twice
    # the D halo)
    assert (gi["tile"], gi["layout"], gi["workspace_bytes"]) == (
        "regs_dy_wgmma_192x88x64_3xtf32_taps_summed_brick9x9_dz4_ps89", "NCDHW", 0)
    gw = answer["grad_weight"]
    # 2 x 7^3 positions in 22 tiles of 32, one a split; each split's partial sums: 128 (channel, tap) rows x 64
    assert gw["tile"] == "regs_im2col_wgmma_128x64x32_3xtf32_split22" and gw["layout"] == "NCDHW"
    assert gw["workspace_bytes"] == 22 * 128 * 64 * 4
    big = jaxconv3d.explain((16, 3, 64, 64, 64), (64, 3, 3, 3, 3), dtype="bfloat16", cc=90)["grad_weight"]
    assert big["tile"].endswith("x32_split512")  # 62^3 * 16 positions in 119164 tiles of 32: 233 a split


@pytest.mark.parametrize(
    "x_shape,w_shape,kw,halo",
    [
        # the seed layer channels-last in 16 bits: 4 x 32 bricks of one plane, 16 x 62 x 16 x 2 = 31744 of them
        ((16, 64, 64, 64, 3), (3, 3, 3, 3, 64), dict(dtype="bfloat16"), "regs_halo_wgmma_128x64x128_split512"),
        ((2, 9, 9, 9, 3), (3, 3, 3, 3, 64), dict(dtype="float16", stride=(2, 2, 1)), "regs_halo_wgmma_128x64x128"),
        ((2, 9, 9, 9, 3), (3, 3, 3, 3, 64), dict(dtype="bfloat16", stride=(1, 1, 2)), None),  # W stride
        ((2, 9, 9, 9, 3), (3, 3, 3, 3, 20), dict(dtype="bfloat16"), None),  # dy rows of 40 bytes
        # float32: 2 x 32 bricks (64 positions), 3xTF32 or TF32; rows of 80 bytes are whole 16-byte chunks
        ((2, 9, 9, 9, 3), (3, 3, 3, 3, 64), {}, "regs_halo_wgmma_128x64x64_3xtf32"),
        ((2, 9, 9, 9, 3), (3, 3, 3, 3, 20), dict(precision="tf32"), "regs_halo_wgmma_128x64x64_split"),
        ((2, 9, 9, 9, 3), (3, 3, 3, 3, 18), {}, None),  # float32 rows of 72 bytes
        ((2, 9, 9, 9, 4), (7, 7, 7, 4, 16), dict(dtype="bfloat16", padding=3), None),  # halo of 4 x 7 x 10 x 38
    ],
)
def test_channels_last_grad_weight_takes_the_halo_form(x_shape, w_shape, kw, halo):
    gw = jaxconv3d.explain(x_shape, w_shape, layout="NDHWC", cc=90, **kw)["grad_weight"]
    if halo is None:
        assert gw["family"] != FAMILY or not gw["tile"].startswith("regs_halo"), gw
    else:
        assert gw["family"] == FAMILY and gw["tile"].startswith(halo), gw
    ncdhw = (x_shape[0], x_shape[4]) + x_shape[1:4]
    assert not jaxconv3d.explain(ncdhw, (w_shape[4], w_shape[3]) + w_shape[:3], cc=90, **kw)["grad_weight"][
        "tile"].startswith("regs_halo")


@pytest.mark.parametrize(
    "x_shape,w_shape,kw,expected",
    [
        # the seed layer: 8 x 16 bricks (10 x 18 halo'd: three 64-row tiles), 512 of them: D in one piece
        ((16, 3, 64, 64, 64), (64, 3, 3, 3, 3), dict(padding=1),
         "regs_dy_wgmma_192x88x64_taps_summed_brick16x8_dz64_ps89"),
        # P's row stride: 16-bit channels-last with an odd C takes the odd stride = C (mod 32); float32 keeps nr + 1
        # (layout NDHWC: x (N, D, H, W, C), w DHWIO)
        ((16, 64, 64, 64, 3), (3, 3, 3, 3, 64), dict(padding=1, layout="NDHWC"),
         "regs_dy_wgmma_192x88x64_taps_summed_brick16x8_dz64_ps99"),
        ((16, 64, 64, 64, 3), (3, 3, 3, 3, 64), dict(padding=1, layout="NDHWC", dtype="float32"),
         "regs_dy_wgmma_192x88x64_3xtf32_taps_summed_brick16x8_dz64_ps89"),
        ((2, 9, 9, 9, 2), (3, 3, 3, 2, 64), dict(padding=1, layout="NDHWC"),  # even C: nr + 1
         "regs_dy_wgmma_192x64x64_taps_summed_brick9x9_dz4_ps65"),
        ((1, 1, 32, 32, 32), (16, 1, 3, 3, 3), dict(padding=1), "regs_dy_wgmma_192x32x64_taps_summed_brick16x8_dz4_ps33"),
        ((2, 4, 9, 9, 9), (32, 4, 2, 3, 4), {}, "regs_dy_wgmma_192x128x64_taps_summed_brick9x9_dz2_ps129"),  # K = 96
        ((2, 3, 9, 9, 9), (64, 3, 3, 3, 3), dict(stride=(1, 1, 2)), None),  # strided: the folded GEMM
        ((2, 3, 9, 9, 9), (65, 3, 3, 3, 3), {}, None),  # more than 64 output channels
        ((2, 5, 9, 9, 9), (64, 5, 3, 3, 3), {}, None),  # K = 135 > 128
        ((2, 3, 9, 9, 9), (64, 3, 3, 3, 3), dict(dtype="float64"), None),
    ],
)
def test_grad_input_rules(x_shape, w_shape, kw, expected):
    kw = dict(dtype="bfloat16", **kw) if "dtype" not in kw else kw
    gi = jaxconv3d.explain(x_shape, w_shape, cc=90, **kw)["grad_input"]
    if expected is None:
        assert gi["family"] != FAMILY
    else:
        assert (gi["family"], gi["tile"]) == (FAMILY, expected)
    assert jaxconv3d.explain(x_shape, w_shape, cc=80, **kw)["grad_input"]["family"] != FAMILY


@pytest.mark.parametrize(
    "w_shape,kw,expected",
    [
        ((64, 3, 3, 3, 3), {}, FAMILY),  # two row blocks of (channel, tap) columns
        ((16, 1, 3, 3, 3), {}, FAMILY),  # one, a quarter of the channels
        ((65, 1, 3, 3, 3), {}, "sm80"),  # a second block of output channels: not taken
        ((64, 3, 4, 4, 4), dict(dtype="float16"), FAMILY),  # K = 192: three row blocks
    ],
)
def test_grad_weight_blocks(w_shape, kw, expected):
    answer = jaxconv3d.explain((2, w_shape[1], 9, 9, 9), w_shape, cc=90, **kw)
    assert answer["grad_weight"]["family"] == expected


# ---- on a Hopper GPU


def hopper_gpu() -> bool:
    return torch.cuda.is_available() and _plan.cc_of(torch.device("cuda")) == 90


def run_ops(rng, x_shape, w_shape, bias, dtype, math, layout, **kw):
    """Our forward, grad-input and grad-weight under the forced family into NaN-poisoned results (grad-weight with a
    garbage-filled workspace), each with its float64 reference and the size of the terms it sums (abs_scales, for
    assert_close_scaled: a sum of few terms that cancels keeps its operands' rounding); an operation the family does
    not take is left out."""
    cfg = conv_config(x_shape, w_shape, (w_shape[0],) if bias else None, precision="tf32" if math else None, **kw)
    tdt = TORCH_DTYPES[dtype]
    plans = {op: _plan.plan(cfg, tdt, 90, op, layout) for op in ("forward", "grad_input", "grad_weight")}
    rounded = lambda shape: torch.as_tensor(rng.standard_normal(shape)).to(tdt).double()  # noqa: E731
    x, w, dy = rounded(x_shape), rounded(w_shape), rounded(cfg.y_shape)
    b = rounded((w_shape[0],)) if bias else None
    fmt = torch.channels_last_3d if layout else torch.contiguous_format
    mem = lambda t: t.to("cuda", tdt).contiguous(memory_format=fmt)  # noqa: E731
    back = lambda t: t  # noqa: E731
    nan = lambda shape: torch.full(shape, float("nan"), dtype=tdt, device="cuda").contiguous(memory_format=fmt)  # noqa
    stream = torch.cuda.current_stream().cuda_stream
    attrs = (cfg.stride, cfg.pad_lo, cfg.pad_hi, cfg.dilation, cfg.groups, math, layout, stream)
    ref, scale = reference_and_grads(x, w, b, dy, **kw), abs_scales(x, w, b, dy, **kw)
    got = {}
    if plans["forward"]["family"] == FAMILY:
        assert plans["forward"]["layout"] == ("NDHWC" if layout else "NCDHW")
        y = nan(cfg.y_shape)
        bias = None if b is None else to_dlpack(b.to("cuda", tdt))
        _ext.torch_adapter.fwd(to_dlpack(mem(x)), to_dlpack(mem(w)), bias, to_dlpack(y), None, *attrs)
        got["forward"] = (back(y), ref[0], scale[0])
    if plans["grad_input"]["family"] == FAMILY:
        assert plans["grad_input"]["workspace_bytes"] == 0
        dx = nan(cfg.x_shape)
        _ext.torch_adapter.dgrad(to_dlpack(mem(dy)), to_dlpack(mem(w)), to_dlpack(dx), None, *attrs)
        got["grad_input"] = (back(dx), ref[1], scale[1])
    if plans["grad_weight"]["family"] == FAMILY:
        dw = nan(cfg.w_shape)
        ws = torch.full((plans["grad_weight"]["workspace_bytes"],), 255, dtype=torch.uint8, device="cuda")
        _ext.torch_adapter.wgrad(to_dlpack(mem(x)), to_dlpack(mem(dy)), to_dlpack(dw), to_dlpack(ws), *attrs)
        got["grad_weight"] = (back(dw), ref[2], scale[2])
    return got


CASES = [  # (x_shape, w_shape, conv kwargs)
    ((2, 3, 10, 11, 12), (64, 3, 3, 3, 3), dict(padding=1)),  # the seed layer, small: tiles cross the batch
    ((3, 1, 7, 9, 70), (16, 1, 3, 3, 3), dict(stride=(1, 1, 2))),  # one input channel, a quarter block
    ((1, 2, 5, 6, 7), (37, 2, 3, 3, 3), dict(dilation=(2, 1, 1), padding=((2, 0), (1, 1), (0, 3)))),  # odd O
    ((2, 3, 6, 7, 5), (100, 3, 3, 3, 3), dict(padding=(1, 0, 2))),  # two blocks, the second partial
    ((1, 3, 6, 7, 5), (130, 3, 3, 2, 2), dict(stride=(2, 1, 1))),  # three blocks (not 3xTF32: too much filter)
    ((2, 4, 6, 7, 8), (20, 4, 2, 3, 4), dict(padding="same")),  # float32 at its K limit (96), even kernel
    ((1, 3, 7, 8, 9), (24, 3, 4, 4, 4), dict(padding=2, stride=(1, 2, 3))),  # 16-bit at its K limit (192)
    ((2, 3, 9, 9, 9), (32, 3, 1, 1, 1), dict(stride=3)),  # pointwise, K = 3
    ((1, 3, 4, 5, 6), (16, 3, 3, 3, 3), dict(padding=4)),  # padding wider than the kernel
    ((1, 1, 12, 13, 14), (24, 1, 5, 5, 5), dict(stride=2, padding=2)),  # a stem (16-bit only: K = 125)
    ((2, 5, 5, 9, 6), (48, 5, 2, 2, 3), dict(dilation=(2, 3, 1), stride=(2, 1, 2), padding=((0, 1), (2, 0), (1, 1)))),
    # grad-input: bricks cut by H and W's ends, one channel and K = 125, D chunks with dilation and odd padding
    ((2, 3, 7, 21, 37), (64, 3, 3, 3, 3), dict(padding=1)),
    ((1, 1, 9, 10, 11), (16, 1, 5, 5, 5), dict(padding=2)),
    ((1, 2, 30, 6, 7), (48, 2, 3, 2, 2), dict(dilation=(3, 1, 2), padding=((4, 1), (0, 1), (2, 2)))),
    ((1, 3, 12, 5, 40), (32, 3, 1, 3, 3), dict(padding=((0, 2), (1, 1), (2, 0)))),
    # grad-weight: 2050 tiles, five a split (the software pipeline's steady state and a short last split)
    ((1, 3, 40, 40, 41), (64, 3, 3, 3, 3), dict(padding=1)),
    # forward: a second block of 8 output channels (one 16-byte chunk a position in the 16-bit NDHWC stage)
    ((2, 3, 6, 7, 5), (72, 3, 3, 3, 3), dict(padding=1)),
    # grad-weight's halo'd form (16-bit NDHWC): strided D and H with a W edge brick; one row block (K = 18) over
    # three W bricks; three row blocks (K = 192) with asymmetric padding
    ((2, 3, 11, 13, 40), (16, 3, 3, 3, 3), dict(stride=(2, 2, 1), padding=(0, 1, 2))),
    ((1, 2, 5, 9, 70), (24, 2, 1, 3, 3), dict(padding=1)),
    ((1, 3, 6, 9, 35), (32, 3, 4, 4, 4), dict(padding=((1, 2), (2, 1), (0, 3)))),
    # grad-input: P's channels-last row stride for three channels (16-bit: 99 floats), with D, H and W dilated
    ((2, 3, 11, 12, 20), (8, 3, 3, 3, 3), dict(dilation=(2, 1, 2), padding=((1, 3), (1, 1), (2, 2)))),
    # grad-weight's halo'd form (16-bit NDHWC) walks a split's bricks along D through a ring of planes: 1110 bricks,
    # three a split, D columns of 37 (splits cross columns; one new plane a brick); then D stride 2 and dilation 2
    # (span 5, two new planes a brick) with padding planes at both ends, 684 bricks in pairs
    ((5, 3, 37, 9, 35), (16, 3, 3, 3, 3), dict(padding=1)),
    ((3, 3, 75, 9, 35), (16, 3, 3, 3, 3), dict(stride=(2, 1, 1), dilation=(2, 1, 1), padding=((2, 2), (1, 1), (1, 1)))),
]


@pytest.mark.gpu
@pytest.mark.parametrize("layout", [0, 1], ids=["NCDHW", "NDHWC"])
@pytest.mark.parametrize("dtype,math", MODES, ids=["float32", "tf32", "bfloat16", "float16"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_kernels_against_float64(monkeypatch, rng, case, dtype, math, layout):
    if not hopper_gpu():
        pytest.skip("needs a compute capability 9.0 GPU")
    monkeypatch.setenv("JAXCONV3D_FAMILY", FAMILY)
    x_shape, w_shape, kw = CASES[case]
    got = run_ops(rng, x_shape, w_shape, case % 2 == 0, dtype, math, layout, **kw)
    if not got:
        pytest.skip(f"{FAMILY} does not take this case in {dtype}")
    for op, (out, ref, scale) in got.items():
        assert_close_scaled(out, ref, scale, BOUNDS["tf32" if math else dtype],
                            f"{op} {CASES[case]} {dtype} math {math}")


@st.composite
def first_layers(draw):
    c = draw(st.integers(1, 8))
    o = draw(st.sampled_from([1, 5, 16, 31, 64, 65, 96, 128, 140]))
    big = draw(st.booleans())  # a batch long enough for many grad-weight splits (more than 512 tiles)
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(3))
    unit = draw(st.booleans())  # stride 1: grad-input's case too
    stride = (1, 1, 1) if unit else tuple(draw(st.integers(1, 3)) for _ in range(3))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(3))
    pad = tuple((draw(st.integers(0, k + 1)), draw(st.integers(0, k + 1))) for k in kernel)
    spatial = tuple(max(1, d * (k - 1) + 1 - lo - hi) + draw(st.integers(0, 9))
                    for k, d, (lo, hi) in zip(kernel, dilation, pad))
    batch = draw(st.integers(1, 3)) + (40 if big and c * o <= 64 else 0)
    return (batch, c, *spatial), (o, c, *kernel), dict(stride=stride, padding=pad, dilation=dilation)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,math", MODES, ids=["float32", "tf32", "bfloat16", "float16"])
def test_random_first_layers(monkeypatch, dtype, math):
    if not hopper_gpu():
        pytest.skip("needs a compute capability 9.0 GPU")
    monkeypatch.setenv("JAXCONV3D_FAMILY", FAMILY)

    @seed(TEST_SEED)
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=first_layers(), layout=st.integers(0, 1), bias=st.booleans(), data_seed=st.integers(0, 2**31 - 1))
    def run(case, layout, bias, data_seed):
        x_shape, w_shape, kw = case
        got = run_ops(np.random.default_rng(data_seed), x_shape, w_shape, bias, dtype, math, layout, **kw)
        assume(got)
        for op, (out, ref, scale) in got.items():
            assert_close_scaled(out, ref, scale, BOUNDS["tf32" if math else dtype],
                                f"{op} {case} layout {layout} {dtype} {math}")

    run()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
@pytest.mark.parametrize("offset", [0, 1, 3], ids=["aligned", "1_element_off", "3_elements_off"])
def test_halo_grad_weight_with_a_misaligned_dy_takes_the_register_form(rng, offset, dtype):
    """The halo'd grad-weight copies dy 16 bytes at a time: a dy that starts off a 16-byte boundary is run by the
    register form, inside the same workspace, with the same result."""
    if not hopper_gpu():
        pytest.skip("needs a compute capability 9.0 GPU")
    x_shape, w_shape, kw = (2, 3, 10, 11, 40), (16, 3, 3, 3, 3), dict(padding=1)
    cfg = conv_config(x_shape, w_shape, None, **kw)
    tdt = TORCH_DTYPES[dtype]
    plan = _plan.plan(cfg, tdt, 90, "grad_weight", 1)
    assert plan["family"] == FAMILY and plan["tile"].startswith("regs_halo")
    rounded = lambda shape: torch.as_tensor(rng.standard_normal(shape)).to(tdt).double()  # noqa: E731
    x, w, dy = rounded(x_shape), rounded(w_shape), rounded(cfg.y_shape)
    ref, scale = reference_and_grads(x, w, None, dy, **kw)[2], abs_scales(x, w, None, dy, **kw)[2]
    n, c, d, h, wd = cfg.y_shape
    storage = torch.empty(n * c * d * h * wd + offset, dtype=tdt, device="cuda")
    dy_dev = storage[offset:].view(n, d, h, wd, c).permute(0, 4, 1, 2, 3)  # channels-last, `offset` elements in
    dy_dev.copy_(dy)
    assert dy_dev.is_contiguous(memory_format=torch.channels_last_3d)
    assert dy_dev.data_ptr() % 16 == storage.element_size() * offset % 16
    xd = x.to("cuda", tdt).contiguous(memory_format=torch.channels_last_3d)
    dw = torch.full(w_shape, float("nan"), dtype=tdt, device="cuda").contiguous(
        memory_format=torch.channels_last_3d)
    ws = torch.full((plan["workspace_bytes"],), 255, dtype=torch.uint8, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    attrs = (cfg.stride, cfg.pad_lo, cfg.pad_hi, cfg.dilation, cfg.groups, 0, 1, stream)
    _ext.torch_adapter.wgrad(to_dlpack(xd), to_dlpack(dy_dev), to_dlpack(dw), to_dlpack(ws), *attrs)
    assert_close_scaled(dw, ref, scale, BOUNDS[dtype], f"grad_weight {dtype}, dy {offset} elements off")


# Two 16-bit grad-input problems on the same register width (nr 128) whose kernels differ: two P buffers
# (padding 1, C 4) and one (C 7, dilated: a bigger P). Each kernel's shared-memory limit is its own attribute.
TWO_KERNELS = [((1, 4, 6, 7, 8), (20, 4, 2, 3, 4), dict(padding=1)),
               ((1, 7, 3, 8, 10), (1, 7, 2, 3, 3), dict(dilation=(2, 1, 1)))]


@pytest.mark.gpu
@pytest.mark.parametrize("first", [0, 1], ids=["two_buffers_first", "one_buffer_first"])
def test_each_grad_input_kernel_raises_its_own_shared_memory(first):
    """In a fresh process (the attributes are raised once per process), the two grad-input kernels one after the
    other, in either order: each launches and is right. A fresh-seed GPU pass found the second one failing to launch
    ("invalid argument": left at the default 48 KB) while one flag stood for both."""
    if not hopper_gpu():
        pytest.skip("needs a compute capability 9.0 GPU")
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import numpy as np
os.environ["JAXCONV3D_FAMILY"] = {FAMILY!r}
from helpers import BOUNDS, assert_close_scaled
from test_smallc import TWO_KERNELS, run_ops
for x_shape, w_shape, kw in (TWO_KERNELS[{first}], TWO_KERNELS[{1 - first}]):
    got = run_ops(np.random.default_rng(0), x_shape, w_shape, False, "bfloat16", 0, 1, **kw)
    out, ref, scale = got["grad_input"]
    assert_close_scaled(out, ref, scale, BOUNDS["bfloat16"], f"grad_input {{x_shape}}")
print("both kernels ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "both kernels ok" in done.stdout, done.stderr[-3000:]
