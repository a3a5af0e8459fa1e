"""Flax layers: `jaxconv3d.flax.Conv3d` (a `flax.nnx` module) and `jaxconv3d.flax.LinenConv3d` (a `flax.linen`
module), the 3D forms of `nnx.Conv` / `linen.Conv` computed by `jaxconv3d.conv3d(..., layout="NDHWC")`.

Optional: needs `flax` (`pip install flax`); `import jaxconv3d` alone never imports it.

Both are the frameworks' own `Conv` with the convolution swapped for ours (through `Conv`'s `conv_general_dilated`
hook), so arguments, initialisation, channels-last inputs (N, D, H, W, C) (any number of batch dimensions, or
none), masks, dtype promotion, "CIRCULAR" / "REFLECT" padding and the parameters (`kernel` (kD, kH, kW, C/groups,
O), `bias` (O,)) are exactly flax's: checkpoints interchange with `nnx.Conv` / `linen.Conv`. Padding strings
("SAME", "VALID", ...) are split into (lo, hi) pairs exactly as lax splits them (for even kernels lo = total // 2).
Not supported (a clear error): `input_dilation` other than 1, `preferred_element_type`, `out_sharding`.

Example:
    >>> from flax import nnx
    >>> import jax.numpy as jnp, jaxconv3d.flax as jflax
    >>> conv = jflax.Conv3d(4, 8, kernel_size=(3, 3, 3), rngs=nnx.Rngs(0))     # nnx.Conv's arguments
    >>> y = conv(jnp.ones((2, 8, 8, 8, 4)))                                     # (2, 8, 8, 8, 8)
    >>> lconv = jflax.LinenConv3d(features=8, kernel_size=(3, 3, 3))            # linen.Conv's attributes
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    import flax  # noqa: F401
    from flax import linen, nnx
except ImportError as e:  # pragma: no cover - exercised only without flax
    raise ImportError(
        "jaxconv3d.flax needs the 'flax' package: pip install flax (or use jaxconv3d.conv3d(..., layout='NDHWC'))"
    ) from e

import jax
from jax import lax

from ._jax_api import conv3d as _conv3d

__all__ = ["Conv3d", "LinenConv3d", "conv_general_dilated"]


def _ones(value: Any, name: str) -> None:
    if value is not None and any(int(v) != 1 for v in (value if isinstance(value, Sequence) else (value,))):
        raise NotImplementedError(f"jaxconv3d.flax: {name}={value!r} is not supported (only 1)")


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
    out_sharding: Any = None,
) -> jax.Array:
    """`lax.conv_general_dilated`'s signature, for 3D channels-last convolutions only, computed by our kernels.

    The hook that `Conv3d` / `LinenConv3d` pass to flax's `Conv`. lhs (N, D, H, W, C), rhs DHWIO, result NDHWC.

    Raises:
        ValueError: not a 3D NDHWC / DHWIO / NDHWC convolution.
        NotImplementedError: lhs_dilation (flax's input_dilation) other than 1, batch_group_count other than 1,
            preferred_element_type or out_sharding.
    """
    if lhs.ndim != 5 or rhs.ndim != 5:
        raise ValueError(f"jaxconv3d.flax: 3D convolutions only, got input {lhs.shape} and kernel {rhs.shape}")
    want = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NDHWC", "DHWIO", "NDHWC"))
    got = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    if got != want:
        raise ValueError(f"jaxconv3d.flax: needs NDHWC / DHWIO / NDHWC dimension numbers, got {dimension_numbers!r}")
    _ones(lhs_dilation, "input_dilation")
    _ones(batch_group_count, "batch_group_count")
    if preferred_element_type is not None:
        raise NotImplementedError("jaxconv3d.flax: preferred_element_type is not supported")
    if out_sharding is not None:
        raise NotImplementedError("jaxconv3d.flax: out_sharding is not supported")
    strides = tuple(int(s) for s in window_strides)
    dilation = (1, 1, 1) if rhs_dilation is None else tuple(int(d) for d in rhs_dilation)
    if isinstance(padding, str):  # split exactly as lax does (not jaxconv3d's torch-style "same")
        dilated = tuple(d * (k - 1) + 1 for k, d in zip(rhs.shape[:3], dilation))
        padding = lax.padtype_to_pads(lhs.shape[1:4], dilated, strides, padding)
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv3d(
        lhs, rhs, stride=strides, padding=pads, dilation=dilation, groups=int(feature_group_count),
        precision=precision, layout="NDHWC",
    )


def _check_3d(kernel_size: Any) -> None:
    if isinstance(kernel_size, int) or len(tuple(kernel_size)) != 3:
        raise ValueError(f"jaxconv3d.flax: kernel_size must be 3 ints (kD, kH, kW), got {kernel_size!r}")


class Conv3d(nnx.Conv):
    """`flax.nnx.Conv` for 3 spatial dimensions (channels-last input (..., D, H, W, C)), computed by our kernels.

    Args:
        in_features, out_features, kernel_size (3 ints), strides, padding ("SAME", "VALID", "CIRCULAR",
            "REFLECT", an int, or 3 ints / (lo, hi) pairs), kernel_dilation, feature_group_count, use_bias, mask,
            dtype, param_dtype, precision, kernel_init, bias_init, promote_dtype, rngs, kernel_metadata,
            bias_metadata: as `flax.nnx.Conv`. `input_dilation` must stay 1.

    Raises:
        ValueError: kernel_size is not 3-dimensional, or `conv_general_dilated` is passed.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> Conv3d(2, 4, (3, 3, 3), rngs=nnx.Rngs(0))(jnp.ones((1, 8, 8, 8, 2))).shape
        (1, 8, 8, 8, 4)
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: Sequence[int], strides: Any = 1, **kwargs):
        _check_3d(kernel_size)
        if "conv_general_dilated" in kwargs:
            raise ValueError("jaxconv3d.flax.Conv3d sets conv_general_dilated itself")
        _ones(kwargs.get("input_dilation"), "input_dilation")
        super().__init__(
            in_features, out_features, tuple(kernel_size), strides, conv_general_dilated=conv_general_dilated,
            **kwargs,
        )


class LinenConv3d(linen.Conv):
    """`flax.linen.Conv` for 3 spatial dimensions (channels-last input (..., D, H, W, C)), computed by our kernels.

    Attributes: as `flax.linen.Conv` (features, kernel_size (3 ints), strides, padding, kernel_dilation,
    feature_group_count, use_bias, mask, dtype, param_dtype, precision, kernel_init, bias_init, ...); params `kernel`
    (kD, kH, kW, C/groups, O) and `bias` (O,). `input_dilation` must stay 1.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> layer, x = LinenConv3d(features=4, kernel_size=(3, 3, 3)), jnp.ones((1, 8, 8, 8, 2))
        >>> layer.apply(layer.init(jax.random.PRNGKey(0), x), x).shape
        (1, 8, 8, 8, 4)
    """

    conv_general_dilated: Any = conv_general_dilated  # checks for a 3D NDHWC convolution at call time
