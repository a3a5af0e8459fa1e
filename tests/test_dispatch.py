"""The dispatcher's rule table (cuda/dispatch.cc) through jaxconv3d.explain: answerable without a GPU for any
compute capability, overridable with JAXCONV3D_FAMILY, and (on a GPU) every family runs every case it accepts."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

import jaxconv3d
from cases import CASES
from helpers import BOUNDS, TORCH_DTYPES, assert_close, randn, torch_reference
from jaxconv3d import _plan

OPS = ("forward", "grad_input", "grad_weight")
DENSE = dict(x_shape=(2, 64, 8, 8, 8), w_shape=(64, 64, 3, 3, 3), padding=1)  # aligned, dense, channels 64


def families(answer: dict) -> set:
    return {answer[op]["family"] for op in OPS}


def per_op(answer: dict) -> list:
    """The three operations' answers (explain's "grads" entry, the fused backward, has its own tests)."""
    return [answer[op] for op in OPS]


def hopper_accepts(**kw) -> bool:
    """Whether the linked Hopper family accepts a problem on cc 9.0 (the stub accepts nothing)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXCONV3D_FAMILY", "hopper")
        return all(a["family"] == "hopper" for a in per_op(jaxconv3d.explain(**kw, cc=90)))


@pytest.fixture(autouse=True)
def no_forced_family(monkeypatch):
    monkeypatch.delenv("JAXCONV3D_FAMILY", raising=False)


def test_cpu_runs_the_host_kernels():
    answer = jaxconv3d.explain(**DENSE, device="cpu")
    assert families(answer) == {"cpu"}
    assert all(a["layout"] == "NCDHW" and a["workspace_bytes"] == 0 for a in per_op(answer))
    ndhwc = jaxconv3d.explain((2, 8, 8, 8, 64), (3, 3, 3, 64, 64), padding=1, layout="NDHWC", cc=0)
    assert {a["layout"] for a in per_op(ndhwc)} == {"NDHWC"}  # the cpu takes either layout


def test_float64_goes_to_sm80_even_on_hopper():
    answer = jaxconv3d.explain(**DENSE, dtype="float64", cc=90)
    assert families(answer) == {"sm80"}
    assert {a["rule"] for a in per_op(answer)} == {"float64: only sm80 has it"}
    assert {a["layout"] for a in per_op(answer)} == {"NCDHW"}


def test_pre_hopper_gpus_run_sm80():
    for dtype in ("float32", "bfloat16", "float16"):
        answer = jaxconv3d.explain(**DENSE, dtype=dtype, cc=80)
        assert families(answer) == {"sm80"}, dtype
        assert {a["rule"] for a in per_op(answer)} == {"fallback"}


def test_bf16_dense_aligned_on_hopper():
    answer = jaxconv3d.explain(**DENSE, dtype="bfloat16", device="cuda:9.0")
    if hopper_accepts(**DENSE, dtype="bfloat16"):
        assert families(answer) == {"hopper"}
        assert {a["layout"] for a in per_op(answer)} == {"NDHWC"}
    else:  # the stub (or a build without CUDA) is linked: sm80 everywhere
        assert families(answer) == {"sm80"}


def test_tf32_on_hopper_needs_32_channel_rows_for_grad_weight():
    """TF32 grad-weight runs on Hopper where input channels come in 128-byte rows: from bfloat16 parts on the 16-bit
    kernel where 64 of them fill a row (C % 64 == 0; its workspace also holds the four parts), else with a
    shared-memory transpose (C % 32 == 0); other channel counts keep sm80 for that one operation."""
    if not hopper_accepts(**DENSE, dtype="bfloat16"):
        pytest.skip("the Hopper family is not linked in this build")
    tf32 = jaxconv3d.explain(**DENSE, precision="tf32", cc=90)
    assert families(tf32) == {"hopper"}
    assert tf32["grad_weight"]["tile"].startswith("tma_bf16x3_wgmma_")
    x_shape, w_shape = DENSE["x_shape"], DENSE["w_shape"]
    y_elements = x_shape[0] * w_shape[0] * math.prod(x_shape[2:])  # padding 1, stride 1: the input's extents
    parts = 2 * 2 * (math.prod(x_shape) + y_elements)  # hi and lo of x and dy, bfloat16
    assert tf32["grad_weight"]["workspace_bytes"] > parts
    c32 = jaxconv3d.explain((2, 32, 8, 8, 8), (64, 32, 3, 3, 3), padding=1, precision="tf32", cc=90)
    assert c32["grad_weight"]["tile"].startswith("tma_tf32_wgmma_") and c32["grad_weight"]["workspace_bytes"] > 0
    odd = jaxconv3d.explain((2, 40, 8, 8, 8), (64, 40, 3, 3, 3), padding=1, precision="tf32", cc=90)
    assert odd["forward"]["family"] == "hopper" and odd["grad_weight"]["family"] == "sm80"
    accurate = jaxconv3d.explain(**DENSE, cc=90)  # float32-accurate grad-weight stays on sm80 FFMA
    assert accurate["grad_weight"]["family"] == "sm80"


