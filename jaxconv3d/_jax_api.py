"""The JAX front: `conv3d`, with torch.nn.functional.conv3d semantics on NCDHW (or, with layout="NDHWC", channels-last)
arrays."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from . import _autodiff, _ffi, _plan
from ._params import call_config


def _devices(a: Any):
    if isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer):
        try:
            return a.sharding.device_set
        except Exception:  # pragma: no cover - arrays without a concrete sharding
            return None
    return None


def _check_devices(**arrays: Any) -> None:
    named = [(k, _devices(v)) for k, v in arrays.items() if v is not None]
    named = [(k, d) for k, d in named if d is not None]
    for k, d in named[1:]:
        if d.isdisjoint(named[0][1]):
            raise ValueError(
                f"{k} is on {sorted(map(str, d))} but {named[0][0]} is on {sorted(map(str, named[0][1]))}: "
                "all arrays must be on the same devices"
            )


def conv3d(
    x: Any,
    w: Any,
    b: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    precision: Any = None,
    layout: str = "NCDHW",
) -> jax.Array:
    """3D convolution of x (N, C, D, H, W) or (C, D, H, W) with w (O, C/groups, kD, kH, kW), plus bias b (O,).

    Same semantics as `torch.nn.functional.conv3d` (cross-correlation, NCDHW in and out). `padding` is an int,
    3 ints, 3 (lo, hi) pairs, "same" or "valid". `precision`: None / "highest" (default: float32 inputs give
    float32-accurate results), "tf32" (TF32 tensor-core math on GPUs), or a jax.lax.Precision (HIGHEST/HIGH ->
    accurate, DEFAULT -> tf32). Differentiable to any order; works under jit, vmap and shard_map.

    `layout="NDHWC"` (channels last, what flax and equinox hold): x is (N, D, H, W, C) or (D, H, W, C), w is
    DHWIO (kD, kH, kW, C/groups, O) as in flax.linen.Conv, and the result is (N, Do, Ho, Wo, O): the same
    convolution as `lax.conv_general_dilated(..., dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))`. On GPUs whose
    kernel family works channels-last (Hopper) this layout needs no transposes.
    """
    _check_devices(x=x, w=w, b=b)
    code = _plan.layout_code(layout)
    x, w = jnp.asarray(x), jnp.asarray(w)
    b = None if b is None else jnp.asarray(b)
    if code == _plan.NDHWC:
        _plan.ndhwc_to_logical(x.shape, w.shape)  # rank checks, named in the NDHWC convention
        x = jnp.moveaxis(x, -1, -4)  # (N, D, H, W, C) -> (N, C, D, H, W); unbatched alike
        w = jnp.transpose(w, (4, 3, 0, 1, 2))  # DHWIO -> OIDHW
    cfg, unbatched = call_config(
        x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups, precision=precision
    )
    cfg = cfg.replace(layout=code) if code else cfg
    if unbatched:
        x = x[None]
    y = _autodiff.conv(x, w, _ffi.no_bias(x.dtype) if b is None else b, cfg)
    y = y[0] if unbatched else y
    return jnp.moveaxis(y, -4, -1) if code == _plan.NDHWC else y
