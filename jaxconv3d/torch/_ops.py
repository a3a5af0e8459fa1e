"""The torch door: torch tensors -> DLPack capsules -> the C++ adapter -> the same kernels as the JAX front.

No JAX on this path. Outputs are allocated by torch on the inputs' device, kernels run on torch's current stream
of that device, and every operation is a differentiable autograd.Function whose backward is written with the
others, so double backward works.

Layouts: tensors here are logical NCDHW / OIDHW torch tensors of any memory format. Each operation asks the
dispatcher (`_plan`) which layout the device's kernel family wants and hands the adapter logical tensors compact in
that memory order: channels_last_3d tensors for NDHWC (as they are: no copy, no permuted view), contiguous ones for
NCDHW; outputs are allocated in that order. Activations come back in the memory format of the incoming activation
(channels_last_3d in, channels_last_3d out, as F.conv3d does); weight gradients come back in the weight's format.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch._functorch import utils as _functorch_utils
from torch.utils.dlpack import to_dlpack

from .. import _ext, _plan
from .._params import ConvConfig

_adapter = _ext.torch_adapter
_CL, _PLAIN = torch.channels_last_3d, torch.contiguous_format


_to_dlpack = getattr(torch._C, "_to_dlpack", to_dlpack)  # the C function behind to_dlpack, without its wrapper
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _cap(t: torch.Tensor):
    """A DLPack capsule of t's data. DLPack has no negative bit: a lazily negated view (torch._neg_view, the imaginary
    part of a conjugate) is materialised first, or the kernels would read it without its sign. A tensor that requires
    grad is exported through a detached view (the capsule carries data, never autograd history)."""
    if t.is_neg():
        return _to_dlpack(t.resolve_neg())
    return _to_dlpack(t.detach() if t.requires_grad else t)


def _stream(t: torch.Tensor) -> int:
    """torch's current stream on t's device, as the integer the adapter takes (0 for the CPU)."""
    if not t.is_cuda:
        return 0
    if _raw_stream is not None:
        return _raw_stream(t.get_device())
    return torch.cuda.current_stream(t.device).cuda_stream


def _attrs(cfg: ConvConfig) -> tuple:
    """The adapter's static arguments, in its order (the same ConvConfig.attrs() the FFI calls and the plan use)."""
    return tuple(cfg.attrs().values())


def _moved_channels(t: torch.Tensor, to_channels_last: bool) -> torch.Tensor | None:
    """A copy of a CUDA activation or filter by our layout kernel (torch's strided copy is several times slower for
    this permutation): contiguous -> channels_last_3d, or channels_last_3d -> contiguous. None where the kernel does
    not apply."""
    if t.device.type != "cuda" or t.dim() != 5 or t.numel() == 0 or not _ext.built_with_cuda():
        return None
    out = torch.empty(t.shape, dtype=t.dtype, device=t.device, memory_format=_CL if to_channels_last else _PLAIN)
    _adapter.convert_layout(_cap(t), _cap(out), to_channels_last, _stream(t))
    return out


def _contig(t: torch.Tensor) -> torch.Tensor:
    if t.is_contiguous():
        return t
    if channels_last(t):
        moved = _moved_channels(t, False)
        if moved is not None:
            return moved
    return t.contiguous()


def channels_last(t: torch.Tensor) -> bool:
    """A rank-5 tensor in channels_last_3d memory (and not also plain contiguous)."""
    return t.dim() == 5 and not t.is_contiguous() and t.is_contiguous(memory_format=_CL)


def layout_for(cfg: ConvConfig, t: torch.Tensor, op: str, held: int) -> int:
    """The layout the kernel family for `op` on t's device wants; `held` is the caller's (the cpu takes either)."""
    return _launch(op, cfg, t, held).layout


class _Launch(NamedTuple):
    """What one operation needs besides its tensors, worked out once per (operation, problem, dtype, device, caller's
    layout): the layout the family reads and writes (and allocates the output in: channels_last_3d for NDHWC), the
    output's logical shape, the workspace size, and the adapter's static arguments."""

    layout: int
    out_shape: tuple[int, ...]  # logical: (N, C, D, H, W) or (O, C/g, kD, kH, kW)
    workspace_bytes: int
    attrs: tuple  # stride, pad_lo, pad_hi, dilation, groups, math, layout


