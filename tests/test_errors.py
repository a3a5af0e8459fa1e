"""Every bad input gets a clear exception naming the argument and the rule, before any kernel runs; the C++ doors
refuse inconsistent calls with an error instead of crashing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxconv3d
import jaxconv3d.torch as jt
from jaxconv3d import _ext, _ffi

GOOD_X, GOOD_W = (1, 4, 6, 6, 6), (6, 2, 3, 3, 3)

# (x shape, w shape, bias shape, kwargs, exception, message fragment)
BAD_CALLS = {
    "input rank": ((4, 6, 6), GOOD_W, None, {}, ValueError, "input must have shape"),
    "weight rank": (GOOD_X, (6, 2, 3, 3), None, {}, ValueError, "weight must have shape"),
    "channels vs weight": (GOOD_X, (6, 3, 3, 3, 3), None, dict(groups=2), ValueError, "input has 4 channels"),
    "in_channels vs groups": ((1, 5, 6, 6, 6), (6, 1, 3, 3, 3), None, dict(groups=3), ValueError,
                              "in_channels (5) must be divisible by groups"),
    "out_channels vs groups": (GOOD_X, (5, 2, 3, 3, 3), None, dict(groups=2), ValueError,
                               "out_channels (5) must be divisible by groups"),
    "negative padding": (GOOD_X, GOOD_W, None, dict(groups=2, padding=-1), ValueError, "padding along depth"),
    "negative pad pair": (GOOD_X, GOOD_W, None, dict(groups=2, padding=((0, 0), (1, -1), (0, 0))), ValueError,
                          "padding along height must be non-negative"),
    "zero stride": (GOOD_X, GOOD_W, None, dict(groups=2, stride=(1, 0, 1)), ValueError, "stride along height"),
    "negative stride": (GOOD_X, GOOD_W, None, dict(groups=2, stride=-2), ValueError, "stride along depth"),
    "zero dilation": (GOOD_X, GOOD_W, None, dict(groups=2, dilation=0), ValueError, "dilation along depth"),
    "zero-size kernel": (GOOD_X, (6, 2, 3, 0, 3), None, dict(groups=2), ValueError, "kernel size along height"),
    "kernel larger than padded input": (GOOD_X, (6, 2, 3, 3, 3), None, dict(groups=2, dilation=(1, 1, 3)),
                                        ValueError, "larger than the padded input"),
    "same with stride": (GOOD_X, GOOD_W, None, dict(groups=2, padding="same", stride=2), ValueError,
                         "padding='same' is not supported with stride > 1"),
    "bad padding string": (GOOD_X, GOOD_W, None, dict(groups=2, padding="full"), ValueError, "padding must be"),
    "bias shape": (GOOD_X, GOOD_W, (5,), dict(groups=2), ValueError, "bias must have shape (6,)"),
    "zero groups": (GOOD_X, GOOD_W, None, dict(groups=0), ValueError, "groups must be a positive int"),
    "bad precision": (GOOD_X, GOOD_W, None, dict(groups=2, precision="fp8"), ValueError, "precision must be"),
}


@pytest.mark.parametrize("front", ["jax", "torch"])
@pytest.mark.parametrize("rule", list(BAD_CALLS))
def test_bad_arguments_raise(front, rule):
    xs, ws, bs, kw, exc, fragment = BAD_CALLS[rule]
    if front == "jax":
        x, w = jnp.ones(xs, jnp.float32), jnp.ones(ws, jnp.float32)
        b = None if bs is None else jnp.ones(bs, jnp.float32)
        call = lambda: jaxconv3d.conv3d(x, w, b, **kw)  # noqa: E731
    else:
        x, w = torch.ones(xs), torch.ones(ws)
        b = None if bs is None else torch.ones(bs)
        call = lambda: jt.conv3d(x, w, b, **kw)  # noqa: E731
    with pytest.raises(exc, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_mixed_dtypes_raise():
    with pytest.raises(TypeError, match="weight has dtype float64 but input has dtype float32"):
        jaxconv3d.conv3d(jnp.ones(GOOD_X, jnp.float32), jnp.ones(GOOD_W, jnp.float64), groups=2)
    with pytest.raises(TypeError, match="bias has dtype bfloat16"):
        jt.conv3d(torch.ones(GOOD_X), torch.ones(GOOD_W), torch.ones(6, dtype=torch.bfloat16), groups=2)


def test_unsupported_dtype_raises():
    with pytest.raises(TypeError, match="input has dtype int32; supported dtypes"):
        jaxconv3d.conv3d(jnp.ones(GOOD_X, jnp.int32), jnp.ones(GOOD_W, jnp.int32), groups=2)
    with pytest.raises(TypeError, match="input has dtype int64"):
        jt.conv3d(torch.ones(GOOD_X, dtype=torch.int64), torch.ones(GOOD_W, dtype=torch.int64), groups=2)


def test_torch_tensors_on_different_devices_raise():
    with pytest.raises(ValueError, match="weight is on meta but input is on cpu"):
        jt.conv3d(torch.ones(GOOD_X), torch.ones(GOOD_W, device="meta"), groups=2)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        jt.conv3d(torch.ones(GOOD_X), np.ones(GOOD_W), groups=2)


def test_ffi_handler_rejects_inconsistent_call():
    """A direct FFI call with an output shape that does not match the attributes returns an error, not a crash."""
    _ffi.register()
    x = jnp.ones((1, 2, 5, 5, 5), jnp.float32)
    w = jnp.ones((3, 2, 3, 3, 3), jnp.float32)
    attrs = dict(stride=np.ones(3, np.int64), pad_lo=np.zeros(3, np.int64), pad_hi=np.zeros(3, np.int64),
                 dilation=np.ones(3, np.int64), groups=1, math=0, layout=0)
    ws = jax.ShapeDtypeStruct((0,), jnp.uint8)
    wrong = (jax.ShapeDtypeStruct((1, 3, 4, 3, 3), jnp.float32), ws)
    with pytest.raises(Exception, match="output depth is 4 but the convolution gives 3"):
        jax.block_until_ready(jax.ffi.ffi_call(_ffi.FWD, wrong)(x, w, jnp.zeros((0,)), **attrs))
    bad_attrs = dict(attrs, stride=np.ones(2, np.int64))
    right = (jax.ShapeDtypeStruct((1, 3, 3, 3, 3), jnp.float32), ws)
    with pytest.raises(Exception, match="stride must have 3 entries"):
        jax.block_until_ready(jax.ffi.ffi_call(_ffi.FWD, right)(x, w, jnp.zeros((0,)), **bad_attrs))
    with pytest.raises(Exception, match="same element type"):
        jax.block_until_ready(
            jax.ffi.ffi_call(_ffi.FWD, right)(x, w.astype(jnp.float64), jnp.zeros((0,)), **attrs)
        )
    with pytest.raises(Exception, match="layout must be 0"):
        jax.block_until_ready(jax.ffi.ffi_call(_ffi.FWD, right)(x, w, jnp.zeros((0,)), **dict(attrs, layout=5)))
    negative = dict(attrs, pad_lo=np.array([-1, 0, 0], np.int64))
    with pytest.raises(Exception, match="padding along depth must be non-negative"):
        jax.block_until_ready(jax.ffi.ffi_call(_ffi.FWD, right)(x, w, jnp.zeros((0,)), **negative))


def test_dlpack_adapter_rejects_inconsistent_call():
    from torch.utils.dlpack import to_dlpack

    a = _ext.torch_adapter
    x, w = torch.randn(1, 2, 5, 5, 5), torch.randn(3, 2, 3, 3, 3)
    y_wrong = torch.empty(1, 3, 4, 3, 3)
    args = (None, (1, 1, 1), (0, 0, 0), (0, 0, 0), (1, 1, 1), 1, 0, 0, 0)
    with pytest.raises(ValueError, match="output depth is 4"):
        a.fwd(to_dlpack(x), to_dlpack(w), None, to_dlpack(y_wrong), *args)
    with pytest.raises(ValueError, match="must be a DLPack capsule"):
        a.fwd(x, to_dlpack(w), None, to_dlpack(torch.empty(1, 3, 3, 3, 3)), *args)
    with pytest.raises(ValueError, match="must be contiguous"):
        a.fwd(to_dlpack(x.transpose(2, 3)), to_dlpack(w), None, to_dlpack(torch.empty(1, 3, 3, 3, 3)), *args)
    with pytest.raises(ValueError, match="all tensors must share one dtype"):
        a.fwd(to_dlpack(x), to_dlpack(w.double()), None, to_dlpack(torch.empty(1, 3, 3, 3, 3)), *args)
    with pytest.raises(ValueError, match="math must be 0"):
        a.fwd(to_dlpack(x), to_dlpack(w), None, to_dlpack(torch.empty(1, 3, 3, 3, 3)), *args[:6], 7, 0, 0)
    with pytest.raises(ValueError, match="layout must be 0"):
        a.fwd(to_dlpack(x), to_dlpack(w), None, to_dlpack(torch.empty(1, 3, 3, 3, 3)), *args[:7], 2, 0)
    # layout 1: logical tensors compact in channels-last order (torch's channels_last_3d), read as NDHWC / ODHWI
    cl = torch.channels_last_3d
    y_cl = torch.empty(1, 3, 3, 3, 3).contiguous(memory_format=cl)
    a.fwd(to_dlpack(x.contiguous(memory_format=cl)), to_dlpack(w.contiguous(memory_format=cl)), None,
          to_dlpack(y_cl), *args[:7], 1, 0)
    with pytest.raises(ValueError, match="input must be compact in channels-last"):  # contiguous tensors as NDHWC
        a.fwd(to_dlpack(x), to_dlpack(w.contiguous(memory_format=cl)), None, to_dlpack(y_cl), *args[:7], 1, 0)
    with pytest.raises(ValueError, match="output must be contiguous"):  # channels-last tensors as NCDHW
        a.fwd(to_dlpack(x), to_dlpack(w), None, to_dlpack(y_cl), *args)


@pytest.mark.skipif(not torch.cuda.is_available() or not _ext.built_with_cuda(), reason="needs a CUDA GPU")
def test_dlpack_adapter_checks_the_workspace_against_its_own_plan():
    """The torch door sizes the workspace from the plan; a missing or short one is an error, never a launch."""
    from torch.utils.dlpack import to_dlpack

    from jaxconv3d import _plan, conv_config

    cfg = conv_config((2, 32, 12, 12, 12), (32, 32, 3, 3, 3), None)
    cc = _plan.cc_of(torch.device("cuda"))
    answer = _plan.plan(cfg, "float32", cc, "grad_weight")
    if answer["workspace_bytes"] == 0:
        pytest.skip("this device's grad-weight family needs no workspace for the probe problem")
    layout = _plan.LAYOUTS[answer["layout"]]
    fmt = torch.channels_last_3d if layout else torch.contiguous_format
    x = torch.randn(cfg.x_shape, device="cuda").contiguous(memory_format=fmt)
    dy = torch.randn(cfg.y_shape, device="cuda").contiguous(memory_format=fmt)
    dw = torch.empty(cfg.w_shape, device="cuda").contiguous(memory_format=fmt)
    attrs = ((1, 1, 1), (0, 0, 0), (0, 0, 0), (1, 1, 1), 1, 0, layout, torch.cuda.current_stream().cuda_stream)
    a = _ext.torch_adapter
    with pytest.raises(ValueError, match="workspace: this operation needs"):
        a.wgrad(to_dlpack(x), to_dlpack(dy), to_dlpack(dw), None, *attrs)
    short = torch.empty(answer["workspace_bytes"] - 1, dtype=torch.uint8, device="cuda")
    with pytest.raises(ValueError, match="smaller than"):
        a.wgrad(to_dlpack(x), to_dlpack(dy), to_dlpack(dw), to_dlpack(short), *attrs)
