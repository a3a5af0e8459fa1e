"""The shape arithmetic of ConvTranspose3d, shared by both fronts (no JAX, no torch): PyTorch's arguments mapped onto
the forward problem whose grad-input the transpose is (see `_transpose.py` for the derivation), validated with
PyTorch's rules and messages naming the argument."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

from ._params import AXES, ConvConfig, _is_int, check_dtypes, conv_config, memoized, shapes, triple


@dataclasses.dataclass(frozen=True)
class TransposeConfig:
    """A ConvTranspose3d call: the forward problem whose grad-input it is, plus the zero rows to append."""

    conv: ConvConfig  # x_shape: the transpose's output (less `extra`); y_shape: the transpose's input
    out_spatial: tuple[int, int, int]  # the transpose's output size
    extra: tuple[int, int, int]  # zero rows appended at the high end of each axis (output_padding beyond padding)
    empty: bool = False  # some axis has no row that any input reaches: the output is the bias alone

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.conv.batch, self.conv.in_channels, *self.out_spatial)


def transpose_config(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    b_shape: Sequence[int] | None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: Any = 1,
    dilation: Any = 1,
    precision: Any = None,
    memoize: bool = True,
) -> TransposeConfig:
    """Validate a batched (rank-5) ConvTranspose3d call (PyTorch's rules) and describe it. Memoised unless
    memoize=False (torch.compile traces through the cache)."""
    args = (tuple(x_shape), tuple(w_shape), None if b_shape is None else tuple(b_shape), stride, padding,
            output_padding, groups, dilation, precision)
    build = _build if memoize else functools.partial(_build, memoize=False)
    return memoized(_cached, build, args, (stride, padding, output_padding, groups, dilation), memoize)


@functools.lru_cache(maxsize=4096)
def _cached(*key: Any) -> TransposeConfig:
    return _build(*key[:-1])


def _build(x_shape, w_shape, b_shape, stride, padding, output_padding, groups, dilation, precision, memoize=True):
    x_shape, w_shape = shapes(x_shape, w_shape)
    if len(x_shape) != 5:
        raise ValueError(f"input must have shape (N, C_in, D, H, W) or (C_in, D, H, W), got rank {len(x_shape)}")
    if len(w_shape) != 5:
        raise ValueError(
            f"weight must have shape (in_channels, out_channels/groups, kD, kH, kW) for a transposed convolution, "
            f"got {w_shape}"
        )
    if not _is_int(groups) or groups <= 0:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    groups = int(groups)
    n, c_in = x_shape[:2]
    if w_shape[0] != c_in:
        raise ValueError(
            f"weight has {w_shape[0]} in_channels (its first dimension) but input has {c_in} channels"
        )
    if c_in % groups != 0:
        raise ValueError(f"in_channels ({c_in}) must be divisible by groups ({groups})")
    c_out = w_shape[1] * groups
    if c_out <= 0:
        raise ValueError(f"out_channels must be positive, got weight shape {w_shape}")
    kernel = w_shape[2:]
    for axis, k in zip(AXES, kernel):
        if k <= 0:
            raise ValueError(f"kernel size along {axis} must be positive, got {k}")
    if any(s <= 0 for s in x_shape[2:]):
        raise ValueError(f"input spatial sizes must be positive, got {x_shape[2:]}")
    if b_shape is not None and tuple(b_shape) != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},) (out_channels), got {tuple(b_shape)}")
    if isinstance(padding, str):
        raise TypeError(f"padding must be an int or a tuple of 3 ints for a transposed convolution, got {padding!r}")
    s3 = triple(stride, "stride", minimum=1)
    p3 = triple(padding, "padding", minimum=0)
    op3 = triple(output_padding, "output_padding", minimum=0)
    d3 = triple(dilation, "dilation", minimum=1)
    out, eff, pad_hi, extra = [], [], [], []
    for axis, i, k, s, p, op, d in zip(AXES, x_shape[2:], kernel, s3, p3, op3, d3):
        if op >= max(s, d):
            raise ValueError(
                f"output_padding along {axis} ({op}) must be smaller than stride ({s}) or dilation ({d})"
            )
        size = (i - 1) * s - 2 * p + d * (k - 1) + 1 + op
        if size <= 0:
            raise ValueError(
                f"output size along {axis} is {size}: (input - 1) * stride - 2 * padding + dilation * (kernel - 1)"
                f" + output_padding + 1 must be positive (input {i}, stride {s}, padding {p}, dilation {d}, "
                f"kernel {k}, output_padding {op})"
            )
        out.append(size)
        extra.append(max(op - p, 0))
        pad_hi.append(max(p - op, 0))
        eff.append(size - extra[-1])
    empty = any(e <= 0 for e in eff)
    if empty:  # no kernel runs (the call returns the bias alone); any valid problem carries the channels
        eff, p3, pad_hi = [d * (k - 1) + 1 for k, d in zip(kernel, d3)], (0, 0, 0), (0, 0, 0)
    conv = conv_config(
        (n, c_out, *eff), w_shape, None, stride=s3, padding=tuple(zip(p3, pad_hi)), dilation=d3, groups=groups,
        precision=precision, memoize=memoize,
    )
    assert empty or conv.out_spatial == x_shape[2:], (conv, x_shape)
    return TransposeConfig(conv=conv, out_spatial=tuple(out), extra=tuple(extra), empty=empty)


def transpose_call_config(x: Any, w: Any, b: Any, **kwargs: Any) -> tuple[TransposeConfig, bool]:
    """What both fronts do first: check dtypes, accept an unbatched (C, D, H, W) input, describe the problem."""
    check_dtypes(input=x.dtype, weight=w.dtype, bias=None if b is None else b.dtype)
    unbatched = len(x.shape) == 4
    x_shape = (1, *x.shape) if unbatched else tuple(x.shape)
    return transpose_config(x_shape, w.shape, None if b is None else b.shape, **kwargs), unbatched