_OUTPUT_SHAPE = {"forward": "y_shape", "grad_input": "x_shape", "grad_weight": "w_shape"}


def _launch(op: str, cfg: ConvConfig, like: torch.Tensor, held: int) -> _Launch:
    """The _Launch of `op` for tensors like `like`; JAXCONV3D_FAMILY is part of the key (the C++ door reads it too)."""
    return _launch_of(op, cfg, like.dtype, like.device, held, _plan.family_override())


@functools.lru_cache(maxsize=4096)
def _launch_of(op: str, cfg: ConvConfig, dtype: torch.dtype, device: torch.device, held: int,
               family: str) -> _Launch:
    answer = _plan.plan(cfg, dtype, _plan.cc_of(device), op, held)
    layout = _plan.LAYOUTS[answer["layout"]]
    workspace = answer["workspace_bytes"] if device.type == "cuda" else 0
    return _Launch(layout, tuple(getattr(cfg, _OUTPUT_SHAPE[op])), workspace, (*_attrs(cfg), layout))


def _physical(t: torch.Tensor, layout: int) -> torch.Tensor:
    """A logical (outer, C, D, H, W) tensor compact in the layout's memory order: channels_last_3d for NDHWC,
    contiguous for NCDHW; the tensor itself where it already is."""
    if layout == _plan.NDHWC:
        if t.is_contiguous(memory_format=_CL):
            return t
        if t.is_contiguous():
            moved = _moved_channels(t, True)
            if moved is not None:
                return moved
        return t.contiguous(memory_format=_CL)
    return _contig(t)


def _output(launch: _Launch, like: torch.Tensor) -> torch.Tensor:
    """An operation's output (like's dtype and device), allocated in the memory order its kernel writes."""
    if launch.layout == _plan.NDHWC:
        return torch.empty(launch.out_shape, dtype=like.dtype, device=like.device, memory_format=_CL)
    return like.new_empty(launch.out_shape)


def _workspace(launch: _Launch, like: torch.Tensor):
    """The operation's scratch as a byte capsule, or None where its family needs none."""
    return _workspace_of(launch.workspace_bytes, like)


def _workspace_of(nbytes: int, like: torch.Tensor):
    """`nbytes` of scratch on like's device as a byte capsule, or None for none."""
    if not nbytes:
        return None
    return _to_dlpack(torch.empty(nbytes, dtype=torch.uint8, device=like.device))


def _in_format(t: torch.Tensor, cl: bool) -> torch.Tensor:
    if cl:
        return t if t.is_contiguous(memory_format=_CL) else t.contiguous(memory_format=_CL)
    return _contig(t)


def empty_like_result(shape, like: torch.Tensor, cl: bool) -> torch.Tensor:
    """What an operation returns, without computing it (torch.compile's fake-tensor rule)."""
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=_CL if cl else torch.contiguous_format)


def fwd(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, cfg: ConvConfig) -> torch.Tensor:
    cl = channels_last(x)
    launch = _launch("forward", cfg, x, int(cl))
    y = _output(launch, x)
    if cfg.batch:
        layout = launch.layout
        _adapter.fwd(
            _cap(_physical(x, layout)), _cap(_physical(w, layout)), None if b is None else _cap(_contig(b)),
            _fresh_cap(y), _workspace(launch, x), *launch.attrs, _stream(x),
        )
    return _in_format(y, cl)


def dgrad(dy: torch.Tensor, w: torch.Tensor, cfg: ConvConfig) -> torch.Tensor:
    cl = channels_last(dy)
    launch = _launch("grad_input", cfg, dy, int(cl))
    dx = _output(launch, dy)
    if cfg.batch:
        layout = launch.layout
        _adapter.dgrad(
            _cap(_physical(dy, layout)), _cap(_physical(w, layout)), _fresh_cap(dx), _workspace(launch, dy),
            *launch.attrs, _stream(dy),
        )
    return _in_format(dx, cl)


