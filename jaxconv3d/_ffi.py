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


def fwd(x: jax.Array, w: jax.Array, b: jax.Array, cfg: ConvConfig) -> jax.Array:
    """y = conv(x, w) + b; `b` is (O,) or empty (no bias)."""
    out = jax.ShapeDtypeStruct(cfg.y_shape, x.dtype)
    return jax.ffi.ffi_call("jaxconv3d_fwd", out)(x, w, b, **_attrs(cfg))


def dgrad(dy: jax.Array, w: jax.Array, cfg: ConvConfig) -> jax.Array:
    out = jax.ShapeDtypeStruct(cfg.x_shape, dy.dtype)
    return jax.ffi.ffi_call("jaxconv3d_dgrad", out)(dy, w, **_attrs(cfg))


def wgrad(x: jax.Array, dy: jax.Array, cfg: ConvConfig) -> jax.Array:
    out = jax.ShapeDtypeStruct(cfg.w_shape, x.dtype)
    return jax.ffi.ffi_call("jaxconv3d_wgrad", out)(x, dy, **_attrs(cfg))


def bgrad(dy: jax.Array) -> jax.Array:
    out = jax.ShapeDtypeStruct((dy.shape[1],), dy.dtype)
    return jax.ffi.ffi_call("jaxconv3d_bgrad", out)(dy)


def no_bias(dtype) -> jax.Array:
    return jnp.zeros((0,), dtype)
