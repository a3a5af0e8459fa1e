"""Tight dtype checks: bfloat16 / float16 results are the float64 result correctly rounded (round to nearest even),
not merely within a loose relative bound; conversions are exact on every 16-bit value; and every precision name and
jax.lax.Precision value reaches the kernels as the documented math mode."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch

import jaxconv3d
import jaxconv3d.torch as jt
from jaxconv3d import _params
from jaxconv3d.torch import _ops
from helpers import assert_close_scaled
from refs import abs_scales, reference_and_grads, torch_conv64

HALF = {"bfloat16": torch.bfloat16, "float16": torch.float16}
JAX_HALF = {"bfloat16": jnp.bfloat16, "float16": jnp.float16}
NP_HALF = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance in units in the last place between two 16-bit tensors of one dtype (+0 and -0 are 0 apart)."""

    def ordered(t):
        bits = t.contiguous().view(torch.int16).to(torch.int32) & 0xFFFF
        return torch.where(bits >= 0x8000, -(bits & 0x7FFF), bits)

    return (ordered(a) - ordered(b)).abs()


def to_torch(a, dtype: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu()
    return torch.as_tensor(np.asarray(a).astype(np.float32)).to(HALF[dtype])


def rounding_report(out, ref64: torch.Tensor, dtype: str) -> tuple[torch.Tensor, float]:
    """(ulps from the float64 result rounded to `dtype`, fraction exactly equal)."""
    out = to_torch(out, dtype)
    assert out.dtype == HALF[dtype]
    d = ulps(out, ref64.to(HALF[dtype]))
    return d, float((d == 0).double().mean())


# Small reductions (fwd: K = 2*2*2*2 = 16 terms; dgrad: at most 2*8 = 16) so float32 accumulation of 16-bit
# products is exact enough that only results within a float32 rounding of a tie can land one ulp off.
X_SHAPE, W_SHAPE = (2, 4, 5, 6, 7), (4, 2, 2, 2, 2)
KW = dict(stride=(1, 2, 1), padding=((1, 0), (0, 1), (1, 1)), groups=2)


def run_both(front, dtype, x, w, b, dy):
    """(y, dx, dw, db) of one front in `dtype` from float64 tensors holding values of that dtype."""
    if front == "torch":
        leaves = [t.to(HALF[dtype]).requires_grad_(True) for t in (x, w, b)]
        y = jt.conv3d(*leaves, **KW)
        return (y, *torch.autograd.grad(y, leaves, dy.to(HALF[dtype])))
    cast = lambda t: jnp.asarray(t.numpy(), JAX_HALF[dtype])  # noqa: E731
    y, vjp = jax.vjp(lambda *a: jaxconv3d.conv3d(*a, **KW), *map(cast, (x, w, b)))
    return (y, *vjp(cast(dy)))


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("front", ["torch", "jax"])
def test_results_correctly_rounded(rng, front, dtype):
    """Operands that are 8-bit integers times powers of two (exact in both dtypes): every product is a 16-bit integer
    times one unit, and no partial sum reaches 2^24 units (at most 240 terms of 255 x 255), so float32 accumulation
    is exact in any order, the only rounding is the final one, and every element must be the float64 result
    rounded to nearest even. Results need up to ~24 significant bits, so nearly all of them do round."""
    grid = lambda shape, unit: torch.as_tensor(rng.integers(-255, 256, shape) * unit)  # noqa: E731
    x, w, b = grid(X_SHAPE, 2.0**-4), grid(W_SHAPE, 2.0**-6), grid((4,), 2.0**-2)
    dy = grid(torch_conv64(x, w, b, **KW).shape, 2.0**-4)
    assert dy.shape[0] * math.prod(dy.shape[2:]) * 255 * 255 < 2**24  # grad-weight's longest sum stays exact
    ref = reference_and_grads(x, w, b, dy, **KW)
    for name, g, r in zip(("y", "dx", "dw", "db"), run_both(front, dtype, x, w, b, dy), ref):
        d, exact = rounding_report(g, r, dtype)
        assert exact == 1.0, f"{front} {dtype} {name}: {exact:.1%} correctly rounded, worst {int(d.max())} ulp"
        if name != "db":  # (4 sums of 8-bit values: they may all fit in float16)
            rounded = r.to(HALF[dtype]).double()
            assert float((rounded != r).double().mean()) > 0.1, f"{name}: too few results need rounding to test it"


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("front", ["torch", "jax"])
def test_random_results_nearly_all_correctly_rounded(rng, front, dtype):
    """Normal random operands: float32 accumulation is no longer exact, so a result within a float32 rounding of a
    tie (or one that cancels heavily) may land one ulp off; nearly all must still be correctly rounded, and every
    error is far below an ulp of the size of the summed terms."""
    half = lambda shape: torch.as_tensor(rng.standard_normal(shape)).to(HALF[dtype]).double()  # noqa: E731
    x, w, b = half(X_SHAPE), half(W_SHAPE), half((4,))
    dy = half(torch_conv64(x, w, b, **KW).shape)
    ref, scale = reference_and_grads(x, w, b, dy, **KW), abs_scales(x, w, b, dy, **KW)
    ulp = 2.0**-8 if dtype == "bfloat16" else 2.0**-11
    for name, g, r, s in zip(("y", "dx", "dw", "db"), run_both(front, dtype, x, w, b, dy), ref, scale):
        d, exact = rounding_report(g, r, dtype)
        assert exact >= 0.98, f"{front} {dtype} {name}: {exact:.1%} correctly rounded, worst {int(d.max())} ulp"
        assert_close_scaled(g, r, s, ulp, f"{front} {dtype} {name}")


def all_values(dtype: str) -> torch.Tensor:
    """Every finite value of the 16-bit dtype (both zeros, subnormals, the largest normals) and the infinities."""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    values = bits.view(HALF[dtype])
    return values[~torch.isnan(values)]


def pointwise(front: str, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """y[n, o] = sum_c w[o, c] x[n, c] through one front; x is (N, C) and becomes (N, C, 1, 1, 1)."""
    x5, w5 = x[:, :, None, None, None], w[:, :, None, None, None]
    if front == "torch":
        return jt.conv3d(x5, w5)[:, :, 0, 0, 0]
    dtype = "bfloat16" if x.dtype == torch.bfloat16 else "float16"
    cast = lambda t: jnp.asarray(t.float().numpy(), JAX_HALF[dtype])  # noqa: E731
    return to_torch(jaxconv3d.conv3d(cast(x5), cast(w5))[:, :, 0, 0, 0], dtype)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("front", ["torch", "jax"])
def test_every_value_round_trips(front, dtype):
    """x * 1 is x for every 16-bit value: widening and narrowing are exact, subnormals and infinities included."""
    x = all_values(dtype)[:, None]
    y = pointwise(front, x, torch.ones(1, 1, dtype=HALF[dtype]))
    assert torch.equal(y, x), f"{front} {dtype}: {int((y != x).sum())} values changed"


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("front", ["torch", "jax"])
def test_rounding_to_nearest_even(rng, front, dtype):
    """Sums of two 16-bit values of nearby magnitude are exact in float32 and half of them are ties, so the result's
    rounding is seen exactly: it must be float32 -> 16-bit round to nearest even (torch's conversion) for every
    element. Scaling every value by a power of two below 1 lands some in the subnormal range, whose rounding is
    checked the same way."""
    a = torch.as_tensor(rng.standard_normal(4096) * 8).to(HALF[dtype])
    b = (a.float() * torch.as_tensor(rng.uniform(0.5, 2.0, 4096)).float()).to(HALF[dtype])
    y = pointwise(front, torch.stack([a, b], 1), torch.ones(1, 2, dtype=HALF[dtype]))[:, 0]
    want = (a.float() + b.float()).to(HALF[dtype])
    assert torch.equal(y, want), f"{front} {dtype}: {int((y != want).sum())} sums misrounded"
    x = all_values(dtype)
    x = x[torch.isfinite(x)][:, None]
    scale = 2.0**-10 if dtype == "float16" else 2.0**-120
    y = pointwise(front, x, torch.full((1, 1), scale, dtype=HALF[dtype]))
    want = (x.float() * scale).to(HALF[dtype])
    assert torch.equal(y, want), f"{front} {dtype}: {int((y != want).sum())} scaled values misrounded"


def test_all_values_are_there():
    for dtype in HALF:
        v = all_values(dtype)
        assert v.numel() > 63000 and torch.isinf(v).sum() == 2 and (v == 0).sum() == 2


# ---- precision -> math mode


ACCURATE, TF32 = _params.MATH_ACCURATE, _params.MATH_TF32
# As documented (jaxconv3d.conv3d's docstring, docs/design.md, _params): float32-accurate unless TF32 is asked for.
PRECISIONS = [
    (None, ACCURATE),
    ("highest", ACCURATE), ("HIGHEST", ACCURATE), ("high", ACCURATE), ("High", ACCURATE), ("float32", ACCURATE),
    ("bfloat16_3x", ACCURATE), ("accurate", ACCURATE), ("ieee", ACCURATE),
    ("tf32", TF32), ("TF32", TF32), ("tensorfloat32", TF32), ("default", TF32), ("fastest", TF32),
    ("bfloat16", TF32),
    (jax.lax.Precision.HIGHEST, ACCURATE), (jax.lax.Precision.HIGH, ACCURATE), (jax.lax.Precision.DEFAULT, TF32),
    ((jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST), ACCURATE),
    ((jax.lax.Precision.HIGH, jax.lax.Precision.DEFAULT), ACCURATE),
    ((jax.lax.Precision.DEFAULT, jax.lax.Precision.HIGHEST), ACCURATE),
    ((jax.lax.Precision.DEFAULT, jax.lax.Precision.DEFAULT), TF32),
    (("tf32", "tf32"), TF32),
]
PRECISION_IDS = [repr(p) for p, _ in PRECISIONS]


def test_every_lax_precision_is_listed():
    listed = {p for p, _ in PRECISIONS if isinstance(p, jax.lax.Precision)}
    assert listed == set(jax.lax.Precision)


@pytest.mark.parametrize("precision,mode", PRECISIONS, ids=PRECISION_IDS)
def test_precision_maps_to_documented_mode(precision, mode):
    assert _params.math_mode(precision) == mode
    cfg = _params.conv_config((1, 2, 3, 3, 3), (2, 2, 1, 1, 1), None, precision=precision)
    assert cfg.math == mode


@pytest.mark.parametrize("bad", ["fast", "tf16", "", 3, 1.0, ("tf32",), object()])
def test_unknown_precision_raises(bad):
    with pytest.raises(ValueError, match="precision"):
        _params.math_mode(bad)


class _RecordingAdapter:
    """Stands in for the C++ adapter of the torch door and records the math attribute of each call."""

    def __init__(self, real):
        self.real, self.maths = real, []

    def __getattr__(self, name):
        fn = getattr(self.real, name)

        def call(*args):
            if name == "bwd":  # (dy, w, dx, x, dy, dw, ..., math, input_layout, weight_layout, stream): one entry
                self.maths.extend(args[-4] for out in (args[2], args[5]) if out is not None)  # per convolution run
            elif name not in ("bgrad", "convert_layout"):
                self.maths.append(args[-3])  # (..., groups, math, layout, stream)
            return fn(*args)

        return call


@pytest.mark.parametrize("precision,mode", [p for p in PRECISIONS if not isinstance(p[0], tuple)],
                         ids=[i for (p, _), i in zip(PRECISIONS, PRECISION_IDS) if not isinstance(p, tuple)])
def test_fronts_pass_the_mode_to_the_kernels(monkeypatch, precision, mode):
    x = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    w = torch.randn(3, 2, 2, 2, 2, requires_grad=True)
    if not isinstance(precision, jax.lax.Precision):  # the torch front takes names only
        recorder = _RecordingAdapter(_ops._adapter)
        monkeypatch.setattr(_ops, "_adapter", recorder)
        jt.conv3d(x, w, padding=1, precision=precision).sum().backward()
        module = jt.Conv3d(2, 3, 2, precision=precision)
        module(x).sum().backward()
        assert recorder.maths == [mode] * 6, recorder.maths
    loss = lambda x_, w_: jnp.sum(jaxconv3d.conv3d(x_, w_, padding=1, precision=precision) ** 2)  # noqa: E731
    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x.detach().numpy(), w.detach().numpy()).as_text()
    modes = [int(m) for m in re.findall(r"math = (\d+)", hlo)]
    assert len(modes) == 3 and set(modes) == {mode}, modes


def test_compiled_path_passes_the_mode(monkeypatch):
    recorder = _RecordingAdapter(_ops._adapter)
    monkeypatch.setattr(_ops, "_adapter", recorder)
    x = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    w = torch.randn(3, 2, 2, 2, 2, requires_grad=True)
    torch._dynamo.reset()
    for precision, mode in (("tf32", TF32), ("high", ACCURATE)):
        recorder.maths.clear()
        fn = torch.compile(lambda x_, w_: jt.conv3d(x_, w_, padding=(1, 0, 1), precision=precision),
                           fullgraph=True, backend="aot_eager")
        fn(x, w).sum().backward()
        assert recorder.maths and set(recorder.maths) == {mode}, (precision, recorder.maths)


@pytest.mark.parametrize("front", ["torch", "jax"])
def test_subnormals_kept_on_worker_threads(monkeypatch, front):
    """float32 subnormals (every bfloat16 subnormal is one) survive a threaded kernel called from either front: XLA's
    CPU threads flush subnormals to zero unless the kernel turns that off for itself and the threads it starts."""
    monkeypatch.setenv("JAXCONV3D_CPU_THREADS", "4")
    x = all_values("bfloat16")
    x = x[torch.isfinite(x)][: 64 * 960].reshape(1, 64, 4, 16, 15)
    w = torch.eye(64, dtype=torch.bfloat16)[:, :, None, None, None]  # 64 x 64-term sums: above the threading cut
    if front == "torch":
        y = jt.conv3d(x, w)
    else:
        cast = lambda t: jnp.asarray(t.float().numpy(), jnp.bfloat16)  # noqa: E731
        y = to_torch(jaxconv3d.conv3d(cast(x), cast(w)), "bfloat16")
    subnormal = (x != 0) & (x.abs() < torch.finfo(torch.float32).tiny)
    assert int(subnormal.sum()) > 200
    assert torch.equal(y, x), f"{front}: {int((y != x).sum())} values changed, subnormals flushed?"