def test_resident_filter_rule_on_hopper():
    """Tap-pair forwards and stride-1 grad-inputs (16-bit sources of at most 32 channels) keep their whole filter in
    shared memory when it is one column tile (<= 64 result channels) of at most 28 taps; nothing else does."""
    if not hopper_accepts(**DENSE, dtype="bfloat16"):
        pytest.skip("the Hopper family is not linked in this build")

    def tiles(x, w, **kw):
        return {op: a["tile"] for op, a in jaxconv3d.explain(x, w, dtype="bfloat16", cc=90, **kw).items()}

    down = tiles((2, 32, 16, 16, 16), (64, 32, 3, 3, 3), stride=2, padding=1)
    assert down["forward"].endswith("_resident_filter") and "tapgroups" in down["forward"]
    assert "resident" not in down["grad_input"]  # stride 2: residue classes
    assert "resident" not in tiles((2, 32, 8, 8, 8), (128, 32, 3, 3, 3), padding=1)["forward"]  # two column tiles
    assert "resident" not in tiles((2, 32, 8, 8, 8), (64, 32, 5, 5, 5), padding=2)["forward"]  # 125 taps
    assert "resident" not in tiles((2, 64, 8, 8, 8), (64, 64, 3, 3, 3), padding=1)["forward"]  # 128-byte rows
    narrow = tiles((2, 64, 8, 8, 8), (32, 64, 3, 3, 3), padding=1)  # grad-input reads 32-channel dy
    assert narrow["grad_input"].endswith("_resident_filter") and "resident" not in narrow["forward"]


def test_device_string_and_cc_agree():
    assert jaxconv3d.explain(**DENSE, device="cuda:8.6") == jaxconv3d.explain(**DENSE, cc=86)
    assert jaxconv3d.explain(**DENSE, device="cpu") == jaxconv3d.explain(**DENSE, cc=0)


def test_sm80_tiles_are_named():
    depthwise = jaxconv3d.explain((2, 8, 8, 8, 8), (8, 1, 3, 3, 3), groups=8, padding=1, cc=80)
    assert depthwise["forward"]["tile"] == depthwise["grad_input"]["tile"] == "stencil_3x3x3_stream"
    assert depthwise["grad_weight"]["tile"] == "wgrad_depthwise_3x3x3_stream"
    dilated = jaxconv3d.explain((2, 8, 8, 8, 8), (8, 1, 3, 3, 3), groups=8, padding=2, dilation=2, cc=80)
    assert dilated["forward"]["tile"] == dilated["grad_input"]["tile"] == "stencil"
    assert dilated["grad_weight"]["tile"] == "wgrad_depthwise"
    accurate = jaxconv3d.explain(**DENSE, cc=80)
    assert accurate["forward"]["tile"] == "gemm_ffma_128x64"
    assert accurate["grad_weight"]["tile"] == "wgrad_pipe_ffma_64x128"
    tf32 = jaxconv3d.explain(**DENSE, precision="tf32", cc=80)
    assert tf32["forward"]["tile"] == tf32["grad_input"]["tile"] == "gemm_wmma_128x64"
    assert tf32["grad_weight"]["tile"] == "wgrad_pipe_wmma_64x128"
    narrow = jaxconv3d.explain((1, 4, 6, 6, 6), (8, 4, 3, 3, 3), cc=80)
    assert narrow["forward"]["tile"] == "gemm_ffma_128x16"


def test_grad_weight_workspace_is_reported():
    answer = jaxconv3d.explain(**DENSE, cc=80)
    assert answer["grad_weight"]["workspace_bytes"] > 0  # split reduction partials
    assert answer["forward"]["workspace_bytes"] == 0


