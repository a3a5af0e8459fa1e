"""A property test through both public fronts (not the adapter): random valid calls written as a user writes them,
with up to ~80 channels per group, long W rows, padding larger than the kernel, problems above the CPU threading
cut, every dtype, and non-contiguous / channels_last_3d inputs; each checked against float64 F.conv3d from the raw
arguments. Plus bitwise determinism across thread counts.

Reproducible: hypothesis runs from a fixed seed (JAXCONV3D_TEST_SEED when set; printed with any failure) and every
tensor comes from a numpy generator seeded by the drawn `seed`. JAXCONV3D_HYPOTHESIS_EXAMPLES sets the number of
examples (default 60 on CPU, 300 with a GPU)."""

from __future__ import annotations

import math
import os
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, example, given, note, reject, seed, settings
from hypothesis import strategies as st

import jaxconv3d
import jaxconv3d.torch as jt
from conftest import TEST_SEED
from helpers import BOUNDS, DEVICES, TORCH_DTYPES, assert_close_scaled, has_cuda, jax_device
from refs import abs_scales, reference_and_grads, torch_conv64

MAX_MACS = 3_000_000  # per example (forward multiply-adds): keeps ~30 CPU examples within ~a minute
THREADING_CUT = 2 * 2**18  # conv_cpu.cc: below this many multiply-adds an operation stays on one thread
DTYPES = ["float32", "float64", "bfloat16", "float16"]
LAYOUTS = ["contiguous", "channels_last_3d", "strided_slice", "transposed_view"]


@st.composite
def calls(draw):
    """(x_shape, w_shape, bias, kwargs) with raw arguments in every accepted form."""
    groups_kind = draw(st.sampled_from(["one", "few", "depthwise"]))
    wide = draw(st.booleans())  # many channels and small spatial sizes, or few channels and long rows
    channels = st.integers(8, 80) if wide else st.integers(1, 6)
    if groups_kind == "depthwise":
        groups = draw(st.integers(8, 48) if wide else st.integers(1, 5))
        cg, og = 1, draw(st.integers(1, 3))
    else:
        groups = 1 if groups_kind == "one" else draw(st.integers(2, 3))
        cg, og = draw(channels), draw(channels)
    kernel = tuple(draw(st.integers(1, 3 if wide else 7)) for _ in range(3))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(3))
    form = draw(st.sampled_from(["pairs", "int", "triple", "same", "valid"]))
    stride = (1, 1, 1) if form == "same" else tuple(draw(st.integers(1, 3)) for _ in range(3))
    if form == "pairs":  # up to two more than the dilated kernel: larger than the kernel, often all padding
        pads = [(draw(st.integers(0, d * (k - 1) + 2)), draw(st.integers(0, d * (k - 1) + 2)))
                for k, d in zip(kernel, dilation)]
        padding = tuple(pads)
    elif form == "int":
        padding = draw(st.integers(0, max(kernel) + 2))
        pads = [(padding, padding)] * 3
    elif form == "triple":
        padding = tuple(draw(st.integers(0, k + 2)) for k in kernel)
        pads = [(p, p) for p in padding]
    else:
        padding = form
        pads = [(0, 0)] * 3 if form == "valid" else [(d * (k - 1), 0) for k, d in zip(kernel, dilation)]
    spatial = []
    for axis, (k, d, (lo, hi)) in enumerate(zip(kernel, dilation, pads)):
        need = max(1, d * (k - 1) + 1 - lo - hi)
        longest = need + (10 if wide else (60 if axis == 2 else 10))  # W rows long enough for every kernel family
        spatial.append(draw(st.integers(need, longest)))
    batch = draw(st.integers(1, 2))
    x_shape, w_shape = (batch, cg * groups, *spatial), (og * groups, cg, *kernel)
    kw = dict(stride=stride if len(set(stride)) > 1 else stride[0], padding=padding,
              dilation=dilation if len(set(dilation)) > 1 else dilation[0], groups=groups)
    return x_shape, w_shape, draw(st.booleans()), kw


def macs(x_shape, w_shape, kw) -> int:
    meta = lambda shape: torch.empty(shape, dtype=torch.float64, device="meta")  # noqa: E731
    y_shape = torch_conv64(meta(x_shape), meta(w_shape), None, **kw).shape
    return math.prod(y_shape) * math.prod(w_shape[1:])


def layout(t: torch.Tensor, kind: str) -> torch.Tensor:
    """The same values in another memory layout."""
    if kind == "channels_last_3d":
        return t.contiguous(memory_format=torch.channels_last_3d)
    if kind == "strided_slice":  # every other element of a twice-as-long W axis
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        wide[..., ::2] = t
        return wide[..., ::2]
    if kind == "transposed_view":
        return t.transpose(2, 4).contiguous().transpose(2, 4)
    return t


def run(front, dtype, x, w, b, dy, kw, x_layout, w_layout, device="cpu"):
    if front == "torch":
        tdt = TORCH_DTYPES[dtype]
        xt = layout(x.to(device, tdt, copy=True), x_layout).requires_grad_(True)
        wt = layout(w.to(device, tdt, copy=True), w_layout).requires_grad_(True)
        bt = None if b is None else b.to(device, tdt, copy=True).requires_grad_(True)
        y = jt.conv3d(xt, wt, bt, **kw)
        leaves = [t for t in (xt, wt, bt) if t is not None]
        grads = torch.autograd.grad(y, leaves, dy.to(device, tdt))
        return (y, *grads) if bt is not None else (y, *grads, None)
    dev = jax_device(device)
    cast = lambda t: jax.device_put(  # noqa: E731
        jnp.asarray(t.float().numpy() if dtype != "float64" else t.numpy(), dtype), dev)
    args = [cast(t) for t in (x, w, b) if t is not None]
    y, vjp = jax.vjp(lambda *a: jaxconv3d.conv3d(*a, **kw), *args)
    grads = vjp(cast(dy))
    return (y, *grads) if b is not None else (y, *grads, None)


