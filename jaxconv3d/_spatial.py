"""Spatial parallelism under `shard_map`: the halo exchange as a function, and a convolution of a slab.

Under plain `jit` the partitioning rules of `_sharding.py` do this by themselves; inside `shard_map` the program
is per device, so the exchange is explicit:

    def step(x_slab, w):                       # x sharded along D over mesh axis "z"
        return jaxconv3d.sharded_conv3d(x_slab, w, axis_name="z", spatial_axis=0, padding=1)
    # (and jaxconv3d.sharded_conv_transpose3d for a transposed convolution)
    y = jax.shard_map(step, mesh=mesh, in_specs=(P(None, None, "z"), P()), out_specs=P(None, None, "z"))(x, w)

Both are differentiable: the gradient of a halo flows back to the device that owns those rows (the transpose of
`ppermute`), and a replicated filter's gradient is summed over the mesh axis.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ._params import AXES, conv_config, padding_pairs, triple
from ._sharding import Halo, exchange, halo_plan


def _dim(x, spatial_axis: int) -> int:
    if spatial_axis not in (0, 1, 2):
        raise ValueError(f"spatial_axis must be 0 (depth), 1 (height) or 2 (width), got {spatial_axis!r}")
    if x.ndim not in (4, 5):
        raise ValueError(f"x must have shape (N, C, D, H, W) or (C, D, H, W), got rank {x.ndim}")
    return x.ndim - 3 + spatial_axis


def _axis_names(axis_name) -> tuple[str, ...]:
    return (axis_name,) if isinstance(axis_name, str) else tuple(axis_name)


def halo_exchange(x: Any, axis_name: Any, lo: int, hi: int, spatial_axis: int = 0) -> jax.Array:
    """Inside shard_map: extend this device's slab `x` along `spatial_axis` by its neighbours' boundary rows.

    Only the halo rows travel (`jax.lax.ppermute`); differentiable.

    Args:
        x: this device's slab, (N, C, D, H, W) or (C, D, H, W).
        axis_name: the mesh axis (a name or a tuple of names) the volume is sharded over.
        lo, hi: rows taken from the end of the previous device's slab and the start of the next one's
            (0 <= lo, hi <= the slab's length); the first device's `lo` rows and the last device's `hi` rows are
            zeros (zero padding of the whole volume).
        spatial_axis: 0 = D, 1 = H, 2 = W.

    Returns:
        The slab extended to length lo + n + hi along `spatial_axis`.

    Raises:
        ValueError: for `lo` / `hi` out of range, naming them.

    Example, inside shard_map over mesh axis "z" (two devices, each holding 4 of 8 depth rows; not run here):
        >>> grown = halo_exchange(slab, "z", 1, 1)  # doctest: +SKIP
    """
    dim = _dim(x, spatial_axis)
    n = x.shape[dim]
    for name, v in (("lo", lo), ("hi", hi)):
        if not isinstance(v, int) or v < 0 or v > n:
            raise ValueError(
                f"{name} must be an int between 0 and the slab's size {n} (one neighbour's rows), got {v!r}"
            )
    axes = _axis_names(axis_name)
    return exchange(x, Halo(dim=dim, axes=axes, size=jax.lax.axis_size(axes), n=n, lo=lo, hi=hi))


def sharded_conv3d(
    x: Any,
    w: Any,
    b: Any = None,
    *,
    axis_name: Any,
    spatial_axis: int = 0,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    precision: Any = None,
) -> jax.Array:
    """Inside shard_map: `conv3d` of a volume sharded along `spatial_axis` over mesh axis `axis_name`.

    Exchanges the halo, then convolves the extended slab with our kernel.

    Args:
        x: this device's slab of the input. w, b, stride, padding, dilation, groups, precision: as `conv3d` for
            the whole volume.
        axis_name: the mesh axis (or tuple of axes) of the sharding. spatial_axis: 0 = D, 1 = H, 2 = W.

    Returns:
        This device's slab of the output, sharded the same way.

    Raises:
        ValueError: when the slab decomposition does not exist, with the rule: the output length times the stride
            equals the input length, the stride divides the slab, and each halo fits in one neighbour's slab (see
            `_sharding.halo_plan`).

    Example, inside shard_map over mesh axis "z" (not run here):
        >>> y_slab = sharded_conv3d(x_slab, w, axis_name="z", padding=1)  # doctest: +SKIP
    """
    from ._jax_api import conv3d

    axes, size, x_shape = _whole(x, axis_name, spatial_axis)
    cfg = conv_config(x_shape, w.shape, None, stride=stride, padding=padding, dilation=dilation, groups=groups,
                      precision=precision)
    h = _slab_plan(cfg, x, axes, size, spatial_axis)
    kernel = tuple(w.shape[2:])
    lo, hi = padding_pairs(padding, kernel, triple(stride, "stride", minimum=1), triple(dilation, "dilation",
                                                                                       minimum=1))
    pads = [list(p) for p in zip(lo, hi)]
    pads[spatial_axis] = [0, 0]  # the halo (zeros at the volume's ends) is the padding along the sharded axis
    return conv3d(exchange(x, h), w, b, stride=stride, padding=tuple(map(tuple, pads)), dilation=dilation,
                  groups=groups, precision=precision)


def sharded_conv_transpose3d(
    x: Any,
    w: Any,
    b: Any = None,
    *,
    axis_name: Any,
    spatial_axis: int = 0,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    precision: Any = None,
) -> jax.Array:
    """Inside shard_map: `conv_transpose3d` of a volume sharded along `spatial_axis` over mesh axis `axis_name`.

    Runs grad-input on the slab's extended window and sends the halo rows of the result to their owners, which add
    them.

    Args:
        x: this device's slab of the input. w, b, stride, padding, output_padding, groups, dilation, precision: as
            `conv_transpose3d` for the whole volume.
        axis_name: the mesh axis (or tuple of axes) of the sharding. spatial_axis: 0 = D, 1 = H, 2 = W.

    Returns:
        This device's slab of the output.

    Raises:
        ValueError: without the slab decomposition of the forward convolution it transposes (as
            `sharded_conv3d`), or with output_padding > padding along the sharded axis.

    Example, inside shard_map over mesh axis "z" (not run here):
        >>> y_slab = sharded_conv_transpose3d(x_slab, w, axis_name="z", stride=2)  # doctest: +SKIP
    """
    from ._transpose import transpose_call_config, transposed

    axes, size, x_shape = _whole(x, axis_name, spatial_axis)
    x, w = jnp.asarray(x), jnp.asarray(w)
    b = None if b is None else jnp.asarray(b)
    whole = jax.ShapeDtypeStruct(x_shape if x.ndim == 5 else x_shape[1:], x.dtype)
    tc, unbatched = transpose_call_config(
        whole, w, b, stride=stride, padding=padding, output_padding=output_padding, groups=groups,
        dilation=dilation, precision=precision,
    )
    a = spatial_axis
    if tc.empty or tc.extra[a]:
        raise ValueError(
            f"output_padding along {AXES[a]} must not exceed padding for a sharded transposed convolution (its extra "
            "rows would all fall on the last device)"
        )
    h = _slab_plan(tc.conv, x, axes, size, a, what="the transposed convolution's forward problem")
    return transposed(x, w, b, tc, unbatched, halo=Halo(dim=2 + a, axes=axes, size=size, n=h.n, lo=h.lo, hi=h.hi))


def _whole(x, axis_name, spatial_axis):
    """(mesh axes, their size, the batched shape of the whole volume) of slab x."""
    _dim(x, spatial_axis)  # validates spatial_axis and x's rank
    axes = _axis_names(axis_name)
    size = jax.lax.axis_size(axes)
    x_shape = list(x.shape if x.ndim == 5 else (1, *x.shape))
    x_shape[2 + spatial_axis] *= size
    return axes, size, tuple(x_shape)


def _slab_plan(cfg, x, axes, size: int, a: int, what: str = "x") -> Halo:
    """The Halo of forward problem `cfg` along spatial axis `a` (on x's own rank), or a ValueError with the rule."""
    h = halo_plan(cfg, a, axes, size)
    if h is None:
        s, lo = cfg.stride[a], cfg.pad_lo[a]
        hi = cfg.dilation[a] * (cfg.kernel[a] - 1) + 1 - s - lo
        raise ValueError(
            f"{what}: no slab decomposition along {AXES[a]} over {size} devices: it needs output length "
            f"({cfg.out_spatial[a]}) x stride ({s}) == input length ({cfg.in_spatial[a]}), lengths divisible by "
            f"{size}, the stride dividing the slab ({cfg.in_spatial[a] // size}), and both halos (lo {lo}, hi {hi}) "
            "at most one slab"
        )
    return Halo(dim=x.ndim - 3 + a, axes=axes, size=size, n=h.n, lo=h.lo, hi=h.hi)
