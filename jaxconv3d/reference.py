"""What `jaxconv3d check`, `jaxconv3d bench` and the tests judge results by, in one place: the float64 reference
computed from a user's raw arguments, the error metric, the bounds a correct kernel meets, and bitwise equality.

Tool code: the library core never imports it (it needs torch). The reference never goes through jaxconv3d's own
argument normalisation: F.conv3d takes an int, 3 ints, "same" or "valid" as they are; explicit (lo, hi) pairs
become an F.pad in front of it (F.pad lists the last axis first), so a padding bug of ours cannot move the
reference along with the result.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# Relative Frobenius error bounds that hold for a correct kernel, by precision name and by dtype name
# (shared/notes/testing.md); the largest element error may reach MAX_ERROR_FACTOR times the bound.
ERROR_BOUNDS = {"fp64": 1e-12, "fp32": 1e-5, "tf32": 2e-3, "bf16": 2e-2, "fp16": 5e-3}
DTYPE_BOUNDS = {"float64": 1e-12, "float32": 1e-5, "tf32": 2e-3, "bfloat16": 2e-2, "float16": 5e-3}
MAX_ERROR_FACTOR = 10


def to_numpy64(value: Any) -> np.ndarray:
    """float64 copy on the host (torch tensors, JAX and numpy arrays): exact for every supported dtype, so it serves
    bitwise comparisons too."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class Error:
    relative: float  # ||out - ref|| / ||ref||, Frobenius norms
    max_relative: float  # max |out - ref| / max |ref|

    def within(self, bound: float) -> bool:
        # Written as "<=" so that NaN fails: every comparison with NaN is false.
        return self.relative <= bound and self.max_relative <= MAX_ERROR_FACTOR * bound

    def worst(self, other: "Error") -> "Error":
        return Error(_worse(self.relative, other.relative), _worse(self.max_relative, other.max_relative))


def _worse(a: float, b: float) -> float:
    # max() would keep or drop a NaN depending on the argument order; a NaN error must survive.
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def error(out: Any, ref: Any) -> Error:
    """Error of `out` against the reference `ref`; NaN or Inf anywhere in `out` gives a NaN error (never passes)."""
    out, ref = to_numpy64(out), to_numpy64(ref)
    if out.shape != ref.shape:
        raise ValueError(f"result has shape {out.shape}, reference has {ref.shape}")
    if not np.isfinite(out).all():
        return Error(math.nan, math.nan)
    diff = out - ref
    # Random operands never give an all-zero reference; `or 1.0` only avoids 0/0 for an empty tensor.
    scale_fro, scale_max = float(np.linalg.norm(ref)) or 1.0, float(np.abs(ref).max(initial=0.0)) or 1.0
    return Error(float(np.linalg.norm(diff)) / scale_fro, float(np.abs(diff).max(initial=0.0)) / scale_max)


def bitwise_equal(a: Any, b: Any) -> bool:
    """Same shape and the same bits (float64 holds every supported dtype exactly, signed zeros included)."""
    a, b = to_numpy64(a), to_numpy64(b)
    return a.shape == b.shape and np.array_equal(a.view(np.uint64), b.view(np.uint64))


# ---- the float64 reference, from raw arguments


def is_pairs(padding: Any) -> bool:
    """Explicit per-axis (lo, hi) padding: ((d_lo, d_hi), (h_lo, h_hi), (w_lo, w_hi))."""
    return isinstance(padding, (tuple, list)) and len(padding) == 3 and all(
        isinstance(p, (tuple, list)) for p in padding
    )


def torch_conv64(x, w, b=None, stride=1, padding=0, dilation=1, groups=1) -> torch.Tensor:
    """F.conv3d from the raw arguments (float64 operands give the reference; tensors that require grad keep
    their graph)."""
    if is_pairs(padding):
        pads = [n for lo, hi in reversed([tuple(p) for p in padding]) for n in (lo, hi)]
        x, padding = F.pad(x, pads), 0
    elif isinstance(padding, list):
        padding = tuple(padding)
    with warnings.catch_warnings():  # F.conv3d notes that "same" with an even kernel pads a copy: expected here
        warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
        return F.conv3d(x, w, b, stride, padding, dilation, groups)


def as_float64(a: Any) -> torch.Tensor:
    """A CPU float64 torch tensor of `a` (torch tensor, JAX or numpy array)."""
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64)
    return torch.as_tensor(to_numpy64(a))


def reference_and_grads(x, w, b, dy, **kw) -> tuple:
    """(y, dx, dw, db) of F.conv3d in float64 on the CPU from raw arguments (`kw`: stride, padding, dilation,
    groups as the user wrote them); db is None without bias, and the gradients are None without dy."""
    x64, w64 = as_float64(x).requires_grad_(True), as_float64(w).requires_grad_(True)
    b64 = None if b is None else as_float64(b).requires_grad_(True)
    y = torch_conv64(x64, w64, b64, **kw)
    if dy is None:
        return y.detach(), None, None, None
    leaves = [t for t in (x64, w64, b64) if t is not None]
    grads = torch.autograd.grad(y, leaves, as_float64(dy))
    return y.detach(), grads[0], grads[1], grads[2] if b is not None else None