def wgrad(x: torch.Tensor, dy: torch.Tensor, cfg: ConvConfig, cl: bool = False) -> torch.Tensor:
    """Grad-weight, contiguous, or channels_last_3d with `cl` (the weight's own format: no conversion when the
    family writes ODHWI, and none by torch when it accumulates the gradient into a channels-last parameter)."""
    if not cfg.batch:
        return torch.zeros(cfg.w_shape, dtype=x.dtype, device=x.device)
    launch = _launch("grad_weight", cfg, x, int(channels_last(x)))
    dw = _output(launch, x)
    layout = launch.layout
    _adapter.wgrad(
        _cap(_physical(x, layout)), _cap(_physical(dy, layout)), _fresh_cap(dw), _workspace(launch, x), *launch.attrs,
        _stream(x),
    )
    return _in_format(dw, cl)


def bgrad(dy: torch.Tensor) -> torch.Tensor:
    db = torch.empty((dy.shape[1],), dtype=dy.dtype, device=dy.device)
    if dy.shape[0] == 0:
        return db.zero_()
    _adapter.bgrad(_cap(_contig(dy)), _fresh_cap(db), _stream(dy))
    return db


def conv_grads(gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, cfg: ConvConfig, need_dx: bool, need_dw: bool,
               need_db: bool) -> tuple:
    """(dx, dw, db) of y = conv3d(x, w) + b for the cotangent gy, each None where not needed: what dgrad, wgrad and
    bgrad return (dx in gy's memory format, dw in w's), computed in one adapter call. A training step's backward
    pays one crossing (one GIL release, one device switch) instead of three and one capsule per distinct tensor; a
    dy that both convolutions read in one layout is converted (if at all) once, and one workspace serves both (they
    run one after the other on the stream). The door checks all three before it launches any."""
    if not cfg.batch:  # nothing to launch: the single operations know what an empty batch gives
        return (dgrad(gy, w, cfg) if need_dx else None, wgrad(x, gy, cfg, channels_last(w)) if need_dw else None,
                bgrad(gy) if need_db else None)
    family, gy_cl = _plan.family_override(), channels_last(gy)
    to_input = _launch_of("grad_input", cfg, gy.dtype, gy.device, int(gy_cl), family)
    to_weight = _launch_of("grad_weight", cfg, gy.dtype, gy.device, int(channels_last(x)), family)
    gy_input = _physical(gy, to_input.layout) if need_dx else None
    gy_weight = (gy_input if gy_input is not None and to_weight.layout == to_input.layout
                 else _physical(gy, to_weight.layout)) if need_dw else None
    dx = _output(to_input, gy) if need_dx else None
    dw = _output(to_weight, gy) if need_dw else None
    db = gy.new_empty((cfg.out_channels,)) if need_db else None
    workspace = max(to_input.workspace_bytes if need_dx else 0, to_weight.workspace_bytes if need_dw else 0)
    dy_input, dy_weight, dy_bias = _capsules(gy_input, gy_weight, _contig(gy) if need_db else None)
    _adapter.bwd(
        dy_input, _cap(_physical(w, to_input.layout)) if need_dx else None, _fresh_cap(dx),
        _cap(_physical(x, to_weight.layout)) if need_dw else None, dy_weight, _fresh_cap(dw), dy_bias, _fresh_cap(db),
        _workspace_of(workspace, gy),
        *to_input.attrs, to_weight.layout, _stream(gy),  # attrs end with grad-input's layout; grad-weight's follows
    )
    return (None if dx is None else _in_format(dx, gy_cl), None if dw is None else _in_format(dw, channels_last(w)),
            db)


def _capsules(*tensors: torch.Tensor | None) -> list:
    """Capsules of `tensors` (None stays None), one per distinct tensor: the door only borrows capsules, so a dy
    that several operations read in the same memory order is exported once."""
    made: dict = {}
    return [None if t is None else made.get(id(t)) or made.setdefault(id(t), _cap(t)) for t in tensors]


def _fresh_cap(t: torch.Tensor | None):
    """The capsule of an output we just allocated (None stays None): a plain tensor, with no negative bit or autograd
    history to strip, so it skips _cap's checks."""
    return None if t is None else _to_dlpack(t)


# ---- torch.func: batching rules (a vmapped axis folds into the batch N when only activations carry it, else into
# the groups, as in the JAX front's _autodiff.py: one kernel launch per operation) and forward-mode rules (each
# operation is bilinear, so its tangent is the operation applied to one tangent and the other primal, summed).

