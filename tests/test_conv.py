"""Forward, grad-input, grad-weight and grad-bias of both fronts against float64 references, per device and
dtype, on fresh random data."""

from __future__ import annotations

import numpy as np
import pytest

from cases import CASES
from helpers import (
    BOUNDS, DEVICES, assert_close, assert_close_scaled, jax_reference, randn, run_front, to_numpy, torch_reference,
)
from jaxconv3d import conv_config

DTYPES = ["float32", "float64", "bfloat16", "float16"]


def make_inputs(rng, case, dtype):
    cfg = conv_config(case.x_shape, case.w_shape, (case.w_shape[0],) if case.bias else None, **case.kwargs())
    x = randn(rng, case.x_shape, dtype)
    w = randn(rng, case.w_shape, dtype)
    b = randn(rng, (case.w_shape[0],), dtype) if case.bias else None
    dy = randn(rng, cfg.y_shape, dtype)
    return cfg, x, w, b, dy


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("front", ["jax", "torch"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_float64_reference(rng, case, front, dtype, device):
    cfg, x, w, b, dy = make_inputs(rng, case, dtype)
    got = run_front(front, device, dtype, x, w, b, dy, **case.kwargs())
    ref = torch_reference(x, w, b, dy, cfg)
    for name, out, expected in zip(("y", "dx", "dw", "db"), got, ref):
        if expected is None:
            assert out is None
            continue
        what = f"{case.name} {front} {dtype} {device} {name}"
        if name == "db":  # per channel, against the size of the summed terms (a single sum can cancel)
            assert_close_scaled(out, expected, np.abs(dy).sum(axis=(0, 2, 3, 4)), BOUNDS[dtype], what)
        else:
            assert_close(out, expected, BOUNDS[dtype], what)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_references_agree(rng, case):
    """The two float64 references (torch F.conv3d and jax.lax.conv_general_dilated) agree with each other."""
    cfg, x, w, b, _ = make_inputs(rng, case, "float64")
    ref_torch = torch_reference(x, w, b, None, cfg)[0]
    assert_close(jax_reference(x, w, b, cfg), ref_torch, 1e-12, case.name)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_tf32_precision_is_close(rng, device):
    case = CASES[0]
    cfg, x, w, b, dy = make_inputs(rng, case, "float32")
    ref = torch_reference(x, w, b, dy, cfg)
    for front in ("jax", "torch"):
        got = run_front(front, device, "float32", x, w, b, dy, precision="tf32", **case.kwargs())
        for out, expected in zip(got, ref):
            assert_close(out, expected, BOUNDS["tf32"], f"tf32 {front}")


@pytest.mark.parametrize("device", DEVICES)
def test_unbatched_input(rng, device):
    case = CASES[1]
    cfg, x, w, b, dy = make_inputs(rng, case, "float32")
    ref = torch_reference(x[:1], w, b, dy[:1], cfg.replace(batch=1))
    for front in ("jax", "torch"):
        got = run_front(front, device, "float32", x[0], w, b, dy[0], **case.kwargs())
        assert got[0].shape == tuple(cfg.y_shape[1:])
        for name, out, expected in zip(("y", "dx", "dw", "db"), got, ref):
            out = to_numpy(out)
            assert_close(out[None] if name in ("y", "dx") else out, expected, BOUNDS["float32"], f"unbatched {name}")
