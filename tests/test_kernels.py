"""The kernels called directly through the DLPack adapter with NaN-poisoned outputs (an unwritten element shows),
a hypothesis property test over random valid configurations, and bitwise determinism."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from torch.utils.dlpack import to_dlpack

from conftest import TEST_SEED
from helpers import BOUNDS, DEVICES, TORCH_DTYPES, assert_close, assert_close_scaled, torch_reference
from jaxconv3d import _ext, _plan, conv_config

ADAPTER = _ext.torch_adapter


def stream_of(device: str) -> int:
    return torch.cuda.current_stream().cuda_stream if device == "cuda" else 0


def poisoned(shape, dtype, device):
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def run_kernels(cfg, x, w, b, dy, device, dtype, math=0):
    """All four operations straight through the adapter into NaN-filled outputs, each in the layout the device's
    kernel family wants (channels_last_3d tensors for NDHWC families)."""
    tdt = TORCH_DTYPES[dtype]
    cast = lambda a: torch.as_tensor(a).to(device, tdt).contiguous()  # noqa: E731
    xt, wt, dyt = cast(x), cast(w), cast(dy)
    bt = None if b is None else cast(b)
    cc = _plan.cc_of(torch.device(device))
    lay = {op: _plan.native_layout(cfg.replace(math=math), tdt, cc, op) for op in _plan.OPS}
    fmt = lambda op: torch.channels_last_3d if lay[op] else torch.contiguous_format  # noqa: E731
    mem = lambda t, op: t.contiguous(memory_format=fmt(op))  # noqa: E731
    out = lambda shape, op: poisoned(shape, tdt, device).contiguous(memory_format=fmt(op))  # noqa: E731
    back = lambda t, op: t.contiguous()  # noqa: E731
    stream = stream_of(device)
    attrs = lambda op: (cfg.stride, cfg.pad_lo, cfg.pad_hi, cfg.dilation, cfg.groups, math, lay[op], stream)  # noqa: E731
    y, dx, dw = out(cfg.y_shape, "forward"), out(cfg.x_shape, "grad_input"), out(cfg.w_shape, "grad_weight")
    db = poisoned((cfg.out_channels,), tdt, device)
    def workspace(op):  # the planned scratch, filled with garbage (no kernel may depend on its contents)
        n = _plan.plan(cfg.replace(math=math), tdt, cc, op, lay[op])["workspace_bytes"] if device == "cuda" else 0
        return to_dlpack(torch.full((n,), 255, dtype=torch.uint8, device=device)) if n else None

    ADAPTER.fwd(to_dlpack(mem(xt, "forward")), to_dlpack(mem(wt, "forward")), None if bt is None else to_dlpack(bt),
                to_dlpack(y), workspace("forward"), *attrs("forward"))
    ADAPTER.dgrad(to_dlpack(mem(dyt, "grad_input")), to_dlpack(mem(wt, "grad_input")), to_dlpack(dx),
                  workspace("grad_input"), *attrs("grad_input"))
    ADAPTER.wgrad(to_dlpack(mem(xt, "grad_weight")), to_dlpack(mem(dyt, "grad_weight")), to_dlpack(dw),
                  workspace("grad_weight"), *attrs("grad_weight"))
    ADAPTER.bgrad(to_dlpack(dyt), to_dlpack(db), stream)
    y, dx, dw = back(y, "forward"), back(dx, "grad_input"), back(dw, "grad_weight")
    return y, dx, dw, db


def check_config(rng, cfg, has_bias, device, dtype, math=0):
    bound = BOUNDS["tf32" if math else dtype]
    rounded = lambda shape: torch.as_tensor(rng.standard_normal(shape)).to(TORCH_DTYPES[dtype]).double()  # noqa
    x, w, dy = rounded(cfg.x_shape), rounded(cfg.w_shape), rounded(cfg.y_shape)
    b = rounded((cfg.out_channels,)) if has_bias else None
    got = run_kernels(cfg, x, w, b, dy, device, dtype, math)
    ref_y, ref_dx, ref_dw, _ = torch_reference(x, w, b, dy, cfg)
    for name, out, ref in zip(("y", "dx", "dw"), got, (ref_y, ref_dx, ref_dw)):
        assert_close(out, ref, bound, f"{name} {cfg}")
    # grad-bias: per channel, against the size of the summed terms (one output channel makes it a single sum that
    # can cancel to near zero, where a relative bound on the whole tensor is flaky)
    assert_close_scaled(got[3], dy.sum(dim=(0, 2, 3, 4)), dy.abs().sum(dim=(0, 2, 3, 4)), bound, f"db {cfg}")


@st.composite
def configs(draw):
    groups_kind = draw(st.sampled_from(["one", "two", "depthwise"]))
    cg = draw(st.integers(1, 3))
    og = draw(st.integers(1, 3))
    groups = {"one": 1, "two": 2, "depthwise": draw(st.integers(1, 5))}[groups_kind]
    if groups_kind == "depthwise":
        cg = 1
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(3))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(3))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(3))
    pad_lo = tuple(draw(st.integers(0, k)) for k in kernel)
    pad_hi = tuple(draw(st.integers(0, k)) for k in kernel)
    spatial = []
    for k, d, lo, hi in zip(kernel, dilation, pad_lo, pad_hi):
        need = max(1, d * (k - 1) + 1 - lo - hi)
        spatial.append(draw(st.integers(need, need + 6)))
    batch = draw(st.integers(1, 2))
    cfg = conv_config(
        (batch, cg * groups, *spatial), (og * groups, cg, *kernel), None,
        stride=stride, padding=tuple(zip(pad_lo, pad_hi)), dilation=dilation, groups=groups,
    )
    return cfg, draw(st.booleans())


def _examples(default: int) -> int:
    return int(os.environ.get("JAXCONV3D_HYPOTHESIS_EXAMPLES", default))


@seed(TEST_SEED)
@settings(max_examples=_examples(100), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=configs(), data_seed=st.integers(0, 2**31 - 1))
def test_property_cpu(case, data_seed):
    cfg, has_bias = case
    check_config(np.random.default_rng(data_seed), cfg, has_bias, "cpu", "float32")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,math", [("float32", 0), ("float32", 1), ("bfloat16", 0), ("float16", 0)])
def test_property_cuda(dtype, math):
    @seed(TEST_SEED)
    @settings(max_examples=_examples(320), deadline=None, suppress_health_check=[HealthCheck.too_slow],
              database=None)
    @given(case=configs(), data_seed=st.integers(0, 2**31 - 1))
    def run(case, data_seed):
        cfg, has_bias = case
        check_config(np.random.default_rng(data_seed), cfg, has_bias, "cuda", dtype, math)

    run()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_poisoned_outputs_fully_written(rng, device, dtype):
    cfg = conv_config((2, 6, 7, 8, 9), (4, 3, 3, 2, 3), (4,), stride=(2, 1, 3), padding=((1, 0), (0, 1), (2, 2)),
                      dilation=(1, 2, 1), groups=2)
    check_config(rng, cfg, True, device, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_bitwise_deterministic(rng, device):
    cfg = conv_config((3, 8, 9, 10, 11), (8, 4, 3, 3, 3), (8,), stride=(1, 2, 1), padding=1, groups=2)
    data = [rng.standard_normal(s) for s in (cfg.x_shape, cfg.w_shape, (8,), cfg.y_shape)]
    first = run_kernels(cfg, *data, device, "float32")
    second = run_kernels(cfg, *data, device, "float32")
    for a, b in zip(first, second):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7, 9), (1, 4, 16, 16, 64), (1, 2, 32, 64, 64), (3, 2, 1, 1, 8),
                                   (1, 1, 37, 41, 43)])
def test_bgrad_against_float64_whatever_the_address(rng, dtype, shape):
    """The CUDA grad-bias against float64, and bitwise the same for the same dy at a 16-byte-aligned address (whole
    16-byte loads where the rows allow) and one element further on (element loads): one summation order. Shapes:
    rows not a multiple of a 16-byte chunk, a whole row of chunks, the four-chunk main loop, a one-position plane
    per channel with a batch of three, an odd row of 65231."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    tdt = TORCH_DTYPES[dtype]
    dy = torch.as_tensor(rng.standard_normal(shape)).to(tdt)
    aligned = dy.cuda()
    shifted = torch.empty(dy.numel() + 1, dtype=tdt, device="cuda")[1:].view(shape)
    shifted.copy_(aligned)
    got = []
    for t in (aligned, shifted):
        db = poisoned((shape[1],), tdt, "cuda")
        ADAPTER.bgrad(to_dlpack(t), to_dlpack(db), stream_of("cuda"))
        got.append(db.cpu())
    assert torch.equal(got[0], got[1]), f"{shape} {dtype}: the sum depends on dy's address"
    ref = dy.double()
    assert_close_scaled(got[0], ref.sum(dim=(0, 2, 3, 4)), ref.abs().sum(dim=(0, 2, 3, 4)), BOUNDS[dtype],
                        f"db {shape} {dtype}")


