"""JAX and torch fronts run the same kernels: given the same inputs on the same device they return bitwise the
same outputs and gradients."""

from __future__ import annotations

import numpy as np
import pytest

from cases import CASES
from helpers import DEVICES, randn, run_front, to_numpy
from jaxconv3d import conv_config


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("precision", [None, "tf32"])
@pytest.mark.parametrize("case", CASES[:6], ids=lambda c: c.name)
def test_jax_and_torch_bitwise_equal(rng, case, precision, dtype, device):
    cfg = conv_config(case.x_shape, case.w_shape, None, **case.kwargs())
    x, w, dy = randn(rng, case.x_shape, dtype), randn(rng, case.w_shape, dtype), randn(rng, cfg.y_shape, dtype)
    b = randn(rng, (case.w_shape[0],), dtype) if case.bias else None
    from_jax = run_front("jax", device, dtype, x, w, b, dy, precision=precision, **case.kwargs())
    from_torch = run_front("torch", device, dtype, x, w, b, dy, precision=precision, **case.kwargs())
    for name, a, t in zip(("y", "dx", "dw", "db"), from_jax, from_torch):
        if a is None:
            assert t is None
            continue
        np.testing.assert_array_equal(to_numpy(a), to_numpy(t), err_msg=name)
