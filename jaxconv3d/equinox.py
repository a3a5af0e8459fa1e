"""Equinox layer: `jaxconv3d.equinox.Conv3d`, a drop-in for `equinox.nn.Conv3d` that runs our kernels.

Optional: needs `equinox` (`pip install equinox`); `import jaxconv3d` alone never imports it.

Same constructor arguments, fields (`weight` (O, C/groups, kD, kH, kW), `bias` (O, 1, 1, 1)), initialisation (the
parameters are drawn by `equinox.nn.Conv3d` itself, so the same key gives the same parameters) and call convention
(unbatched (C, D, H, W) input; `jax.vmap` over a batch) as `equinox.nn.Conv3d`, so serialised leaves interchange.
Only `padding_mode="ZEROS"` is supported.

Example:
    >>> import jax, jaxconv3d.equinox as jeqx
    >>> conv = jeqx.Conv3d(4, 8, kernel_size=3, padding="SAME", key=jax.random.key(0))
    >>> y = jax.vmap(conv)(jax.numpy.ones((2, 4, 8, 8, 8)))   # (2, 8, 8, 8, 8)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    import equinox as eqx
except ImportError as e:  # pragma: no cover - exercised only without equinox
    raise ImportError(
        "jaxconv3d.equinox needs the 'equinox' package: pip install equinox (or use jaxconv3d.conv3d directly)"
    ) from e

import jax
import jax.numpy as jnp
from jax import lax

from ._jax_api import conv3d

__all__ = ["Conv3d"]


class Conv3d(eqx.Module):
    """3D convolution as `equinox.nn.Conv3d` (same arguments, fields and init), computed by `jaxconv3d.conv3d`.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, use_bias, dtype, key: as
            `equinox.nn.Conv3d` (padding: int, 3 ints, 3 (lo, hi) pairs, "SAME", "SAME_LOWER" or "VALID").
        padding_mode: "ZEROS" only (other modes: pad with `jnp.pad` first, then use padding "VALID").
        precision: keyword only, passed to `jaxconv3d.conv3d` (None: float32-accurate; "tf32" opts in to TF32).

    Raises:
        ValueError: an unsupported `padding_mode`, or arguments `equinox.nn.Conv3d` rejects.

    Example (unbatched (C, D, H, W), as equinox layers take; vmap for a batch):
        >>> import jax, jax.numpy as jnp
        >>> Conv3d(2, 4, 3, key=jax.random.PRNGKey(0))(jnp.ones((2, 8, 8, 8))).shape
        (4, 6, 6, 6)
    """

    num_spatial_dims: int = eqx.field(static=True)
    weight: jax.Array
    bias: jax.Array | None
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    kernel_size: tuple[int, ...] = eqx.field(static=True)
    stride: tuple[int, ...] = eqx.field(static=True)
    padding: str | tuple[tuple[int, int], ...] = eqx.field(static=True)
    dilation: tuple[int, ...] = eqx.field(static=True)
    groups: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    padding_mode: str = eqx.field(static=True)
    precision: Any = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = (1, 1, 1),
        padding: str | int | Sequence[int] | Sequence[tuple[int, int]] = (0, 0, 0),
        dilation: int | Sequence[int] = (1, 1, 1),
        groups: int = 1,
        use_bias: bool = True,
        padding_mode: str = "ZEROS",
        dtype: Any = None,
        *,
        key: Any,
        precision: Any = None,
    ):
        if not isinstance(padding_mode, str) or padding_mode.upper() != "ZEROS":
            raise ValueError(
                f"jaxconv3d.equinox.Conv3d supports padding_mode='ZEROS' only, got {padding_mode!r}; for other modes "
                "pad the input with jnp.pad and use padding='VALID', or use equinox.nn.Conv3d"
            )
        # equinox's own layer validates the arguments and draws the parameters, so both agree for the same key.
        ref = eqx.nn.Conv3d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, use_bias, padding_mode,
            dtype, key=key,
        )
        self.num_spatial_dims = 3
        self.weight = ref.weight
        self.bias = ref.bias
        self.in_channels = ref.in_channels
        self.out_channels = ref.out_channels
        self.kernel_size = ref.kernel_size
        self.stride = ref.stride
        self.padding = ref.padding
        self.dilation = ref.dilation
        self.groups = ref.groups
        self.use_bias = ref.use_bias
        self.padding_mode = ref.padding_mode
        self.precision = precision

    def __call__(self, x: jax.Array, *, key: Any = None) -> jax.Array:
        """Convolve one unbatched input x (in_channels, D, H, W) -> (out_channels, Do, Ho, Wo); `key` is ignored."""
        del key
        if x.ndim != 4:
            raise ValueError(f"Input to `Conv3d` needs to have rank 4 (C, D, H, W), but input has shape {x.shape}.")
        if isinstance(self.padding, str):  # "SAME" / "SAME_LOWER" / "VALID", split exactly as lax splits them
            dilated = tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))
            pads = tuple(tuple(p) for p in lax.padtype_to_pads(x.shape[1:], dilated, self.stride, self.padding))
        else:
            pads = tuple(tuple(p) for p in self.padding)
        bias = None if self.bias is None else jnp.reshape(self.bias, (-1,))
        return conv3d(
            x, self.weight, bias, stride=self.stride, padding=pads, dilation=self.dilation, groups=self.groups,
            precision=self.precision,
        )
