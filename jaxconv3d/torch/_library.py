"""The operations as torch.library custom ops, so `torch.compile` keeps a convolution as one opaque node
(with a fake-tensor shape rule and an autograd rule) instead of breaking the graph at our extension call.

Eager calls on real tensors do not come here: they take the autograd.Functions of `_ops.py`, which skip the
dispatcher's per-call cost. Both paths launch the same kernels. Calls that the dispatcher must see come here even
in eager mode: fake and meta tensors (the fake rule gives the shape without touching data) and calls under a
Python dispatch mode (FakeTensorMode, FlopCounterMode, whose FLOP formulas are registered below).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .._params import conv_config
from . import _ops


def _config(x_shape, w_shape, stride, pad_lo, pad_hi, dilation, groups, math):
    return conv_config(
        tuple(x_shape),
        tuple(w_shape),
        None,
        stride=tuple(stride),
        padding=tuple(zip(pad_lo, pad_hi)),
        dilation=tuple(dilation),
        groups=groups,
        precision="tf32" if math else None,
        memoize=not torch.compiler.is_compiling(),
    )


@torch.library.custom_op("jaxconv3d::conv3d", mutates_args=())
def conv3d(
    x: torch.Tensor,
    w: torch.Tensor,
    b: Optional[torch.Tensor],
    stride: Sequence[int],
    pad_lo: Sequence[int],
    pad_hi: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    math: int,
) -> torch.Tensor:
    cfg = _config(x.shape, w.shape, stride, pad_lo, pad_hi, dilation, groups, math)
    return _ops.fwd(x, w, b, cfg)


@conv3d.register_fake
def _(x, w, b, stride, pad_lo, pad_hi, dilation, groups, math):
    cfg = _config(x.shape, w.shape, stride, pad_lo, pad_hi, dilation, groups, math)
    return _ops.empty_like_result(cfg.y_shape, x, _ops.channels_last(x))


@torch.library.custom_op("jaxconv3d::conv3d_input_grad", mutates_args=())
def input_grad(
    dy: torch.Tensor,
    w: torch.Tensor,
    x_shape: Sequence[int],
    stride: Sequence[int],
    pad_lo: Sequence[int],
    pad_hi: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    math: int,
) -> torch.Tensor:
    cfg = _config(x_shape, w.shape, stride, pad_lo, pad_hi, dilation, groups, math)
    return _ops.dgrad(dy, w, cfg)


@input_grad.register_fake
def _(dy, w, x_shape, stride, pad_lo, pad_hi, dilation, groups, math):
    return _ops.empty_like_result(tuple(x_shape), dy, _ops.channels_last(dy))


@torch.library.custom_op("jaxconv3d::conv3d_weight_grad", mutates_args=())
def weight_grad(
    x: torch.Tensor,
    dy: torch.Tensor,
    w_shape: Sequence[int],
    stride: Sequence[int],
    pad_lo: Sequence[int],
    pad_hi: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    math: int,
) -> torch.Tensor:
    cfg = _config(x.shape, w_shape, stride, pad_lo, pad_hi, dilation, groups, math)
    return _ops.wgrad(x, dy, cfg)


@weight_grad.register_fake
def _(x, dy, w_shape, stride, pad_lo, pad_hi, dilation, groups, math):
    return x.new_empty(tuple(w_shape))


@torch.library.custom_op("jaxconv3d::conv3d_grads", mutates_args=())
def grads(
    x: torch.Tensor,
    w: torch.Tensor,
    dy: torch.Tensor,
    stride: Sequence[int],
    pad_lo: Sequence[int],
    pad_hi: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    math: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad-input, grad-weight) of one backward: one kernel where the dispatcher fuses them (bitwise the two
    operations' results), the two operations elsewhere; dx in dy's memory format, dw in w's."""
    cfg = _config(x.shape, w.shape, stride, pad_lo, pad_hi, dilation, groups, math)
    dx, dw, _ = _ops.conv_grads(dy, x, w, cfg, True, True, False)
    return dx, dw


@grads.register_fake
def _(x, w, dy, stride, pad_lo, pad_hi, dilation, groups, math):
    return (_ops.empty_like_result(tuple(x.shape), dy, _ops.channels_last(dy)),
            _ops.empty_like_result(tuple(w.shape), w, _ops.channels_last(w)))


@torch.library.custom_op("jaxconv3d::conv3d_bias_grad", mutates_args=())
def bias_grad(dy: torch.Tensor) -> torch.Tensor:
    return _ops.bgrad(dy)


@bias_grad.register_fake
def _(dy):
    return dy.new_empty((dy.shape[1],))


# ---- autograd: the same identities as _ops.py (<c, dgrad(dy, w)> = <conv(c, w), dy>, ...), written with the ops
# themselves so double backward stays inside the compiled graph.


