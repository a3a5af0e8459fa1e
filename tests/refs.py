"""Independent float64 references: computed from the user's raw arguments by torch.nn.functional.conv3d and by
jax.lax.conv_general_dilated, never from jaxconv3d's own argument normalisation (a bug there must not move the
reference along with the result).

The only translation done here is the one each reference library needs: F.conv3d takes an int, 3 ints, "same" or
"valid" as they are; explicit (lo, hi) pairs become an F.pad in front of it (F.pad lists the last axis first). lax
takes "SAME"/"VALID" or (lo, hi) pairs.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from cases import Case

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


def is_pairs(padding: Any) -> bool:
    return isinstance(padding, (tuple, list)) and len(padding) == 3 and all(
        isinstance(p, (tuple, list)) for p in padding
    )


def _t64(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(jax.device_get(a), dtype=np.float64))


def torch_conv64(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """F.conv3d in float64 from the raw arguments (tensors that require grad keep their graph)."""
    if is_pairs(padding):
        pads = [n for lo, hi in reversed([tuple(p) for p in padding]) for n in (lo, hi)]
        x, padding = F.pad(x, pads), 0
    elif isinstance(padding, list):
        padding = tuple(padding)
    with warnings.catch_warnings():  # F.conv3d notes that "same" with an even kernel pads a copy: expected here
        warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
        return F.conv3d(x, w, b, stride, padding, dilation, groups)


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


def reference_and_grads(x, w, b, dy, **kw):
    """(y, dx, dw, db) of F.conv3d in float64 from raw arguments; db is None without bias."""
    x64, w64 = _t64(x).requires_grad_(True), _t64(w).requires_grad_(True)
    b64 = None if b is None else _t64(b).requires_grad_(True)
    y = torch_conv64(x64, w64, b64, **kw)
    leaves = [t for t in (x64, w64, b64) if t is not None]
    grads = torch.autograd.grad(y, leaves, _t64(dy))
    return y.detach(), grads[0], grads[1], grads[2] if b is not None else None


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