def test_env_forces_a_family_where_it_accepts(monkeypatch):
    monkeypatch.setenv("JAXCONV3D_FAMILY", "sm80")
    answer = jaxconv3d.explain(**DENSE, dtype="bfloat16", cc=90)
    assert families(answer) == {"sm80"}
    assert {a["rule"] for a in per_op(answer)} == {"JAXCONV3D_FAMILY=sm80"}
    monkeypatch.setenv("JAXCONV3D_FAMILY", "hopper")  # hopper never accepts cc 8.0: the fallback answers
    assert families(jaxconv3d.explain(**DENSE, dtype="bfloat16", cc=80)) == {"sm80"}
    assert families(jaxconv3d.explain(**DENSE, dtype="float64", cc=90)) == {"sm80"}
    assert families(jaxconv3d.explain(**DENSE, cc=0)) == {"cpu"}  # never on the CPU


def test_explain_rejects_bad_arguments():
    with pytest.raises(ValueError, match="layout must be"):
        jaxconv3d.explain(**DENSE, layout="NHWC", cc=80)
    with pytest.raises(ValueError, match="cc must be >= 0"):
        jaxconv3d.explain(**DENSE, cc=-1)
    with pytest.raises(ValueError, match="device must be"):
        jaxconv3d.explain(**DENSE, device="tpu")
    with pytest.raises(TypeError, match="dtype"):
        jaxconv3d.explain(**DENSE, dtype="int8", cc=80)
    with pytest.raises(ValueError, match="in_channels"):
        jaxconv3d.explain((1, 6, 4, 4, 4), (4, 3, 1, 1, 1), groups=4, cc=80)


def test_plan_refuses_bad_codes():
    cfg = jaxconv3d.conv_config((1, 2, 4, 4, 4), (2, 2, 1, 1, 1), None)
    with pytest.raises(ValueError, match="op must be"):
        _plan.plan(cfg, "float32", 80, "backward")


