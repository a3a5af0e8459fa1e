"""The torch door: torch tensors -> DLPack capsules -> the C++ adapter -> the same kernels as the JAX front.

No JAX on this path. Outputs are allocated by torch on the inputs' device, kernels run on torch's current stream
of that device, and every operation is a differentiable autograd.Function whose backward is written with the
others, so double backward works.
"""

from __future__ import annotations

import torch
from torch.utils.dlpack import to_dlpack

from .. import _ext
from .._params import ConvConfig

_adapter = _ext.torch_adapter


def _cap(t: torch.Tensor):
    return to_dlpack(t.detach())


def _stream(t: torch.Tensor) -> int:
    if t.device.type == "cuda":
        return torch.cuda.current_stream(t.device).cuda_stream
    return 0


def _attrs(cfg: ConvConfig) -> tuple:
    return (cfg.stride, cfg.pad_lo, cfg.pad_hi, cfg.dilation, cfg.groups, cfg.math)


def _contig(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_contiguous() else t.contiguous()


def fwd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, cfg: ConvConfig) -> torch.Tensor:
    y = torch.empty(cfg.y_shape, dtype=x.dtype, device=x.device)
    if cfg.batch:
        _adapter.fwd(_cap(x), _cap(w), None if b is None else _cap(b), _cap(y), *_attrs(cfg), _stream(x))
    return y


def dgrad(dy: torch.Tensor, w: torch.Tensor, cfg: ConvConfig) -> torch.Tensor:
    dx = torch.empty(cfg.x_shape, dtype=dy.dtype, device=dy.device)
    if cfg.batch:
        _adapter.dgrad(_cap(dy), _cap(w), _cap(dx), *_attrs(cfg), _stream(dy))
    return dx


def wgrad(x: torch.Tensor, dy: torch.Tensor, cfg: ConvConfig) -> torch.Tensor:
    dw = torch.empty(cfg.w_shape, dtype=x.dtype, device=x.device)
    if not cfg.batch:
        return dw.zero_()
    device = x.device

    def workspace(nbytes: int):
        return to_dlpack(torch.empty(nbytes, dtype=torch.uint8, device=device))

    _adapter.wgrad(_cap(x), _cap(dy), _cap(dw), workspace, *_attrs(cfg), _stream(x))
    return dw


def bgrad(dy: torch.Tensor) -> torch.Tensor:
    db = torch.empty((dy.shape[1],), dtype=dy.dtype, device=dy.device)
    if dy.shape[0] == 0:
        return db.zero_()
    _adapter.bgrad(_cap(dy), _cap(db), _stream(dy))
    return db


class ConvFunction(torch.autograd.Function):
    """y = conv3d(x, w) + b with our kernels; backward through InputGrad / WeightGrad / bias sum."""

    @staticmethod
    def forward(ctx, x, w, b, cfg):
        ctx.cfg = cfg
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, w)
        return fwd(x, w, b, cfg)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        cfg = ctx.cfg
        gy = _contig(gy)
        dx = InputGrad.apply(gy, w, cfg) if ctx.needs_input_grad[0] else None
        dw = WeightGrad.apply(x, gy, cfg) if ctx.needs_input_grad[1] else None
        db = BiasGrad.apply(gy) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db, None


class InputGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy, w, cfg):
        ctx.cfg = cfg
        ctx.save_for_backward(dy, w)
        return dgrad(dy, w, cfg)

    @staticmethod
    def backward(ctx, c):
        dy, w = ctx.saved_tensors  # <c, dgrad(dy, w)> = <conv(c, w), dy>
        c = _contig(c)
        d_dy = ConvFunction.apply(c, w, None, ctx.cfg) if ctx.needs_input_grad[0] else None
        d_w = WeightGrad.apply(c, dy, ctx.cfg) if ctx.needs_input_grad[1] else None
        return d_dy, d_w, None


class WeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dy, cfg):
        ctx.cfg = cfg
        ctx.save_for_backward(x, dy)
        return wgrad(x, dy, cfg)

    @staticmethod
    def backward(ctx, c):
        x, dy = ctx.saved_tensors  # <c, wgrad(x, dy)> = <conv(x, c), dy>
        c = _contig(c)
        d_x = InputGrad.apply(dy, c, ctx.cfg) if ctx.needs_input_grad[0] else None
        d_dy = ConvFunction.apply(x, c, None, ctx.cfg) if ctx.needs_input_grad[1] else None
        return d_x, d_dy, None


class BiasGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy):
        ctx.shape = dy.shape
        return bgrad(dy)

    @staticmethod
    def backward(ctx, c):
        return c[None, :, None, None, None].expand(ctx.shape)
