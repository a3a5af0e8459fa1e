"""Load the extension, register its XLA FFI targets exactly once, and wrap each operation in `jax.ffi.ffi_call`.

The wrappers take rank-5 arrays and a ConvConfig; batching and differentiation live in `_autodiff.py`.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import jaxlib.version
import numpy as np

from . import _ext, _plan
from ._params import ConvConfig


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_jaxlib(built: str, running: str) -> None:
    """The extension's FFI handlers were compiled against jaxlib `built`'s headers; XLA refuses them (at the first
    call) under an older jaxlib. Refuse at import instead, naming both versions and what to do."""
    if built == "unknown" or not _version(built) or not _version(running):
        return
    if _version(running) < _version(built):
        raise ImportError(
            f"jaxconv3d's extension was built against jaxlib {built}, but jaxlib {running} is installed: install "
            f"jaxlib>={built}, or rebuild jaxconv3d against this jaxlib (scripts/setup.sh, or pip install "
            "--no-build-isolation .)"
        )


check_jaxlib(_ext.BUILT_WITH_JAXLIB, jaxlib.version.__version__)

FFI_TARGET_VERSION: int = _ext.FFI_TARGET_VERSION
_V = f"_v{FFI_TARGET_VERSION}"
TARGETS = tuple(f"jaxconv3d_{op}{_V}" for op in ("fwd", "dgrad", "wgrad", "bgrad", "grads"))
FWD, DGRAD, WGRAD, BGRAD, GRADS = TARGETS

_registered = False


def register() -> None:
    """Register the cpu and CUDA handlers with XLA (idempotent; registering twice would raise). Called when the
    package is imported, so a program deserialised by jax.export finds its targets before any call of ours."""
    global _registered
    if _registered:
        return
    for platform, targets in _ext.registrations().items():
        for name, capsule in targets.items():
            jax.ffi.register_ffi_target(name, capsule, platform=platform)
    _registered = True


def export_disabled_checks() -> list:
    """What to pass as `jax.export.export(..., disabled_checks=...)` for functions that call jaxconv3d.

    Our custom-call targets carry no compatibility guarantee from JAX; instead their names carry a version
    (`FFI_TARGET_VERSION`): an exported program runs wherever a jaxconv3d with the same target version is imported,
    and one from an older version fails with a message saying to re-export.

    Returns:
        A list of `jax.export.DisabledSafetyCheck`, one per jaxconv3d custom-call target.

    Example:
        >>> import jax, jax.numpy as jnp, jaxconv3d
        >>> f = jax.jit(lambda x, w: jaxconv3d.conv3d(x, w))
        >>> exp = jax.export.export(f, disabled_checks=jaxconv3d.export_disabled_checks())(
        ...     jnp.ones((1, 2, 4, 4, 4)), jnp.ones((3, 2, 3, 3, 3)))
        >>> exp.out_avals[0].shape
        (1, 3, 2, 2, 2)
    """
    return [jax.export.DisabledSafetyCheck.custom_call(name) for name in TARGETS]


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


def _layout(cfg: ConvConfig, dtype, op: str) -> tuple[int, int]:
    """(native layout, workspace bytes) of the family the dispatcher picks for the default device."""
    answer = _plan.plan(cfg, dtype, _plan.cc_of(None), op, cfg.layout)
    return _plan.LAYOUTS[answer["layout"]], answer["workspace_bytes"]


def _to(a: jax.Array, layout: int) -> jax.Array:
    """A logical (outer, C, D, H, W) array as the kernels want it: NDHWC moves the channel axis last."""
    return jnp.moveaxis(a, 1, -1) if layout == _plan.NDHWC else a


def _from(a: jax.Array, layout: int) -> jax.Array:
    return jnp.moveaxis(a, -1, 1) if layout == _plan.NDHWC else a


def _call(name: str, op: str, shape, cfg: ConvConfig, *operands: jax.Array) -> jax.Array:
    """One convolution FFI call in the planned family's layout: operands and result are logical (NCDHW / OIDHW);
    the second result is the family's workspace (XLA allocates it with the call; dropped here). `operands` are
    activations and filters, plus an optional trailing bias (layout-free)."""
    dtype = operands[0].dtype
    layout, ws_bytes = _layout(cfg, dtype, op)
    out = _result_type(_plan.to_layout(shape, layout), dtype, *operands)
    ws = _result_type((ws_bytes,), jnp.uint8, *operands)
    args = [_to(a, layout) if a.ndim == 5 else a for a in operands]
    result, _ = jax.ffi.ffi_call(name, (out, ws))(*args, **_attrs(cfg), layout=int(layout))
    return _from(result, layout)


def fwd(x: jax.Array, w: jax.Array, b: jax.Array, cfg: ConvConfig) -> jax.Array:
    """y = conv(x, w) + b; `b` is (O,) or empty (no bias)."""
    return _call(FWD, "forward", cfg.y_shape, cfg, x, w, b)


def dgrad(dy: jax.Array, w: jax.Array, cfg: ConvConfig) -> jax.Array:
    return _call(DGRAD, "grad_input", cfg.x_shape, cfg, dy, w)


def wgrad(x: jax.Array, dy: jax.Array, cfg: ConvConfig) -> jax.Array:
    """Grad-weight (its split reduction uses the workspace)."""
    return _call(WGRAD, "grad_weight", cfg.w_shape, cfg, x, dy)


def fused_grads(cfg: ConvConfig, dtype) -> bool:
    """Whether the dispatcher runs grad-input and grad-weight of `cfg` as one kernel on the default device."""
    return bool(_plan.plan(cfg, dtype, _plan.cc_of(None), "grads", cfg.layout)["family"])


def grads(x: jax.Array, w: jax.Array, dy: jax.Array, cfg: ConvConfig) -> tuple[jax.Array, jax.Array]:
    """(grad-input, grad-weight) of one backward: one FFI call of the fused kernel where the dispatcher has one
    (bitwise the two operations' results), else the two calls."""
    if not fused_grads(cfg, x.dtype):
        return dgrad(dy, w, cfg), wgrad(x, dy, cfg)
    layout, ws_bytes = _layout(cfg, x.dtype, "grads")
    dx_t = _result_type(_plan.to_layout(cfg.x_shape, layout), x.dtype, x, w, dy)
    dw_t = _result_type(_plan.to_layout(cfg.w_shape, layout), x.dtype, x, w, dy)
    ws = _result_type((ws_bytes,), jnp.uint8, x, w, dy)
    dx, dw, _ = jax.ffi.ffi_call(GRADS, (dx_t, dw_t, ws))(
        *(_to(a, layout) for a in (x, w, dy)), **_attrs(cfg), layout=int(layout))
    return _from(dx, layout), _from(dw, layout)


def bgrad(dy: jax.Array) -> jax.Array:
    out = _result_type((dy.shape[1],), dy.dtype, dy)
    return jax.ffi.ffi_call(BGRAD, out)(dy)


def no_bias(dtype) -> jax.Array:
    return jnp.zeros((0,), dtype)
