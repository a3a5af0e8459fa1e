"""Independent float64 references: computed from the user's raw arguments by torch.nn.functional.conv3d
(jaxconv3d.reference, shared with the CLI's check) and by jax.lax.conv_general_dilated, never from jaxconv3d's own
argument normalisation (a bug there must not move the reference along with the result).

The only translation done here is the one each reference library needs: F.conv3d takes an int, 3 ints, "same" or
"valid" as they are; explicit (lo, hi) pairs become an F.pad in front of it (F.pad lists the last axis first). lax
takes "SAME"/"VALID" or (lo, hi) pairs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import torch

from cases import Case
from jaxconv3d.reference import as_float64 as _t64, is_pairs, reference_and_grads, torch_conv64  # noqa: F401

# "same" with even kernels: the expected (lo, hi) pads written out by hand (torch puts the odd element on the high
# side): (kernel, dilation) -> (lo, hi). Total padding is dilation * (kernel - 1).
SAME_PADS = {
    (1, 1): (0, 0),
    (2, 1): (0, 1),
    (3, 1): (1, 1),
    (4, 1): (1, 2),
    (2, 2): (1, 1),
    (2, 3): (1, 2),
    (4, 3): (4, 5),
    (6, 1): (2, 3),
}


def lax_conv64(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """jax.lax.conv_general_dilated in float64 (x64 is on in the tests) from the raw arguments."""
    trip = lambda v: (v,) * 3 if isinstance(v, int) else tuple(v)  # noqa: E731
    if isinstance(padding, str):
        pad = padding.upper()
    elif is_pairs(padding):
        pad = [tuple(p) for p in padding]
    else:
        pad = [(p, p) for p in trip(padding)]
    y = jax.lax.conv_general_dilated(
        jnp.asarray(x, jnp.float64), jnp.asarray(w, jnp.float64), trip(stride), pad, rhs_dilation=trip(dilation),
        feature_group_count=groups, dimension_numbers=("NCDHW", "OIDHW", "NCDHW"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return y if b is None else y + jnp.asarray(b, jnp.float64)[None, :, None, None, None]


def abs_scales(x, w, b, dy, **kw):
    """reference_and_grads on the absolute values: the size of the terms each result element sums, the scale for
    helpers.assert_close_scaled."""
    a = lambda t: None if t is None else _t64(t).abs()  # noqa: E731
    return reference_and_grads(a(x), a(w), a(b), a(dy), **kw)


def out_shape(case: Case) -> tuple:
    """The output shape of a case, as F.conv3d computes it from the raw arguments."""
    meta = lambda shape: torch.empty(shape, dtype=torch.float64, device="meta")  # noqa: E731
    return tuple(torch_conv64(meta(case.x_shape), meta(case.w_shape), None, **case.kwargs()).shape)


# Asymmetric, strided, dilated, grouped, "same" with even kernels: the cases where a padding or stride mix-up shows.
RAW_CASES = [
    Case("asym_pairs_dilated_grouped", (2, 4, 6, 7, 9), (6, 2, 2, 3, 2), padding=((2, 0), (0, 1), (1, 3)),
         dilation=(2, 1, 2), groups=2),
    Case("same_even_kernel_dilated", (1, 3, 6, 7, 8), (4, 3, 2, 4, 2), padding="same", dilation=(3, 1, 2)),
    Case("strided_per_axis_pad", (2, 3, 9, 8, 11), (5, 3, 3, 2, 4), stride=(2, 3, 1), padding=(1, 0, 2)),
    Case("depthwise_multiplier_stride", (1, 3, 7, 8, 6), (6, 1, 3, 3, 2), bias=False, stride=(1, 2, 2), padding=2,
         groups=3),
    Case("pad_larger_than_kernel_pairs", (1, 2, 4, 5, 3), (3, 2, 2, 1, 3), padding=((3, 1), (2, 4), (0, 5)),
         stride=(1, 2, 3)),
    Case("valid_dilated", (2, 2, 8, 9, 7), (3, 2, 3, 2, 3), padding="valid", dilation=(1, 3, 2)),
]
