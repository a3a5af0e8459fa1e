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
    """3D convolution with `torch.nn.functional.conv3d` semantics (cross-correlation), on our kernels.

    Args:
        x: input, (N, C, D, H, W) or unbatched (C, D, H, W); float32, float64, bfloat16 or float16.
        w: filter, (O, C/groups, kD, kH, kW), x's dtype.
        b: optional bias, (O,).
        stride, dilation: an int or 3 ints (>= 1).
        padding: an int, 3 ints, 3 (lo, hi) pairs, "same" (stride 1 only) or "valid".
        groups: divides C and O.
        precision: None / "highest" (the default: float32 inputs give float32-accurate results), "tf32" (TF32
            tensor-core math on GPUs), or a jax.lax.Precision (HIGHEST/HIGH -> accurate, DEFAULT -> tf32).
        layout: "NCDHW" (above) or "NDHWC" (channels last, what flax and equinox hold): x (N, D, H, W, C) or
            (D, H, W, C), w DHWIO (kD, kH, kW, C/groups, O) as in flax.linen.Conv, the same convolution as
            `lax.conv_general_dilated(..., dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))`. On GPUs whose kernel
            family works channels-last (Hopper) this layout needs no transposes.

    Returns:
        y: (N, O, Do, Ho, Wo) (unbatched: (O, Do, Ho, Wo); NDHWC: (N, Do, Ho, Wo, O)), x's dtype. Differentiable
        to any order; works under jit, vmap, shard_map, sharded jit and jax.export.

    Raises:
        ValueError, TypeError: naming the argument and the rule (shapes, dtypes, stride / padding / dilation /
            groups, devices), before any kernel runs.

    Example:
        >>> import jax.numpy as jnp
        >>> conv3d(jnp.ones((1, 2, 4, 4, 4)), jnp.ones((3, 2, 3, 3, 3)), padding=1).shape
        (1, 3, 4, 4, 4)
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