def _conv_setup(ctx, inputs, output):
    x, w, b, *attrs = inputs
    ctx.attrs = attrs
    ctx.has_bias = b is not None
    ctx.save_for_backward(x, w)


def _conv_backward(ctx, gy):
    x, w = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    if need_x and need_w:  # one op, as the eager backward's one adapter call
        dx, dw = grads(x, w, gy, *ctx.attrs)
    else:
        dx = input_grad(gy, w, x.shape, *ctx.attrs) if need_x else None
        dw = weight_grad(x, gy, w.shape, *ctx.attrs) if need_w else None
    db = bias_grad(gy) if ctx.has_bias and need_b else None
    return (dx, dw, db) + (None,) * len(ctx.attrs)


conv3d.register_autograd(_conv_backward, setup_context=_conv_setup)


def _input_grad_setup(ctx, inputs, output):
    dy, w, x_shape, *attrs = inputs
    ctx.attrs = attrs
    ctx.save_for_backward(dy, w)


def _input_grad_backward(ctx, c):
    dy, w = ctx.saved_tensors
    d_dy = conv3d(c, w, None, *ctx.attrs) if ctx.needs_input_grad[0] else None
    d_w = weight_grad(c, dy, w.shape, *ctx.attrs) if ctx.needs_input_grad[1] else None
    return (d_dy, d_w) + (None,) * (1 + len(ctx.attrs))


input_grad.register_autograd(_input_grad_backward, setup_context=_input_grad_setup)


def _weight_grad_setup(ctx, inputs, output):
    x, dy, w_shape, *attrs = inputs
    ctx.attrs = attrs
    ctx.save_for_backward(x, dy)


def _weight_grad_backward(ctx, c):
    x, dy = ctx.saved_tensors
    d_x = input_grad(dy, c, x.shape, *ctx.attrs) if ctx.needs_input_grad[0] else None
    d_dy = conv3d(x, c, None, *ctx.attrs) if ctx.needs_input_grad[1] else None
    return (d_x, d_dy) + (None,) * (1 + len(ctx.attrs))


weight_grad.register_autograd(_weight_grad_backward, setup_context=_weight_grad_setup)


def _grads_setup(ctx, inputs, output):
    x, w, dy, *attrs = inputs
    ctx.attrs = attrs
    ctx.save_for_backward(x, w, dy)


def _grads_backward(ctx, c_dx, c_dw):
    x, w, dy = ctx.saved_tensors  # the VJPs of input_grad(dy, w) and weight_grad(x, dy); both reach dy
    need_x, need_w, need_dy = ctx.needs_input_grad[:3]
    d_x = input_grad(dy, c_dw, x.shape, *ctx.attrs) if need_x else None
    d_w = weight_grad(c_dx, dy, w.shape, *ctx.attrs) if need_w else None
    d_dy = conv3d(c_dx, w, None, *ctx.attrs) + conv3d(x, c_dw, None, *ctx.attrs) if need_dy else None
    return (d_x, d_w, d_dy) + (None,) * len(ctx.attrs)


grads.register_autograd(_grads_backward, setup_context=_grads_setup)


def _bias_grad_setup(ctx, inputs, output):
    ctx.shape = inputs[0].shape


def _bias_grad_backward(ctx, c):
    return c[None, :, None, None, None].expand(ctx.shape)


bias_grad.register_autograd(_bias_grad_backward, setup_context=_bias_grad_setup)


# ---- FLOP counts for torch.utils.flop_counter.FlopCounterMode: the formulas it uses for aten.convolution and
# aten.convolution_backward, so a model counts the same with our layers as with nn.Conv3d.


def _swap01(shape):
    return [shape[1], shape[0], *shape[2:]]


def _register_flop_formulas() -> None:
    from torch.utils.flop_counter import conv_flop_count, register_flop_formula

    @register_flop_formula(torch.ops.jaxconv3d.conv3d)
    def _(x_shape, w_shape, *args, out_shape=None, **kwargs):
        return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)

    @register_flop_formula(torch.ops.jaxconv3d.conv3d_input_grad)
    def _(dy_shape, w_shape, *args, out_shape=None, **kwargs):
        return conv_flop_count(dy_shape, w_shape, out_shape, transposed=True)

    @register_flop_formula(torch.ops.jaxconv3d.conv3d_weight_grad)
    def _(x_shape, dy_shape, *args, out_shape=None, **kwargs):
        return conv_flop_count(_swap01(x_shape), _swap01(dy_shape), _swap01(out_shape), transposed=False)

    @register_flop_formula(torch.ops.jaxconv3d.conv3d_grads)
    def _(x_shape, w_shape, dy_shape, *args, out_shape=None, **kwargs):
        dx_shape, dw_shape = out_shape
        return (conv_flop_count(dy_shape, w_shape, dx_shape, transposed=True)
                + conv_flop_count(_swap01(x_shape), _swap01(dy_shape), _swap01(dw_shape), transposed=False))


_register_flop_formulas()
