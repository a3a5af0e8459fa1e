"""float32 keeps float32 accuracy over a wide dynamic range (issue 7's contract for any faster float32 path, such as
3xTF32 on Hopper): operands scaled by powers of two from 2^-30 to 2^30, mixed signs, values whose low bits sit
exactly on the TF32 rounding boundary (a tie: the split's small part is half a TF32 unit), and operands around
2^-116, whose small parts past a TF32 split are fp32 denormals. Forward, grad-input and grad-weight through both
fronts, against float64 F.conv3d on the same float32-rounded values; the error is measured against the size of the
terms summed (helpers.assert_close_scaled), bound 1e-5 (the check's float32 bound). On a GPU these run whatever the
dispatcher picks for default float32 (`explain()`); a path that fails them must not be picked."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import DEVICES, assert_close_scaled, run_front
from refs import abs_scales
from jaxconv3d.reference import reference_and_grads

# (x shape, w shape, padding: "same" for the odd kernels, so dy has x's spatial extent). 32 channels: the Hopper
# 3xTF32 forward / grad-input; 3 channels (a first layer): hopper_smallc's forward and grad-input, which split x or
# dy in registers, and its grad-weight; 3 channels with a 3x7x7 kernel (K = 441, past hopper_smallc's registers):
# the folded 3xTF32 grad-input (the W and H taps folded into 32 channels) and whatever forward the rules pick
SHAPES = {
    "c32": ((2, 32, 6, 8, 16), (32, 32, 3, 3, 3), 1),
    "c3": ((2, 3, 6, 8, 16), (32, 3, 3, 3, 3), 1),
    "c3k7": ((2, 3, 6, 8, 16), (32, 3, 3, 7, 7), (1, 3, 3)),
}

# (x, w, dy) exponents
SCALES = [(-30, 0, 0), (30, -30, 0), (0, 30, -30), (-30, -30, 30), (-116, 0, 0), (0, -116, 0), (0, 0, -116)]


def _f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32).astype(np.float64)


def _tf32_ties(a: np.ndarray) -> np.ndarray:
    """a's float32 values with their 13 bits below TF32's 10-bit mantissa set to exactly half a TF32 unit."""
    bits = a.astype(np.float32).view(np.uint32)
    return ((bits & np.uint32(0xFFFFE000)) | np.uint32(0x1000)).view(np.float32).astype(np.float64)


def _operands(rng, shape: str, scales, ties: bool):
    ex, ew, ed = scales
    X, W, _ = SHAPES[shape]
    x, w = rng.standard_normal(X), rng.standard_normal(W)
    dy = rng.standard_normal((X[0], W[0], *X[2:]))  # "same" padding, stride 1: x's spatial extent
    if ties:
        x, w, dy = _tf32_ties(x), _tf32_ties(w), _tf32_ties(dy)
    return _f32(np.ldexp(x, ex)), _f32(np.ldexp(w, ew)), _f32(np.ldexp(dy, ed))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("front", ["torch", "jax"])
@pytest.mark.parametrize("scales", SCALES + ["ties"], ids=lambda s: s if isinstance(s, str) else "x%dw%ddy%d" % s)
def test_float32_accuracy_over_a_wide_dynamic_range(device, front, shape, scales, rng):
    ties = scales == "ties"
    x, w, dy = _operands(rng, shape, (0, 0, 0) if ties else scales, ties)
    kw = dict(padding=SHAPES[shape][2])
    got = run_front(front, device, "float32", x, w, None, dy, **kw)
    want = reference_and_grads(x, w, None, dy, **kw)
    scale = abs_scales(x, w, None, dy, **kw)
    for name, g, r, s in zip(("forward", "grad_input", "grad_weight"), got, want, scale):
        assert_close_scaled(g, r, s, 1e-5, f"{front} {device} {shape} {scales} {name}")
