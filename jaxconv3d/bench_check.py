"""Checks the results of `jaxconv3d bench`'s timed calls, so that no wrong result is timed as a win.

The reference of each input set is computed once, before timing: torch.nn.functional.conv3d + autograd in strict
float32 (cuDNN's TF32 off) on the bench device, from the same (rounded) operands upcast to float32, and from the
case's raw arguments (`reference_conv`), not from jaxconv3d's own normalisation. The last result of every timed loop
is compared with it: relative Frobenius error <= BOUNDS[precision] and max |out - ref| / max |ref| <= 10 x that, on
the forward output and, for forward+backward, on every gradient too. NaN or Inf anywhere fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .reference import MAX_ERROR_FACTOR, Error
from .workloads import ConvCase, Implementation, Operands, logical_result, torch_forward_and_grads

# Relative Frobenius error bounds against the float32 reference, by bench precision.
BOUNDS = {"fp32": 1e-4, "tf32": 5e-3, "bf16": 2e-2, "fp16": 2e-2, "fp64": 1e-4}
OPS_BY_PASS = {"fwd": ("forward",), "fwd_bwd": ("forward", "grad_input", "grad_weight", "grad_bias")}
REFERENCE = "float32 F.conv3d + autograd (cuDNN TF32 off) on the bench device, from the case's raw arguments"


def reference_conv(case: ConvCase) -> Callable:
    """F.conv3d(x, w, b) with the case's own stride / padding / dilation / groups: an int, 3 ints, "same" and
    "valid" go to F.conv3d as given; 3 (lo, hi) pairs (or a mix of ints and pairs) are applied by F.pad."""
    padding = case.padding
    pairs = None
    if isinstance(padding, (tuple, list)) and any(isinstance(p, (tuple, list)) for p in padding):
        pairs = [tuple(p) if isinstance(p, (tuple, list)) else (p, p) for p in padding]

    def conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        if pairs is None:
            return F.conv3d(x, w, b, case.stride, padding, case.dilation, case.groups)
        # F.pad lists the last axis first: (w_lo, w_hi, h_lo, h_hi, d_lo, d_hi)
        x = F.pad(x, [int(n) for lo_hi in reversed(pairs) for n in lo_hi])
        return F.conv3d(x, w, b, case.stride, 0, case.dilation, case.groups)

    return conv


@contextlib.contextmanager
def strict_float32():
    """cuDNN without TF32 (restored afterwards)."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def reference_results(case: ConvCase | Callable, operands: Operands) -> dict[str, torch.Tensor | None]:
    """{op: float32 result} for forward, grad_input, grad_weight, grad_bias (None without bias), of `case`'s
    F.conv3d or of a given reference function conv(x, w, b) (e.g. F.conv_transpose3d with fixed arguments)."""
    conv = case if callable(case) else reference_conv(case)

    def leaf(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.detach().float().contiguous().requires_grad_(True)

    upcast = Operands(x=leaf(operands.x), w=leaf(operands.w), b=leaf(operands.b), dy=operands.dy.detach().float())
    with strict_float32():
        results = torch_forward_and_grads(conv, upcast)
    return dict(zip(OPS_BY_PASS["fwd_bwd"], (None if r is None else r.detach() for r in results)))


def as_torch(value: Any, device: torch.device) -> torch.Tensor:
    """A torch tensor of a torch tensor or JAX array: a DLPack view (no copy), else a float32 copy on `device`."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        return torch.from_dlpack(value)
    except (TypeError, RuntimeError, BufferError):
        return torch.from_numpy(np.asarray(value, dtype=np.float32)).to(device)


def op_error(out: Any, ref: torch.Tensor, device: torch.device) -> Error:
    """Error of one result against its reference, computed in float32 on the reference's device."""
    out = as_torch(out, device).to(device=ref.device, dtype=torch.float32)
    if out.shape != ref.shape:
        raise ValueError(f"result has shape {tuple(out.shape)}, reference has {tuple(ref.shape)}")
    if not bool(torch.isfinite(out).all()):
        return Error(math.nan, math.nan)
    diff = out - ref
    ref_norm = float(torch.linalg.vector_norm(ref)) or 1.0
    ref_max = float(ref.abs().max()) if ref.numel() else 1.0
    diff_max = float(diff.abs().max()) if diff.numel() else 0.0
    diff_norm = float(torch.linalg.vector_norm(diff))
    return Error(diff_norm / ref_norm, diff_max / (ref_max or 1.0))


def result_errors(
    result: Any, pass_name: str, reference: dict, device: torch.device, impl: Implementation | None = None
) -> dict[str, Error]:
    """{op: error} of one call's result (fwd: y; fwd_bwd: (y, dx, dw, db)) of `impl` against the reference."""
    outputs = (result,) if pass_name == "fwd" else tuple(result)
    errors = {}
    for op, out in zip(OPS_BY_PASS[pass_name], outputs):
        if impl is not None:
            out = logical_result(out, op, impl.channels_last, impl.framework)
        if reference[op] is None and out is None:
            continue
        if reference[op] is None or out is None:
            raise ValueError(f"{op}: result and reference disagree on whether it exists")
        errors[op] = op_error(out, reference[op], device)
    return errors


@dataclasses.dataclass
class ResultCheck:
    """The worst error per operation over every checked call of one implementation and pass."""

    bound: float
    errors: dict[str, Error] = dataclasses.field(default_factory=dict)
    calls_checked: int = 0
    failure: str | None = None  # a result that could not be compared (wrong shape, missing gradient)

    def add(self, errors: dict[str, Error]) -> None:
        for op, e in errors.items():
            self.errors[op] = e if op not in self.errors else self.errors[op].worst(e)
        self.calls_checked += 1

    @property
    def passed(self) -> bool:
        return (
            self.calls_checked > 0 and self.failure is None and all(e.within(self.bound) for e in self.errors.values())
        )

    def failure_text(self) -> str:
        if self.failure is not None:
            return self.failure
        over = [f"{op} rel err {e.relative:.2e}" for op, e in self.errors.items() if not e.within(self.bound)]
        return ", ".join(over) + f" (bound {self.bound:.0e}, max err bound {MAX_ERROR_FACTOR * self.bound:.0e})"

    def record(self) -> dict[str, Any]:
        return dict(
            passed=self.passed,
            bound=self.bound,
            max_error_factor=MAX_ERROR_FACTOR,
            calls_checked=self.calls_checked,
            errors={op: dataclasses.asdict(e) for op, e in self.errors.items()},
            **({"failure": self.failure} if self.failure else {}),
        )