@pytest.mark.gpu
def test_more_than_2_31_elements():
    """64-bit indexing: an input of 2^31 + 2^25 elements (8.1 GiB) in float32 gives the right output at its far end."""
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * 2**30:
        pytest.skip("needs 24 GiB of free GPU memory")
    import jaxconv3d.torch as jt

    x = torch.empty(1, 33, 256, 256, 1024, device="cuda")
    assert x.numel() > 2**31
    x.normal_()
    x.requires_grad_(True)
    w = torch.randn(2, 33, 1, 1, 3, device="cuda", requires_grad=True)
    y = jt.conv3d(x, w, None, padding=(0, 0, 1))
    g = torch.randn_like(y)
    dx, dw = torch.autograd.grad(y, (x, w), g)
    assert torch.isfinite(dw).all()
    for idx in (0, 255):  # first and last depth slices: the last lies past element 2^31
        xs, gs = x[:, :, idx : idx + 1].detach().double(), g[:, :, idx : idx + 1].double()
        ref = torch.nn.functional.conv3d(xs, w.detach().double(), padding=(0, 0, 1))
        assert_close(y[:, :, idx : idx + 1], ref, 1e-5, f"y slice {idx}")
        ref_dx = torch.nn.functional.conv_transpose3d(gs, w.detach().double(), padding=(0, 0, 1))
        assert_close(dx[:, :, idx : idx + 1], ref_dx, 1e-5, f"dx slice {idx}")