ACT, FILT, BIAS = "act", "w", "b"  # operand roles: (N, C, ...) activation, (O, C/g, ...) filter, (O,) bias


def _fold(t: torch.Tensor | None, role: str, size: int, into_batch: bool) -> torch.Tensor | None:
    """A (B, ...) operand (None stays None) folded: into the batch ((B*N, ...)), or into the channels: act
    (N, B*C, ...), filter (B*O, ...), bias (B*O,)."""
    if t is None:
        return None
    if role == ACT and not into_batch:
        t = t.movedim(0, 1)
        return t.reshape(t.shape[0], size * t.shape[2], *t.shape[3:])
    return t.reshape(size * t.shape[1], *t.shape[2:])


def _unfold(out: torch.Tensor, role: str, size: int, into_batch: bool) -> torch.Tensor:
    if role == ACT and not into_batch:
        return out.reshape(out.shape[0], size, out.shape[1] // size, *out.shape[2:]).movedim(1, 0)
    return out.reshape(size, out.shape[0] // size, *out.shape[1:])


def _vmap_rule(fn, roles: tuple, out_role: str, shape_of):
    """The `vmap` staticmethod of autograd.Function `fn`, whose arguments are tensors in `roles`, then (except for
    grad-bias) a ConvConfig; `shape_of(cfg, first)` is the unbatched result's shape (for a zero-size axis), given
    the first vmapped operand with that axis first."""

    def vmap(info, in_dims, *args):
        size, n = info.batch_size, len(roles)
        tensors, extra = args[:n], args[n:]
        into_batch = out_role == ACT and all(d is None or r == ACT for r, d in zip(roles, in_dims))
        moved = [  # the vmapped axis first; unbatched operands broadcast along it when it goes into the channels
            t if t is None or (d is None and into_batch) else t.movedim(d, 0) if d is not None
            else t.expand(size, *t.shape)
            for t, d in zip(tensors, in_dims[:n])
        ]
        cfg = extra[0] if extra else None
        if size == 0:  # nothing to compute: the empty result, as vmap of the loop would give
            first = next(t for t, d in zip(moved, in_dims) if d is not None)
            return first.new_empty((0, *shape_of(cfg, first))), 0
        if cfg is not None:
            cfg = cfg.replace(batch=cfg.batch * size) if into_batch else cfg.replace(
                in_channels=cfg.in_channels * size, out_channels=cfg.out_channels * size, groups=cfg.groups * size)
        folded = [t if into_batch and d is None else _fold(t, r, size, into_batch)
                  for t, r, d in zip(moved, roles, in_dims)]
        out = fn.apply(*folded, *(() if cfg is None else (cfg,)))
        return _unfold(out, out_role, size, into_batch), 0

    return staticmethod(vmap)


def _tangent_sum(*terms):
    terms = [t for t in terms if t is not None]
    return functools.reduce(torch.add, terms) if terms else None


def _save_operands(ctx, inputs, output):
    """setup_context of grad-input and grad-weight: both tensor operands (for backward and for jvp) and the config."""
    a, b, cfg = inputs
    ctx.cfg = cfg
    ctx.save_for_backward(a, b)
    ctx.save_for_forward(a, b)


def _bilinear_jvp(fn):
    """jvp of fn(a, b, cfg), linear in each of a and b: fn(ta, b) + fn(a, tb)."""

    def jvp(ctx, ta, tb, _):
        a, b = ctx.saved_tensors
        return _tangent_sum(
            None if ta is None else fn.apply(ta, b, ctx.cfg), None if tb is None else fn.apply(a, tb, ctx.cfg)
        )

    return staticmethod(jvp)


class _Operation(torch.autograd.Function):
    """An autograd.Function whose `apply` skips torch's per-call default-argument binding.

    torch's `Function.apply` runs `inspect.signature(forward).bind(...)` on every call of a Function with
    `setup_context` (tens of microseconds, more than a small convolution's kernel). Our operations are always applied
    with every argument positional and no defaults, so that binding has nothing to do: outside functorch transforms
    we go straight to the C++ apply (after the same dead-wrapper unwrapping torch does); under vmap / grad / jvp
    torch's own `apply` runs unchanged."""

    @classmethod
    def apply(cls, *args):
        if torch._C._are_functorch_transforms_active():
            return super().apply(*args)
        return super(torch.autograd.Function, cls).apply(*_unwrap_dead(args))


def _unwrap_dead(args: tuple) -> tuple:
    return _functorch_utils.unwrap_dead_wrappers(args)


class ConvFunction(_Operation):
    """y = conv3d(x, w) + b with our kernels; backward through InputGrad / WeightGrad / bias sum."""

    @staticmethod
    def forward(x, w, b, cfg):
        return fwd(x, w, b, cfg)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, cfg = inputs
        ctx.cfg = cfg
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, w)
        ctx.save_for_forward(x, w)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        cfg = ctx.cfg
        need = ctx.needs_input_grad
        if not torch.is_grad_enabled() and not torch._C._are_functorch_transforms_active():
            # A first-order backward: nothing will differentiate these gradients, so the operations run directly
            # (no autograd nodes to build), all three in one adapter call. create_graph=True and torch.func
            # transforms take the Functions below.
            return (*conv_grads(gy, x, w, cfg, need[0], need[1], ctx.has_bias and need[2]), None)
        dx = InputGrad.apply(gy, w, cfg) if need[0] else None
        dw = WeightGrad.apply(x, gy, cfg) if need[1] else None
        db = BiasGrad.apply(gy) if ctx.has_bias and need[2] else None
        return dx, dw, db, None

    @staticmethod
    def jvp(ctx, tx, tw, tb, _):
        x, w = ctx.saved_tensors
        return _tangent_sum(
            None if tx is None else ConvFunction.apply(tx, w, None, ctx.cfg),
            None if tw is None else ConvFunction.apply(x, tw, None, ctx.cfg),
            None if tb is None else tb[None, :, None, None, None],
        )


class InputGrad(_Operation):
    @staticmethod
    def forward(dy, w, cfg):
        return dgrad(dy, w, cfg)

    setup_context = staticmethod(_save_operands)

    @staticmethod
    def backward(ctx, c):
        dy, w = ctx.saved_tensors  # <c, dgrad(dy, w)> = <conv(c, w), dy>
        d_dy = ConvFunction.apply(c, w, None, ctx.cfg) if ctx.needs_input_grad[0] else None
        d_w = WeightGrad.apply(c, dy, ctx.cfg) if ctx.needs_input_grad[1] else None
        return d_dy, d_w, None


class WeightGrad(_Operation):
    @staticmethod
    def forward(x, dy, cfg):
        return wgrad(x, dy, cfg)

    setup_context = staticmethod(_save_operands)

    @staticmethod
    def backward(ctx, c):
        x, dy = ctx.saved_tensors  # <c, wgrad(x, dy)> = <conv(x, c), dy>
        d_x = InputGrad.apply(dy, c, ctx.cfg) if ctx.needs_input_grad[0] else None
        d_dy = ConvFunction.apply(x, c, None, ctx.cfg) if ctx.needs_input_grad[1] else None
        return d_x, d_dy, None


class BiasGrad(_Operation):
    @staticmethod
    def forward(dy):
        return bgrad(dy)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.shape = inputs[0].shape

    @staticmethod
    def backward(ctx, c):
        return c[None, :, None, None, None].expand(ctx.shape)

    @staticmethod
    def jvp(ctx, t_dy):
        return BiasGrad.apply(t_dy)


InputGrad.jvp = _bilinear_jvp(InputGrad)
WeightGrad.jvp = _bilinear_jvp(WeightGrad)
ConvFunction.vmap = _vmap_rule(ConvFunction, (ACT, FILT, BIAS), ACT, lambda cfg, t: cfg.y_shape)
InputGrad.vmap = _vmap_rule(InputGrad, (ACT, FILT), ACT, lambda cfg, t: cfg.x_shape)
WeightGrad.vmap = _vmap_rule(WeightGrad, (ACT, ACT), FILT, lambda cfg, t: cfg.w_shape)
BiasGrad.vmap = _vmap_rule(BiasGrad, (ACT,), BIAS, lambda cfg, dy: (dy.shape[2],))
