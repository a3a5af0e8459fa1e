"""ConvTranspose3d, built from the differentiable operations we already have.

A transposed convolution is the gradient with respect to the input of an ordinary convolution: the forward conv
whose *input* has the transpose's output size and whose *output* has the transpose's input size. So
`conv_transpose3d(x, w)` is `input_grad(x, w, cfg)` for that forward problem `cfg`, its gradient with respect to x
is the forward conv, and with respect to w a grad-weight (the custom_vjp / autograd rules we already have), which
gives gradients of any order, vmap, jit and sharding for free.

Mapping PyTorch's arguments onto the forward problem, per axis (input size `i`, stride `s`, padding `p`,
output_padding `op`, dilated kernel span `k' = d (k - 1) + 1`):

    out = (i - 1) s - 2 p + k' + op                    (PyTorch's output size)
    forward conv: input `out`, pad_lo = p, pad_hi = p - op, output (out + p + pad_hi - k') / s + 1 = i

`output_padding` adds rows at the high end, which the forward conv must not turn into an extra output row, so it
shrinks pad_hi. When op > p (possible because op < max(s, d)), pad_hi would be negative: the forward problem then
has input `out - (op - p)` and pad_hi 0, and the last `op - p` rows of the transpose, which no input reaches, are
zeros appended afterwards. The bias is added after the grad-input.

`transpose_config` validates with PyTorch's rules and messages naming the argument; both fronts use it.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from . import _autodiff
from ._jax_api import _check_devices
from ._params import ConvConfig
from ._sharding import exchange_transpose, local_config
from ._transpose_params import TransposeConfig, transpose_call_config, transpose_config  # noqa: F401


def conv_transpose3d(
    x: Any,
    w: Any,
    b: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    precision: Any = None,
):
    """Transposed 3D convolution with `torch.nn.functional.conv_transpose3d`'s semantics and weight layout.

    It is our grad-input operation, so it runs on our kernels and is differentiable to any order (its gradients are
    the forward convolution and grad-weight); works under jit, vmap, shard_map and sharded jit.

    Args:
        x: (N, C_in, D, H, W) or (C_in, D, H, W).
        w: (C_in, C_out/groups, kD, kH, kW). b: optional (C_out,).
        stride, padding, output_padding, dilation: an int or 3 ints (output_padding < stride or < dilation).
        groups: divides C_in and C_out. precision: as in `conv3d`.

    Returns:
        (N, C_out, Do, Ho, Wo) with Do = (D - 1) * stride - 2 * padding + dilation * (kD - 1) + output_padding + 1.

    Raises:
        ValueError, TypeError: naming the argument and the rule, before any kernel runs.

    Example:
        >>> import jax.numpy as jnp
        >>> conv_transpose3d(jnp.ones((1, 4, 3, 3, 3)), jnp.ones((4, 2, 2, 2, 2)), stride=2).shape
        (1, 2, 6, 6, 6)
    """
    _check_devices(x=x, w=w, b=b)
    x, w = jnp.asarray(x), jnp.asarray(w)
    b = None if b is None else jnp.asarray(b)
    tc, unbatched = transpose_call_config(
        x, w, b, stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation,
        precision=precision,
    )
    return transposed(x, w, b, tc, unbatched)


def transposed(x, w, b, tc: TransposeConfig, unbatched: bool, halo=None):
    """The call itself, on validated arrays. With `halo` (inside shard_map, see `_spatial`), x is one device's slab
    along halo's axis: grad-input of the slab's extended window, whose halo rows go back to their owners."""
    if unbatched:
        x = x[None]
    if tc.empty:
        y = jnp.zeros(tc.out_shape, x.dtype)
    else:
        if halo is None:
            y = _autodiff.input_grad(x, w, tc.conv)
        else:
            y = exchange_transpose(_autodiff.input_grad(x, w, local_config(tc.conv, [halo], x.shape[0])), halo)
        if any(tc.extra):
            y = jnp.pad(y, [(0, 0), (0, 0), *((0, e) for e in tc.extra)])
    if b is not None:
        y = y + b[None, :, None, None, None]
    return y[0] if unbatched else y