# ---- on a GPU: every family on every case it accepts, against a float64 reference


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["sm80", "hopper", "hopper_smallc", "stencil"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16", "float64"])
@pytest.mark.parametrize("precision", [None, "tf32"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_family_on_every_case_it_accepts(monkeypatch, rng, case, channels_last, precision, dtype, family):
    import jaxconv3d.torch as jt

    monkeypatch.setenv("JAXCONV3D_FAMILY", family)
    cc = _plan.cc_of(torch.device("cuda"))
    b_shape = (case.w_shape[0],) if case.bias else None
    cfg = jaxconv3d.conv_config(case.x_shape, case.w_shape, b_shape, precision=precision, **case.kwargs())
    answers = [_plan.plan(cfg, dtype, cc, op, int(channels_last)) for op in OPS]  # as the front asks
    if not any(a["family"] == family for a in answers):  # a family that takes none of the operations
        pytest.skip(f"{family} does not accept this case on cc {cc}")
    x, w = randn(rng, cfg.x_shape, dtype), randn(rng, cfg.w_shape, dtype)
    b = randn(rng, b_shape, dtype) if b_shape else None
    dy = randn(rng, cfg.y_shape, dtype)
    tdt = TORCH_DTYPES[dtype]
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    xt = torch.as_tensor(x).to("cuda", tdt).contiguous(memory_format=fmt).requires_grad_(True)
    wt = torch.as_tensor(w).to("cuda", tdt).contiguous(memory_format=fmt).requires_grad_(True)
    bt = None if b is None else torch.as_tensor(b).to("cuda", tdt).requires_grad_(True)
    y = jt.conv3d(xt, wt, bt, precision=precision, **case.kwargs())
    assert y.is_contiguous(memory_format=fmt)
    inputs = (xt, wt) if bt is None else (xt, wt, bt)
    grads = torch.autograd.grad(y, inputs, torch.as_tensor(dy).to("cuda", tdt).contiguous(memory_format=fmt))
    ref = torch_reference(x, w, b, dy, cfg)
    bound = BOUNDS["tf32" if precision == "tf32" and dtype == "float32" else dtype]
    for name, out, r in zip(("y", "dx", "dw"), (y, *grads[:2]), ref[:3]):
        assert_close(out, r, bound, f"{family} {case.name} {dtype} {name}")
    # the JAX front runs the same family's kernels: bitwise the same forward
    import jax

    xj = jax.device_put(jax.numpy.asarray(x, dtype), jax.devices("gpu")[0])
    wj, bj = jax.numpy.asarray(w, dtype), None if b is None else jax.numpy.asarray(b, dtype)
    if channels_last:
        y_jax = jaxconv3d.conv3d(jax.numpy.moveaxis(xj, 1, -1), jax.numpy.transpose(wj, (2, 3, 4, 1, 0)), bj,
                                 precision=precision, layout="NDHWC", **case.kwargs())
        y_jax = jax.numpy.moveaxis(y_jax, -1, 1)
    else:
        y_jax = jaxconv3d.conv3d(xj, wj, bj, precision=precision, **case.kwargs())
    np.testing.assert_array_equal(y.detach().cpu().double().numpy(), np.asarray(y_jax).astype(np.float64))


def test_first_layer_folds_taps_on_hopper():
    """A first layer (under 16 bytes of input channels per pixel) runs on Hopper with its (H, W) filter taps folded
    into the channels (x gathered into the workspace, padded to 16 bytes in 16-bit and 128 bytes in float32) for a
    grad-input hopper_smallc does not take (strided here), and for a forward or grad-weight whose (channel, tap) columns are too many for hopper_smallc's
    registers (float32-accurate: grad-input only, as 3xTF32); few output channels stay on sm80."""
    if not hopper_accepts(**DENSE, dtype="bfloat16"):
        pytest.skip("the Hopper family is not linked in this build")
    rgb = dict(x_shape=(2, 3, 8, 8, 8), w_shape=(64, 3, 3, 3, 3))
    strided = dict(stride=(1, 1, 2))  # hopper_smallc's grad-input takes stride 1 only
    bf16 = jaxconv3d.explain(**rgb, dtype="bfloat16", cc=90, **strided)
    assert bf16["forward"]["family"] == bf16["grad_weight"]["family"] == "hopper_smallc"
    assert bf16["grad_input"]["family"] == "hopper"
    assert bf16["grad_input"]["tile"].endswith("_hw_taps_folded_into32_channels")  # 27 -> 32
    xf, wf = 2 * 8 * 6 * 3 * 32 * 2, 64 * 3 * 32 * 2  # (N, D, Ho, Wo, 32) and (64, 3, 1, 1, 32) in bf16
    assert bf16["grad_input"]["workspace_bytes"] >= xf + wf  # dxf and the folded filter
    long_k = jaxconv3d.explain((2, 3, 8, 8, 8), (64, 3, 3, 5, 5), dtype="bfloat16", cc=90)  # K = 225 > 192
    assert families(long_k) == {"hopper"}
    assert "x2x64B_kmajor_tapgroups" in long_k["forward"]["tile"]  # the folded (3, 1, 1) conv: two taps a K-tile
    assert long_k["forward"]["workspace_bytes"] >= 2 * 8 * 4 * 4 * 80 * 2  # xf: 75 folded channels, padded to 80
    assert long_k["grad_weight"]["tile"].endswith("_w_taps_folded_into16_channels")  # 75 > 64: W taps only
    tf32 = jaxconv3d.explain((2, 3, 8, 8, 8), (64, 3, 3, 3, 5), precision="tf32", cc=90)  # K = 135 > 96
    assert families(tf32) == {"hopper"} and tf32["grad_weight"]["tile"].endswith("into32_channels")
    wide = jaxconv3d.explain((2, 3, 9, 9, 9), (64, 3, 3, 7, 7), dtype="float16", cc=90)  # 147 > 64: W taps only
    assert wide["forward"]["family"] == "hopper"
    assert wide["forward"]["tile"].endswith("_w_taps_folded_into24_channels")
    accurate = jaxconv3d.explain(**rgb, cc=90, **strided)  # float32-accurate: grad-input folded as 3xTF32
    assert accurate["forward"]["family"] == accurate["grad_weight"]["family"] == "hopper_smallc"
    assert accurate["grad_input"]["family"] == "hopper"
    assert accurate["grad_input"]["tile"].startswith("tma_3xtf32_wgmma_128x64")
    assert accurate["grad_input"]["tile"].endswith("_hw_taps_folded_into32_channels")
    few_out = jaxconv3d.explain((2, 3, 8, 8, 8), (8, 3, 3, 3, 3), dtype="bfloat16", cc=90)
    assert families(few_out) == {"sm80"}  # 8 output channels: a 64-wide tile would be mostly padding


def test_family_override_follows_the_environment(monkeypatch):
    """The per-call JAXCONV3D_FAMILY read (a dict lookup in os.environ's store) sees every change, as os.environ does."""
    monkeypatch.delenv("JAXCONV3D_FAMILY", raising=False)
    assert _plan.family_override() == ""
    for value in ("sm80", "cpu", "stencil", ""):
        monkeypatch.setenv("JAXCONV3D_FAMILY", value)
        assert _plan.family_override() == value == os.environ["JAXCONV3D_FAMILY"]
    monkeypatch.delenv("JAXCONV3D_FAMILY")
    assert _plan.family_override() == ""
