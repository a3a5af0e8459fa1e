"""The one place that normalises convolution arguments, used by both the JAX and the torch front.

`conv_config(...)` validates shapes, dtypes and the stride / padding / dilation / groups arguments with the rules
of `torch.nn.Conv3d` and returns a hashable `ConvConfig` holding per-axis triples, the (lo, hi) padding and the
output shape. Everything that can be wrong with a call is reported here, as a ValueError or TypeError naming the
argument and the rule, before any kernel runs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any, Callable, Sequence

AXES = ("depth", "height", "width")
SUPPORTED_DTYPES = ("float32", "float64", "bfloat16", "float16")

MATH_ACCURATE = 0
MATH_TF32 = 1

_ACCURATE_NAMES = {"highest", "float32", "high", "bfloat16_3x", "accurate", "ieee"}
_TF32_NAMES = {"tf32", "tensorfloat32", "default", "fastest", "bfloat16"}


@dataclasses.dataclass(frozen=True)
class ConvConfig:
    """Static description of one convolution: everything but the tensors' contents."""

    batch: int
    in_channels: int
    out_channels: int
    in_spatial: tuple[int, int, int]
    kernel: tuple[int, int, int]
    out_spatial: tuple[int, int, int]
    stride: tuple[int, int, int]
    pad_lo: tuple[int, int, int]
    pad_hi: tuple[int, int, int]
    dilation: tuple[int, int, int]
    groups: int
    math: int = MATH_ACCURATE
    # The layout the caller holds its arrays in (0: NCDHW, 1: NDHWC). Shapes above are always logical (NCDHW);
    # this only tells a family that takes either layout (the cpu) which one saves transposes.
    layout: int = 0

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.batch, self.in_channels, *self.in_spatial)

    @property
    def w_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)

    @property
    def y_shape(self) -> tuple[int, ...]:
        return (self.batch, self.out_channels, *self.out_spatial)

    def attrs(self) -> dict[str, Any]:
        """Static attributes as the C++ doors take them."""
        return dict(
            stride=self.stride,
            pad_lo=self.pad_lo,
            pad_hi=self.pad_hi,
            dilation=self.dilation,
            groups=self.groups,
            math=self.math,
        )

    def __hash__(self) -> int:
        # Computed once per object: both fronts look configs up in caches on every call. (An explicit __hash__ is
        # kept by dataclass(frozen=True); equality stays the generated field-by-field one.)
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in dataclasses.fields(self)))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_hash"}

    def replace(self, **changes: Any) -> "ConvConfig":
        return dataclasses.replace(self, **changes)

    def flops(self) -> int:
        """Multiply-adds x 2 of the forward pass."""
        return 2 * math.prod(self.y_shape) * (self.in_channels // self.groups) * math.prod(self.kernel)


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def triple(value: Any, name: str, *, minimum: int) -> tuple[int, int, int]:
    """An int or a sequence of 3 ints, each >= minimum."""
    if _is_int(value):
        vals = (int(value),) * 3
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3 and all(
        _is_int(v) for v in value
    ):
        vals = tuple(int(v) for v in value)
    else:
        raise TypeError(f"{name} must be an int or a tuple of 3 ints, got {value!r}")
    for axis, v in zip(AXES, vals):
        if v < minimum:
            raise ValueError(f"{name} along {axis} must be >= {minimum}, got {v}")
    return vals  # type: ignore[return-value]


def padding_pairs(
    padding: Any, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(pad_lo, pad_hi) from an int, 3 ints, 3 (lo, hi) pairs, "same" or "valid"."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0, 0), (0, 0, 0)
        if mode == "same":
            if any(s != 1 for s in stride):
                raise ValueError("padding='same' is not supported with stride > 1 (as in torch.nn.Conv3d)")
            total = [d * (k - 1) for k, d in zip(kernel, dilation)]
            lo = tuple(t // 2 for t in total)
            hi = tuple(t - l for t, l in zip(total, lo))
            return lo, hi  # type: ignore[return-value]
        raise ValueError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    if _is_int(padding):
        p = triple(padding, "padding", minimum=0)
        return p, p
    if isinstance(padding, Sequence) and len(padding) == 3:
        if all(_is_int(v) for v in padding):
            p = triple(tuple(padding), "padding", minimum=0)
            return p, p
        if all(isinstance(v, Sequence) and len(v) == 2 and all(_is_int(u) for u in v) for v in padding):
            lo = tuple(int(v[0]) for v in padding)
            hi = tuple(int(v[1]) for v in padding)
            for axis, l, h in zip(AXES, lo, hi):
                if l < 0 or h < 0:
                    raise ValueError(f"padding along {axis} must be non-negative, got ({l}, {h})")
            return lo, hi  # type: ignore[return-value]
    raise TypeError(
        "padding must be an int, 3 ints, 3 (lo, hi) pairs, 'same' or 'valid', " f"got {padding!r}"
    )


def math_mode(precision: Any) -> int:
    """Map `precision` (None, a string, or a jax.lax.Precision) to the kernels' math mode."""
    if precision is None:
        return MATH_ACCURATE
    if isinstance(precision, (tuple, list)) and len(precision) == 2:
        modes = {math_mode(p) for p in precision}
        return MATH_ACCURATE if MATH_ACCURATE in modes else MATH_TF32
    name = precision.lower() if isinstance(precision, str) else getattr(precision, "name", None)
    name = name.lower() if isinstance(name, str) else None
    if name in _ACCURATE_NAMES:
        return MATH_ACCURATE
    if name in _TF32_NAMES:
        return MATH_TF32
    raise ValueError(
        f"precision must be None, 'highest' (float32-accurate), 'tf32' or a jax.lax.Precision, got {precision!r}"
    )


def dtype_name(dtype: Any) -> str:
    """Canonical name of a numpy/JAX/torch dtype ('float32', 'bfloat16', ...)."""
    name = str(dtype)
    return name[len("torch.") :] if name.startswith("torch.") else name


def check_dtypes(**dtypes: Any) -> str:
    """All given dtypes equal and supported; returns the common name."""
    names = {arg: dtype_name(d) for arg, d in dtypes.items() if d is not None}
    first_arg, first = next(iter(names.items()))
    for arg, name in names.items():
        if name not in SUPPORTED_DTYPES:
            raise TypeError(f"{arg} has dtype {name}; supported dtypes are {', '.join(SUPPORTED_DTYPES)}")
        if name != first:
            raise TypeError(
                f"{arg} has dtype {name} but {first_arg} has dtype {first}: input, weight and bias must share one "
                "dtype"
            )
    return first


def call_config(x: Any, w: Any, b: Any, *, memoize: bool = True, **kwargs: Any) -> tuple[ConvConfig, bool]:
    """What both fronts do first with a user's call: check dtypes, accept an unbatched (C, D, H, W) input as a batch
    of one, and describe the problem. `x`, `w`, `b` are arrays or tensors (anything with .shape and .dtype).
    Returns (config, unbatched); the caller adds and later removes the batch axis."""
    check_dtypes(input=x.dtype, weight=w.dtype, bias=None if b is None else b.dtype)
    unbatched = len(x.shape) == 4
    x_shape = (1, *x.shape) if unbatched else tuple(x.shape)
    cfg = conv_config(x_shape, w.shape, None if b is None else b.shape, memoize=memoize, **kwargs)
    return cfg, unbatched


def conv_config(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    b_shape: Sequence[int] | None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: Any = 1,
    precision: Any = None,
    memoize: bool = True,
) -> ConvConfig:
    """Validate a batched (rank-5) problem and describe it, with torch.nn.Conv3d's rules.

    Args:
        x_shape: (N, C, D, H, W) (unbatched inputs are expanded by the caller). w_shape: (O, C/groups, kD, kH, kW).
        b_shape: (O,) or None. stride, padding, dilation, groups, precision: as `jaxconv3d.conv3d`.
        memoize: reuse the result of an identical earlier call (a training loop repeats its arguments every step;
            torch.compile, which traces through, passes False).

    Returns:
        A hashable `ConvConfig`: per-axis triples, (lo, hi) padding, output shape and math mode.

    Raises:
        ValueError, TypeError: naming the argument and the rule.

    Example:
        >>> conv_config((2, 4, 8, 8, 8), (6, 4, 3, 3, 3), None, padding="same").y_shape
        (2, 6, 8, 8, 8)
    """
    args = (tuple(x_shape), tuple(w_shape), None if b_shape is None else tuple(b_shape), stride, padding, dilation,
            groups, precision)
    return memoized(_cached_config, _build_config, args, (stride, padding, dilation, groups), memoize)


def memoized(cached: Callable, build: Callable, args: tuple, typed: tuple, memoize: bool) -> Any:
    """build(*args), through `cached` (an lru_cache over (*args, types)) where `memoize` is set and the arguments
    hash (a training loop repeats them every step; torch.compile, which traces through, passes memoize=False; lists
    among them skip the cache). The key holds the types of `typed`, recursively: True == 1 and 1.0 == 1 for hashing,
    so bools and floats (rejected by validation) must not hit an int's entry, inside tuples too."""
    if not memoize:
        return build(*args)
    key = (*args, tuple(_types(v) for v in typed))
    try:
        hash(key)
    except TypeError:
        return build(*args)
    return cached(*key)


def _build_config(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    b_shape: Sequence[int] | None,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
    precision: Any,
) -> ConvConfig:
    x_shape, w_shape = shapes(x_shape, w_shape)
    if len(x_shape) != 5:
        raise ValueError(f"input must have shape (N, C, D, H, W) or (C, D, H, W), got rank {len(x_shape)}")
    if len(w_shape) != 5:
        raise ValueError(f"weight must have shape (out_channels, in_channels/groups, kD, kH, kW), got {w_shape}")
    if not _is_int(groups) or groups <= 0:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    groups = int(groups)
    n, c = x_shape[:2]
    o, cg = w_shape[:2]
    kernel = w_shape[2:]
    if c <= 0 or o <= 0:
        raise ValueError(f"channels must be positive: input has {c}, weight has {o} out_channels")
    if c % groups != 0:
        raise ValueError(f"in_channels ({c}) must be divisible by groups ({groups})")
    if o % groups != 0:
        raise ValueError(f"out_channels ({o}) must be divisible by groups ({groups})")
    if cg * groups != c:
        raise ValueError(
            f"weight expects {cg} input channels per group x {groups} groups = {cg * groups}, but input has {c} "
            "channels"
        )
    for axis, k in zip(AXES, kernel):
        if k <= 0:
            raise ValueError(f"kernel size along {axis} must be positive, got {k}")
    if any(s <= 0 for s in x_shape[2:]):
        raise ValueError(f"input spatial sizes must be positive, got {x_shape[2:]}")
    if b_shape is not None and tuple(b_shape) != (o,):
        raise ValueError(f"bias must have shape ({o},), got {tuple(b_shape)}")
    stride3 = triple(stride, "stride", minimum=1)
    dilation3 = triple(dilation, "dilation", minimum=1)
    pad_lo, pad_hi = padding_pairs(padding, kernel, stride3, dilation3)
    out = []
    for axis, size, k, s, d, lo, hi in zip(AXES, x_shape[2:], kernel, stride3, dilation3, pad_lo, pad_hi):
        span = d * (k - 1) + 1
        if size + lo + hi < span:
            raise ValueError(
                f"dilated kernel size along {axis} ({span}) is larger than the padded input ({size} + {lo} + {hi})"
            )
        out.append((size + lo + hi - span) // s + 1)
    return ConvConfig(
        batch=n,
        in_channels=c,
        out_channels=o,
        in_spatial=x_shape[2:],  # type: ignore[arg-type]
        kernel=kernel,  # type: ignore[arg-type]
        out_spatial=tuple(out),  # type: ignore[arg-type]
        stride=stride3,
        pad_lo=pad_lo,
        pad_hi=pad_hi,
        dilation=dilation3,
        groups=groups,
        math=math_mode(precision),
    )


def _types(value: Any) -> Any:
    """The type of `value`, or of each element (recursively) of a tuple or list."""
    if isinstance(value, (tuple, list)):
        return (type(value), tuple(_types(v) for v in value))
    return type(value)


def is_symbolic(dim: Any) -> bool:
    """A symbolic size: a `jax.export` dimension variable or a torch SymInt (not a plain int)."""
    return not isinstance(dim, numbers.Integral)


def _batch_dim(dim: Any) -> Any:
    """The batch size: an int, or kept symbolic (jax.export's symbolic_shape, torch.export's Dim, torch.compile's
    dynamic=True) without forcing it to a constant; nothing below the doors depends on its value."""
    return int(dim) if isinstance(dim, numbers.Integral) else dim


def shapes(x_shape: Sequence[Any], w_shape: Sequence[Any]) -> tuple[tuple, tuple[int, ...]]:
    """x's and w's shapes as ints, except a symbolic batch (x's first dimension), which stays symbolic."""
    x = (_batch_dim(x_shape[0]), *(_static_dim(s, "input") for s in x_shape[1:])) if len(x_shape) else ()
    return x, tuple(_static_dim(s, "weight") for s in w_shape)


def _static_dim(dim: Any, name: str) -> int:
    if isinstance(dim, numbers.Integral):
        return int(dim)
    if type(dim).__module__.startswith("torch"):  # a SymInt: channels and spatial sizes are specialised
        return int(dim)
    raise ValueError(
        f"{name} has a symbolic size {dim!r} outside the batch dimension; only the batch dimension may be symbolic"
    )


@functools.lru_cache(maxsize=4096)
def _cached_config(*key: Any) -> ConvConfig:
    return _build_config(*key[:-1])
