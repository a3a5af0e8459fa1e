"""Batching and differentiation rules for the four FFI operations.

Batching (`jax.custom_batching.custom_vmap`): a vmapped axis never becomes a Python loop. When only activations
carry it, it folds into the batch N; when a weight or bias carries it (per-example filters, per-example
gradients), it folds into the groups: activations become (N, B*C, ...), filters (B*O, ...), groups B*g, which is
the same arithmetic as B independent convolutions in one launch.

Differentiation (`jax.custom_vjp`): conv, grad-input, grad-weight and grad-bias are each differentiable, with
VJPs written in terms of one another (grad-input's VJP is a forward conv and a grad-weight, and so on), so
grad-of-grad works to any order. `grads` is grad-input and grad-weight as one operation (one kernel where the
dispatcher fuses them, bitwise the pair's results); conv's VJP takes it where both x and w are differentiated.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap
from jax.custom_derivatives import SymbolicZero

from . import _ffi, _plan
from ._params import ConvConfig
from ._sharding import ACT, BIAS, FILT, batch_partitioned  # operand roles: activation, filter, bias


def _fold_into_batch(arr, batched: bool, size: int):
    arr = arr if batched else jnp.broadcast_to(arr, (size, *arr.shape))
    return arr.reshape(size * arr.shape[1], *arr.shape[2:])


def _fold_into_channels(arr, role: str, batched: bool, size: int):
    """(B, ...) -> the grouped layout: act (N, B*C, ...), filter (B*O, ...), bias (B*O,)."""
    if role == BIAS and arr.shape[-1] == 0:  # "no bias" placeholder stays empty
        return arr if not batched else arr[0]
    arr = arr if batched else jnp.broadcast_to(arr, (size, *arr.shape))
    if role == ACT:
        arr = jnp.moveaxis(arr, 0, 1)  # (N, B, C, ...)
        return arr.reshape(arr.shape[0], size * arr.shape[2], *arr.shape[3:])
    return arr.reshape(size * arr.shape[1], *arr.shape[2:])


def _unfold_from_channels(out, role: str, size: int):
    if role == ACT:
        out = out.reshape(out.shape[0], size, out.shape[1] // size, *out.shape[2:])
        return jnp.moveaxis(out, 1, 0)
    return out.reshape(size, out.shape[0] // size, *out.shape[1:])


def _outputs(out_role, shape_of: Callable, cfg: ConvConfig) -> tuple[tuple, tuple, bool]:
    """(roles, shapes, several) of an operation's results: `out_role` is a role, or a tuple of roles for an
    operation with several results (whose `shape_of` then gives a tuple of shapes)."""
    if isinstance(out_role, tuple):
        return out_role, shape_of(cfg), True
    return (out_role,), (shape_of(cfg),), False


def _batched_op(call: Callable, in_roles: Sequence[str], out_role, grouped: bool, shape_of: Callable) -> Callable:
    """Wrap `call(*arrays, cfg)` in custom_vmap with the folding rules above.

    `grouped` says whether the operation has a groups attribute in `cfg` (grad-bias does not: it is per channel).
    `shape_of(cfg)` is the result's shape: a zero-length vmapped axis gives the empty result (as lax does).
    `out_role` may be a tuple (several results; each unfolds by its own role).
    """

    def make(cfg):
        @custom_vmap
        def op(*arrays):
            return call(*arrays, cfg)

        @op.def_vmap
        def rule(axis_size, in_batched, *arrays):
            out_roles, shapes, several = _outputs(out_role, shape_of, cfg)

            def result(outs):
                return (tuple(outs), (True,) * len(outs)) if several else (outs[0], True)

            if axis_size == 0:
                return result([jnp.zeros((0, *s), arrays[0].dtype) for s in shapes])
            fold_batch = all(r == ACT for r in out_roles) and all(
                not batched or role == ACT for role, batched in zip(in_roles, in_batched)
            )
            if fold_batch:
                args = [
                    _fold_into_batch(a, batched, axis_size) if role == ACT else a
                    for a, role, batched in zip(arrays, in_roles, in_batched)
                ]
                folded = cfg.replace(batch=cfg.batch * axis_size)
                out = _op(folded)(*args)
                outs = out if several else (out,)
                return result([o.reshape(axis_size, o.shape[0] // axis_size, *o.shape[1:]) for o in outs])
            args = [
                _fold_into_channels(a, role, batched, axis_size)
                for a, role, batched in zip(arrays, in_roles, in_batched)
            ]
            folded = cfg.replace(
                in_channels=cfg.in_channels * axis_size,
                out_channels=cfg.out_channels * axis_size,
                groups=cfg.groups * axis_size if grouped else cfg.groups,
            )
            out = _op(folded)(*args)
            outs = out if several else (out,)
            return result([_unfold_from_channels(o, r, axis_size) for o, r in zip(outs, out_roles)])

        return op

    # One custom_vmap object per static config, so jit caches stay warm. The key also holds JAXCONV3D_FAMILY: the
    # layout an FFI call is traced with follows the dispatcher's answer, which that variable can change, and JAX
    # would otherwise replay a trace made under another value.
    _cached = functools.lru_cache(maxsize=None)(lambda cfg, family: make(cfg))

    def _op(cfg):
        return _cached(cfg, _plan.family_override())

    return lambda *arrays, cfg: _op(cfg)(*arrays)


def _guard_empty(call: Callable, out_role, shape_of: Callable[[ConvConfig], tuple]) -> Callable:
    """A zero-size batch needs no kernel: return zeros of the right shape(s)."""

    def run(*arrays_and_cfg):
        *arrays, cfg = arrays_and_cfg
        if cfg.batch == 0:
            _, shapes, several = _outputs(out_role, shape_of, cfg)
            zeros = tuple(jnp.zeros(s, arrays[0].dtype) for s in shapes)
            return zeros if several else zeros[0]
        return call(*arrays, cfg)

    return run


def _operation(call: Callable, in_roles, out_role, shape_of, grouped: bool, parts=()) -> Callable:
    """An FFI call with its sharding rule, its zero-batch guard and its batching rule, innermost first."""
    partitioned = batch_partitioned(call, in_roles, out_role, parts)
    return _batched_op(_guard_empty(partitioned, out_role, shape_of), in_roles, out_role, grouped, shape_of)


_fwd = _operation(_ffi.fwd, (ACT, FILT, BIAS), ACT, lambda c: c.y_shape, True)
_dgrad = _operation(_ffi.dgrad, (ACT, FILT), ACT, lambda c: c.x_shape, True)
_wgrad = _operation(_ffi.wgrad, (ACT, ACT), FILT, lambda c: c.w_shape, True)
_bgrad = _operation(lambda dy, cfg: _ffi.bgrad(dy), (ACT,), BIAS, lambda c: (c.out_channels,), False)
# (x, w, dy) -> (dx, dw); on sharded slabs with halos, each result by its own operation's plan
_grads = _operation(_ffi.grads, (ACT, FILT, ACT), (ACT, FILT), lambda c: (c.x_shape, c.w_shape), True,
                    parts=((_ffi.dgrad, (2, 1), (ACT, FILT)), (_ffi.wgrad, (0, 2), (ACT, ACT))))


def _bias_cfg(cfg: ConvConfig) -> ConvConfig:
    """Grad-bias sees only dy: describe it as a per-channel problem so vmap folding is consistent."""
    return cfg.replace(in_channels=cfg.out_channels, groups=cfg.out_channels)


# ---- differentiable operations


def _like_primal(ct, primal):
    """Inside shard_map, a cotangent may vary along mesh axes its primal does not (the grad of a replicated weight
    from sharded activations); sum it over those axes, as JAX does for its own ops."""
    extra = _ffi.varying_axes(jax.typeof(ct)) - _ffi.varying_axes(jax.typeof(primal))
    return jax.lax.psum(ct, tuple(sorted(extra))) if extra else ct


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def conv(x, w, b, cfg: ConvConfig):
    return _fwd(x, w, b, cfg=cfg)


def _conv_fwd(x, w, b, cfg):
    # symbolic_zeros: each primal comes as a CustomVJPPrimal saying whether it is differentiated (`perturbed`); the
    # residual's structure (the keys of "need", a static part of the pytree) carries that to the backward rule.
    # The forward rule calls the differentiable op so an outer transformation can differentiate it again.
    need = {name: () for name, p in (("x", x), ("w", w), ("b", b)) if p.perturbed}
    return conv(x.value, w.value, b.value, cfg), dict(x=x.value, w=w.value, b=b.value, need=need)


def _conv_bwd(cfg, res, g):
    x, w, b, need = res["x"], res["w"], res["b"], res["need"]
    if isinstance(g, SymbolicZero):  # the output's cotangent is zero: so are the operands'
        return None, None, None
    dx = dw = db = None
    if "x" in need and "w" in need:  # both: one launch where the dispatcher fuses them (bitwise the pair's results)
        dx, dw = grads(x, w, g, cfg)
    elif "x" in need:
        dx = input_grad(g, w, cfg)
    elif "w" in need:
        dw = weight_grad(x, g, cfg)
    if "b" in need and b.shape[0]:
        db = bias_grad(g, cfg)
    return tuple(None if ct is None else _like_primal(ct, p) for ct, p in ((dx, x), (dw, w), (db, b)))


conv.defvjp(_conv_fwd, _conv_bwd, symbolic_zeros=True)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def grads(x, w, dy, cfg: ConvConfig):
    """(input_grad(dy, w, cfg), weight_grad(x, dy, cfg)) as one operation."""
    return _grads(x, w, dy, cfg=cfg)


def _grads_fwd(x, w, dy, cfg):
    return grads(x, w, dy, cfg), (x, w, dy)


def _grads_bwd(cfg, res, cts):
    x, w, dy = res  # the VJPs of input_grad(dy, w) and weight_grad(x, dy); both reach dy
    d_dy_input, d_w = _input_grad_bwd(cfg, (dy, w), cts[0])
    d_x, d_dy_weight = _weight_grad_bwd(cfg, (x, dy), cts[1])
    return d_x, d_w, d_dy_input + d_dy_weight


grads.defvjp(_grads_fwd, _grads_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def input_grad(dy, w, cfg: ConvConfig):
    return _dgrad(dy, w, cfg=cfg)


def _input_grad_fwd(dy, w, cfg):
    return input_grad(dy, w, cfg), (dy, w)


def _input_grad_bwd(cfg, res, c):
    dy, w = res  # <c, dgrad(dy, w)> = <conv(c, w), dy>
    return _like_primal(conv(c, w, _ffi.no_bias(c.dtype), cfg), dy), _like_primal(weight_grad(c, dy, cfg), w)


input_grad.defvjp(_input_grad_fwd, _input_grad_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def weight_grad(x, dy, cfg: ConvConfig):
    return _wgrad(x, dy, cfg=cfg)


def _weight_grad_fwd(x, dy, cfg):
    return weight_grad(x, dy, cfg), (x, dy)


def _weight_grad_bwd(cfg, res, c):
    x, dy = res  # <c, wgrad(x, dy)> = <conv(x, c), dy>
    return _like_primal(input_grad(dy, c, cfg), x), _like_primal(conv(x, c, _ffi.no_bias(x.dtype), cfg), dy)


weight_grad.defvjp(_weight_grad_fwd, _weight_grad_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def bias_grad(dy, cfg: ConvConfig):
    return _bgrad(dy, cfg=_bias_cfg(cfg))


def _bias_grad_fwd(dy, cfg):
    return bias_grad(dy, cfg), dy.shape


def _bias_grad_bwd(cfg, shape, c):
    return (jnp.broadcast_to(c[None, :, None, None, None], shape),)


bias_grad.defvjp(_bias_grad_fwd, _bias_grad_bwd)
