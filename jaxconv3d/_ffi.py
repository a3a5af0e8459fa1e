"""Load the extension, register its XLA FFI targets exactly once, and wrap each operation in `jax.ffi.ffi_call`.

The wrappers take rank-5 arrays and a ConvConfig; batching and differentiation live in `_autodiff.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import _ext
from ._params import ConvConfig

_registered = False


def register() -> None:
    """Register the cpu and CUDA handlers with XLA (idempotent; registering twice would raise)."""
    global _registered
    if _registered:
        return
    for platform, targets in _ext.registrations().items():
        for name, capsule in targets.items():
            jax.ffi.register_ffi_target(name, capsule, platform=platform)
    _registered = True


def _attrs(cfg: ConvConfig) -> dict:
    a = cfg.attrs()
    return dict(
        stride=np.asarray(a["stride"], np.int64),
        pad_lo=np.asarray(a["pad_lo"], np.int64),
        pad_hi=np.asarray(a["pad_hi"], np.int64),
        dilation=np.asarray(a["dilation"], np.int64),
        groups=int(a["groups"]),
        math=int(a["math"]),
    )


def varying_axes(aval) -> frozenset:
    """Mesh axes along which a value varies inside shard_map (the field's name changed across JAX versions)."""
    manual = getattr(aval, "manual_axis_type", None)
    if manual is not None:
        return frozenset(getattr(manual, "varying", ()))
    return frozenset(getattr(aval, "vma", ()))


def _result_type(shape, dtype, *operands):
    """Result type of an FFI call: inside shard_map it must vary along the same mesh axes as its operands, or
    custom_vjp rejects the cotangents; elsewhere a plain ShapeDtypeStruct."""
    avals = [jax.typeof(a) for a in operands]
    widest = max(avals, key=lambda a: len(varying_axes(a)))
    if not varying_axes(widest):
        return jax.ShapeDtypeStruct(shape, dtype)
    return widest.update(shape=tuple(shape), dtype=dtype)


def fwd(x: jax.Array, w: jax.Array, b: jax.Array, cfg: ConvConfig) -> jax.Array:
    """y = conv(x, w) + b; `b` is (O,) or empty (no bias)."""
    out = _result_type(cfg.y_shape, x.dtype, x, w, b)
    return jax.ffi.ffi_call("jaxconv3d_fwd", out)(x, w, b, **_attrs(cfg))


def dgrad(dy: jax.Array, w: jax.Array, cfg: ConvConfig) -> jax.Array:
    out = _result_type(cfg.x_shape, dy.dtype, dy, w)
    return jax.ffi.ffi_call("jaxconv3d_dgrad", out)(dy, w, **_attrs(cfg))


_DTYPE_CODES = {"float32": 0, "float64": 1, "bfloat16": 2, "float16": 3}


def wgrad_workspace_bytes(cfg: ConvConfig, dtype) -> int:
    a = cfg.attrs()
    return _ext.wgrad_workspace_bytes(
        cfg.x_shape, cfg.w_shape, cfg.y_shape, a["stride"], a["pad_lo"], a["pad_hi"], a["dilation"],
        a["groups"], a["math"], _DTYPE_CODES[jnp.dtype(dtype).name],
    )


def wgrad(x: jax.Array, dy: jax.Array, cfg: ConvConfig) -> jax.Array:
    """Grad-weight. Its split reduction needs a workspace: a second result that XLA allocates with the call (the
    CPU handler ignores it) and that is dropped here."""
    out = _result_type(cfg.w_shape, x.dtype, x, dy)
    ws = _result_type((wgrad_workspace_bytes(cfg, x.dtype),), jnp.uint8, x, dy)
    dw, _ = jax.ffi.ffi_call("jaxconv3d_wgrad", (out, ws))(x, dy, **_attrs(cfg))
    return dw


def bgrad(dy: jax.Array) -> jax.Array:
    out = _result_type((dy.shape[1],), dy.dtype, dy)
    return jax.ffi.ffi_call("jaxconv3d_bgrad", out)(dy)


def no_bias(dtype) -> jax.Array:
    return jnp.zeros((0,), dtype)