def _examples() -> int:
    return int(os.environ.get("JAXCONV3D_HYPOTHESIS_EXAMPLES", 40 if has_cuda() else 8))


# Always tried first (on every front and dtype): a grouped problem above the threading cut, channels-last input.
THREADED_CALL = ((1, 8, 6, 7, 20), (12, 4, 3, 3, 3), True, dict(stride=(1, 1, 2), padding=((1, 2), (0, 3), (2, 2)),
                                                                 dilation=1, groups=2))
SEEN: set = set()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("front", ["torch", "jax"])
@pytest.mark.parametrize("device", DEVICES)
def test_fronts_property(device, front, dtype):
    """JAXCONV3D_HYPOTHESIS_EXAMPLES random calls per device, front and dtype (default 8; 40 with a GPU, whose
    runs reach the CUDA kernels: up to 80 channels per group takes grad-weight past the 32-channel tile paths).
    Each combination draws its own calls, from a seed derived from the test seed."""

    @seed(TEST_SEED * 1000 + zlib.crc32(f"{device}/{front}/{dtype}".encode()))
    @settings(max_examples=_examples(), deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    @example(call=THREADED_CALL, x_layout="channels_last_3d", w_layout="contiguous", data_seed=0)
    @given(call=calls(), x_layout=st.sampled_from(LAYOUTS), w_layout=st.sampled_from(LAYOUTS[:2]),
           data_seed=st.integers(0, 2**32 - 1))
    def check(call, x_layout, w_layout, data_seed):
        check_call(device, front, dtype, call, x_layout, w_layout, data_seed)

    check()


def check_call(device, front, dtype, call, x_layout, w_layout, data_seed):
    x_shape, w_shape, bias, kw = call
    work = macs(x_shape, w_shape, kw)
    if work > MAX_MACS:
        reject()
    threaded = "threaded" if work > THREADING_CUT else "one thread"
    event(threaded)
    SEEN.add((device, front, dtype, threaded))
    note(f"JAXCONV3D_TEST_SEED={TEST_SEED}; {work} multiply-adds ({threaded})")
    rng = np.random.default_rng(data_seed)
    rounded = lambda shape: torch.as_tensor(rng.standard_normal(shape)).to(TORCH_DTYPES[dtype]).double()  # noqa
    # Weights scaled like a trained layer, so float16 sums stay far from overflow at 80 channels x 27 taps.
    x, w = rounded(x_shape), (rounded(w_shape) / math.sqrt(math.prod(w_shape[1:]))).to(TORCH_DTYPES[dtype]).double()
    b = rounded(w_shape[0]) if bias else None
    dy = rounded(torch_conv64(x, w, None, **kw).shape)
    want, scale = reference_and_grads(x, w, b, dy, **kw), abs_scales(x, w, b, dy, **kw)
    got = run(front, dtype, x, w, b, dy, kw, x_layout, w_layout, device)
    for name, g, r, s in zip(("y", "dx", "dw", "db"), got, want, scale):
        if r is None:
            assert g is None
            continue
        assert tuple(g.shape) == tuple(r.shape), (name, g.shape, r.shape)
        assert_close_scaled(g, r, s, BOUNDS[dtype], f"{front} {dtype} {name}")


def test_property_examples_include_threaded_sizes():
    """The explicit example really is above the threading cut (it ran on every front and dtype before this)."""
    assert macs(*THREADED_CALL[:2], THREADED_CALL[3]) > THREADING_CUT
    if SEEN:  # when the property test ran in this session
        assert {("cpu", f, d, "threaded") for f in ("torch", "jax") for d in DTYPES} <= SEEN


# ---- determinism across thread counts


THREAD_SETTINGS = ["1", "2", "3", "8", None]  # None: the default (hardware concurrency)


def test_bitwise_equal_across_thread_counts(monkeypatch, rng):
    """Every operation through both fronts gives the same bits with 1, 2, 3, 8 and the default number of threads
    (the problem is far above the threading cut, so the work really is split)."""
    x_shape, w_shape, kw = (2, 8, 12, 12, 24), (16, 4, 3, 3, 3), dict(stride=(1, 2, 1), padding=1, groups=2)
    assert macs(x_shape, w_shape, kw) > 8 * THREADING_CUT
    x, w, b = (torch.as_tensor(rng.standard_normal(s), dtype=torch.float32) for s in (x_shape, w_shape, (16,)))
    dy = torch.as_tensor(rng.standard_normal(torch_conv64(x.double(), w.double(), None, **kw).shape),
                         dtype=torch.float32)
    results = []
    for threads in THREAD_SETTINGS:
        if threads is None:
            monkeypatch.delenv("JAXCONV3D_CPU_THREADS", raising=False)
        else:
            monkeypatch.setenv("JAXCONV3D_CPU_THREADS", threads)
        both = []
        for front in ("torch", "jax"):
            both += [np.asarray(jax.device_get(t)) if not isinstance(t, torch.Tensor) else t.detach().numpy()
                     for t in run(front, "float32", x, w, b, dy, kw, "contiguous", "contiguous")]
        results.append(both)
    for threads, result in zip(THREAD_SETTINGS[1:], results[1:]):
        for i, (a, r) in enumerate(zip(results[0], result)):
            assert np.array_equal(a.view(np.uint32), r.view(np.uint32)), f"{threads} threads vs 1: output {i}"
    for a, r in zip(results[0][:4], results[0][4:]):  # and the two fronts agree
        assert np.array_equal(a.view(np.uint32), r.view(np.uint32))
