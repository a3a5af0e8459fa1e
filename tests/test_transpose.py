"""ConvTranspose3d on both fronts: float64 parity with F.conv_transpose3d and with lax (lhs dilation) on random
configurations, gradients of first and second order, vmap / jit, bad inputs, determinism and the
nn.ConvTranspose3d drop-in contract."""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.test_util import check_grads
from torch import nn

import jaxconv3d
import jaxconv3d.torch as jt
from helpers import BOUNDS, DEVICES, TORCH_DTYPES, assert_close, jax_device, to_numpy, train_side_by_side

KW = dict(stride=(2, 1, 3), padding=(1, 0, 2), output_padding=(1, 0, 1), groups=2, dilation=(1, 2, 1))
X_SHAPE, W_SHAPE = (2, 4, 3, 4, 5), (4, 3, 3, 2, 3)  # W: (C_in, C_out/groups, k...) -> C_out 6


def randn_like(a, dtype):
    """a rounded to dtype (kept as float64 numbers), so every front and the reference see the same values."""
    return torch.as_tensor(np.asarray(a)).to(TORCH_DTYPES[dtype]).to(torch.float64).numpy()


def random_config(seed: int):
    """A random valid call: stride, padding, output_padding (< max(stride, dilation)), dilation, groups."""
    rng = np.random.default_rng(seed)
    while True:
        s, d, k = (tuple(int(v) for v in rng.integers(1, hi, 3)) for hi in (4, 3, 4))
        p = tuple(int(v) for v in rng.integers(0, 3, 3))
        op = tuple(int(rng.integers(0, max(a, b))) for a, b in zip(s, d))
        g = int(rng.choice([1, 2, 3]))
        c_in, c_out = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
        i = tuple(int(v) for v in rng.integers(1, 5, 3))
        if all((a - 1) * st - 2 * pp + dd * (kk - 1) + o + 1 > 0 for a, st, pp, dd, kk, o in zip(i, s, p, d, k, op)):
            kw = dict(stride=s, padding=p, output_padding=op, groups=g, dilation=d)
            x = rng.standard_normal((int(rng.integers(1, 3)), c_in, *i))
            return x, rng.standard_normal((c_in, c_out // g, *k)), rng.standard_normal(c_out), kw


def lax_transpose(x, w, b, *, stride, padding, output_padding, groups, dilation):
    """The same transposed convolution written with lax: a convolution of the lhs-dilated input with the flipped,
    in/out-swapped filter."""
    stride, padding, output_padding, dilation = (
        (v,) * 3 if isinstance(v, int) else tuple(v) for v in (stride, padding, output_padding, dilation)
    )
    c_in, c_out_g, *k = w.shape
    wf = w.reshape(groups, c_in // groups, c_out_g, *k).swapaxes(1, 2).reshape(groups * c_out_g, c_in // groups, *k)
    wf = jnp.flip(wf, (2, 3, 4))
    pads = [(d * (kk - 1) - p, d * (kk - 1) - p + op) for kk, p, op, d in zip(k, padding, output_padding, dilation)]
    y = jax.lax.conv_general_dilated(
        x, wf, (1, 1, 1), pads, lhs_dilation=stride, rhs_dilation=dilation, feature_group_count=groups,
        dimension_numbers=("NCDHW", "OIDHW", "NCDHW"), precision="highest",
    )
    return y if b is None else y + b[None, :, None, None, None]


def torch_ref(x, w, b, **kw):
    t = lambda a: None if a is None else torch.as_tensor(np.asarray(a, np.float64))  # noqa: E731
    return F.conv_transpose3d(t(x), t(w), t(b), kw["stride"], kw["padding"], kw["output_padding"], kw["groups"],
                              kw["dilation"])


@pytest.mark.parametrize("seed", range(24))
def test_random_configs_match_torch_and_lax(seed):
    x, w, b, kw = random_config(seed)
    want = torch_ref(x, w, b, **kw)
    assert_close(lax_transpose(x, w, b, **kw), want, 1e-12, f"lax {kw}")
    cpu = jax.devices("cpu")[0]  # the torch tensors below live on the CPU: both fronts on the same kernels
    got_jax = jaxconv3d.conv_transpose3d(*(jax.device_put(a, cpu) for a in (x, w, b)), **kw)
    assert_close(got_jax, want, 1e-12, f"jax {kw}")
    got_torch = jt.conv_transpose3d(torch.as_tensor(x), torch.as_tensor(w), torch.as_tensor(b), **kw)
    assert_close(got_torch, want, 1e-12, f"torch {kw}")
    np.testing.assert_array_equal(to_numpy(got_jax), to_numpy(got_torch))  # same kernels, same bits


@pytest.mark.parametrize("seed", range(6))
def test_random_config_gradients(seed):
    x, w, b, kw = random_config(100 + seed)
    loss = lambda fn: lambda *a: jnp.sum(jnp.sin(fn(*a, **kw)))  # noqa: E731
    got = jax.jit(jax.grad(loss(jaxconv3d.conv_transpose3d), argnums=(0, 1, 2)))(x, w, b)
    want = jax.grad(loss(lax_transpose), argnums=(0, 1, 2))(x, w, b)
    for g, r in zip(got, want):
        assert_close(g, r, 1e-12, str(kw))
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    y = jt.conv_transpose3d(xt, wt, bt, **kw)
    dy = torch.randn_like(y)
    xr, wr, br = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ref = F.conv_transpose3d(xr, wr, br, kw["stride"], kw["padding"], kw["output_padding"], kw["groups"],
                             kw["dilation"])
    # (materialize: a call whose output no input reaches has zero gradients, which torch reports as unused)
    ours = torch.autograd.grad(y, (xt, wt, bt), dy, materialize_grads=True)
    for g, r in zip(ours, torch.autograd.grad(ref, (xr, wr, br), dy)):
        assert_close(g, r, 1e-12, str(kw))


def test_jax_check_grads_second_order(rng):
    x, w, b = rng.standard_normal(X_SHAPE), rng.standard_normal(W_SHAPE), rng.standard_normal(6)
    f = lambda x_, w_, b_: jaxconv3d.conv_transpose3d(x_, w_, b_, **KW)  # noqa: E731
    check_grads(f, (x, w, b), order=2, modes=("rev",), eps=1e-4, atol=1e-6, rtol=1e-6)


def test_jax_grad_of_grad_matches_lax(rng):
    x, w, b = rng.standard_normal(X_SHAPE), rng.standard_normal(W_SHAPE), rng.standard_normal(6)
    for argnum in (0, 1):
        def inner(fn):
            loss = lambda x_, w_: jnp.sum(jnp.sin(fn(x_, w_, b, **KW)))  # noqa: E731
            return lambda x_: jnp.sum(jax.grad(loss, argnums=(0, 1))(x_, w)[1 - argnum] ** 2)
        assert_close(jax.grad(inner(jaxconv3d.conv_transpose3d))(x), jax.grad(inner(lax_transpose))(x), 1e-10)


def test_jax_vmap_and_unbatched(rng):
    xs, w, b = rng.standard_normal((3, *X_SHAPE)), rng.standard_normal(W_SHAPE), rng.standard_normal(6)
    f = lambda x_, w_: jaxconv3d.conv_transpose3d(x_, w_, b, **KW)  # noqa: E731
    got = jax.jit(jax.vmap(f, in_axes=(0, None)))(xs, w)
    ws = rng.standard_normal((3, *W_SHAPE))
    per_filter = jax.vmap(f)(xs, ws)
    for i in range(3):
        assert_close(got[i], torch_ref(xs[i], w, b, **KW), 1e-12)
        assert_close(per_filter[i], torch_ref(xs[i], ws[i], b, **KW), 1e-12)
    hlo = jax.jit(jax.vmap(f, in_axes=(0, None))).lower(xs, w).as_text()
    assert hlo.count("jaxconv3d_dgrad") == 1  # folded into one launch, not a loop
    one = jaxconv3d.conv_transpose3d(xs[0, 0], w, b, **KW)
    assert_close(one, torch_ref(xs[0, :1], w, b, **KW)[0], 1e-12)


def test_torch_gradcheck_and_gradgradcheck():
    x = torch.randn(X_SHAPE, dtype=torch.float64, requires_grad=True)
    w = torch.randn(W_SHAPE, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    fn = lambda *a: jt.conv_transpose3d(*a, **KW)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    small = (x[:1, :, :2, :3, :3].detach().requires_grad_(True), w, b)
    assert torch.autograd.gradgradcheck(fn, small)


def test_deterministic(rng):
    x, w, b = rng.standard_normal(X_SHAPE), rng.standard_normal(W_SHAPE), rng.standard_normal(6)
    runs = [np.asarray(jax.grad(lambda w_: jnp.sum(jaxconv3d.conv_transpose3d(x, w_, b, **KW) ** 3))(w))
            for _ in range(2)]
    np.testing.assert_array_equal(*runs)
    xt, wt = torch.as_tensor(x), torch.as_tensor(w)
    assert torch.equal(jt.conv_transpose3d(xt, wt, None, **KW), jt.conv_transpose3d(xt, wt, None, **KW))


def test_float32_and_bfloat16(rng):
    x, w = rng.standard_normal(X_SHAPE), rng.standard_normal(W_SHAPE)
    want = torch_ref(x, w, None, **KW)
    assert_close(jaxconv3d.conv_transpose3d(x.astype(np.float32), w.astype(np.float32), **KW), want, 1e-5)
    got = jt.conv_transpose3d(torch.as_tensor(x, dtype=torch.bfloat16), torch.as_tensor(w, dtype=torch.bfloat16),
                              **KW)
    assert got.dtype == torch.bfloat16
    assert_close(got, want, 2e-2)


GOOD_X, GOOD_W = (1, 4, 3, 3, 3), (4, 3, 3, 3, 3)
BAD_CALLS = {
    "input rank": ((4, 3, 3), GOOD_W, None, {}, ValueError, "input must have shape (N, C_in, D, H, W)"),
    "weight rank": (GOOD_X, (4, 3, 3, 3), None, {}, ValueError, "weight must have shape (in_channels, out_channels"),
    "channels vs weight": (GOOD_X, (6, 3, 3, 3, 3), None, {}, ValueError,
                           "weight has 6 in_channels (its first dimension) but input has 4 channels"),
    "in_channels vs groups": (GOOD_X, GOOD_W, None, dict(groups=3), ValueError,
                              "in_channels (4) must be divisible by groups (3)"),
    "output_padding too large": (GOOD_X, GOOD_W, None, dict(stride=2, output_padding=(0, 2, 0)), ValueError,
                                 "output_padding along height (2) must be smaller than stride (2) or dilation (1)"),
    "output_padding without stride": (GOOD_X, GOOD_W, None, dict(output_padding=1), ValueError,
                                      "output_padding along depth (1) must be smaller"),
    "negative output_padding": (GOOD_X, GOOD_W, None, dict(output_padding=-1), ValueError,
                                "output_padding along depth must be >= 0"),
    "negative padding": (GOOD_X, GOOD_W, None, dict(padding=(0, -1, 0)), ValueError, "padding along height"),
    "string padding": (GOOD_X, GOOD_W, None, dict(padding="same"), TypeError, "padding must be an int or a tuple"),
    "zero stride": (GOOD_X, GOOD_W, None, dict(stride=(1, 1, 0)), ValueError, "stride along width must be >= 1"),
    "zero dilation": (GOOD_X, GOOD_W, None, dict(dilation=0), ValueError, "dilation along depth"),
    "output too small": (GOOD_X, GOOD_W, None, dict(padding=(3, 0, 0)), ValueError,
                         "output size along depth is -1"),
    "bias shape": (GOOD_X, GOOD_W, (4,), {}, ValueError, "bias must have shape (3,) (out_channels)"),
    "zero groups": (GOOD_X, GOOD_W, None, dict(groups=0), ValueError, "groups must be a positive int"),
    "bad precision": (GOOD_X, GOOD_W, None, dict(precision="fp8"), ValueError, "precision must be"),
}


@pytest.mark.parametrize("front", ["jax", "torch"])
@pytest.mark.parametrize("rule", list(BAD_CALLS))
def test_bad_arguments_raise(front, rule):
    xs, ws, bs, kw, exc, fragment = BAD_CALLS[rule]
    if front == "jax":
        ones = lambda s: jnp.ones(s, jnp.float32)  # noqa: E731
        fn = jaxconv3d.conv_transpose3d
    else:
        ones, fn = torch.ones, jt.conv_transpose3d
    with pytest.raises(exc, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        fn(ones(xs), ones(ws), None if bs is None else ones(bs), **kw)


def test_torch_agrees_with_torch_about_bad_output_padding():
    x, w = torch.ones(GOOD_X), torch.ones(GOOD_W)
    with pytest.raises(RuntimeError):
        F.conv_transpose3d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="output_padding"):
        jt.conv_transpose3d(x, w, stride=2, output_padding=2)
    # output_padding below dilation is allowed with stride 1 (both agree)
    assert_close(jt.conv_transpose3d(x.double(), w.double(), dilation=2, output_padding=1),
                 F.conv_transpose3d(x.double(), w.double(), dilation=2, output_padding=1), 1e-12)


@pytest.mark.parametrize("kwargs", [dict(stride=2, padding=1), dict(stride=(2, 1, 2), padding=(1, 0, 0), groups=2,
                                                                   dilation=(1, 2, 1), bias=False)])
def test_module_drop_in(kwargs):
    torch.manual_seed(0)
    ref = nn.ConvTranspose3d(4, 6, (3, 2, 3), **kwargs)
    torch.manual_seed(0)
    ours = jt.ConvTranspose3d(4, 6, (3, 2, 3), **kwargs)
    assert isinstance(ours, nn.ConvTranspose3d) and repr(ours) == repr(ref)
    for (k1, v1), (k2, v2) in zip(ref.state_dict().items(), ours.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.randn(2, 4, 3, 4, 5)
    assert_close(ours(x), ref(x).double(), 1e-5)
    assert_close(ours(x[0]), ref(x[0]).double(), 1e-5)  # unbatched
    size = [o + s - 1 for o, s in zip(ref(x).shape[2:], ours.stride)]  # output_size= picks the output_padding
    assert ours(x, output_size=size).shape[2:] == tuple(size)
    assert_close(ours(x, output_size=size), ref(x, output_size=size).double(), 1e-5)
    with pytest.raises(ValueError, match="requested an output size"):
        ours(x, output_size=[s + 5 for s in size])
    # state_dict both ways
    other = nn.ConvTranspose3d(4, 6, (3, 2, 3), **kwargs)
    ours.load_state_dict(other.state_dict())
    ref.load_state_dict(ours.state_dict())
    assert torch.equal(ours(x), jt.ConvTranspose3d.forward(ours, x))
    assert_close(ours(x), other(x).double(), 1e-5)


def test_module_rejects_padding_mode_and_keeps_precision():
    m = jt.ConvTranspose3d(2, 2, 3, precision="tf32")
    assert "precision='tf32'" in repr(m)
    m.padding_mode = "reflect"
    with pytest.raises(ValueError, match="Only `zeros` padding mode"):
        m(torch.randn(1, 2, 4, 4, 4))


class Decoder(nn.Module):
    """A small UNet-style decoder: transposed convolutions upsample, convolutions refine."""

    def __init__(self):
        super().__init__()
        self.up1 = nn.ConvTranspose3d(8, 4, 2, stride=2)
        self.conv1 = nn.Conv3d(4, 4, 3, padding=1)
        self.up2 = nn.ConvTranspose3d(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.head = nn.Conv3d(2, 1, 1)

    def forward(self, x):
        return self.head(self.up2(torch.relu(self.conv1(torch.relu(self.up1(x))))))


def test_convert_and_train_decoder():
    torch.manual_seed(0)
    ref = Decoder()
    model = copy.deepcopy(ref)
    params = [id(p) for p in model.parameters()]
    jt.convert_conv3d(model)
    assert isinstance(model.up1, jt.ConvTranspose3d) and isinstance(model.up2, jt.ConvTranspose3d)
    assert isinstance(model.conv1, jt.Conv3d)
    assert [id(p) for p in model.parameters()] == params  # same Parameter objects
    root = nn.ConvTranspose3d(2, 2, 3)
    assert jt.convert_conv3d(root).weight is root.weight
    x, target = torch.randn(2, 8, 2, 3, 2), torch.randn(2, 1, 8, 12, 8)
    train_side_by_side(ref, model, x, target, steps=3, lr=0.05)
    for a, r in zip(model.parameters(), ref.parameters()):
        assert_close(a, r.double(), 1e-5)


def test_torch_compile_full_graph():
    torch.manual_seed(0)
    model = nn.Sequential(jt.ConvTranspose3d(3, 4, 3, stride=2, padding=1, output_padding=1), nn.Tanh())
    x = torch.randn(1, 3, 3, 4, 3, requires_grad=True)
    eager = model(x)
    (gx_eager,) = torch.autograd.grad(eager.square().sum(), x)
    y = torch.compile(model, fullgraph=True, backend="aot_eager")(x)
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    assert torch.equal(y, eager) and torch.equal(gx, gx_eager)


def test_output_beyond_every_input_is_bias():
    """output_padding larger than padding can leave rows no input reaches (zeros plus bias), as in PyTorch."""
    x, w, b = torch.randn(1, 2, 1, 3, 3).double(), torch.randn(2, 3, 1, 2, 2).double(), torch.randn(3).double()
    kw = dict(stride=(3, 1, 1), padding=(1, 0, 0), output_padding=(2, 0, 0), groups=1, dilation=1)
    want = torch_ref(x, w, b, **kw)
    assert_close(jt.conv_transpose3d(x, w, b, **kw), want, 1e-12)
    assert_close(jaxconv3d.conv_transpose3d(x.numpy(), w.numpy(), b.numpy(), **kw), want, 1e-12)


def test_autocast_cpu_bfloat16():
    m = jt.ConvTranspose3d(3, 4, 2, stride=2)
    x = torch.randn(2, 3, 3, 3, 3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
        assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and m.weight.grad.dtype == torch.float32
    bf = lambda t: t.to(torch.bfloat16).double()  # noqa: E731
    assert_close(y, F.conv_transpose3d(bf(x), bf(m.weight), bf(m.bias), stride=2), 2e-2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("seed", range(3))
def test_devices_and_dtypes(seed, dtype, device):
    """Forward and gradients of both fronts on each device and dtype against the float64 reference, and the two
    fronts bitwise equal (same kernels)."""
    x, w, b, kw = random_config(200 + seed)
    x, w, b = (randn_like(a, dtype) for a in (x, w, b))
    xr, wr, br = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ref = F.conv_transpose3d(xr, wr, br, kw["stride"], kw["padding"], kw["output_padding"], kw["groups"],
                             kw["dilation"])
    dy = randn_like(np.random.default_rng(seed).standard_normal(ref.shape), dtype)
    want = (ref, *torch.autograd.grad(ref, (xr, wr, br), torch.as_tensor(dy)))
    tdt = TORCH_DTYPES[dtype]
    xt, wt, bt = (torch.as_tensor(a).to(device, tdt).requires_grad_(True) for a in (x, w, b))
    y = jt.conv_transpose3d(xt, wt, bt, **kw)
    from_torch = (y, *torch.autograd.grad(y, (xt, wt, bt), torch.as_tensor(dy).to(device, tdt),
                                          materialize_grads=True))
    put = lambda a: jax.device_put(jnp.asarray(a, jnp.dtype(dtype)), jax_device(device))  # noqa: E731
    y, vjp = jax.vjp(lambda *a: jaxconv3d.conv_transpose3d(*a, **kw), put(x), put(w), put(b))
    from_jax = (y, *vjp(put(dy)))
    for name, t, j, r in zip(("y", "dx", "dw", "db"), from_torch, from_jax, want):
        assert_close(t, r, BOUNDS[dtype], f"{name} {kw}")
        if name != "db":  # the bias gradient is a framework sum on each side
            np.testing.assert_array_equal(to_numpy(t), to_numpy(j), err_msg=name)


@pytest.mark.parametrize("kw", [dict(stride=2), dict(stride=2, padding=1, output_padding=1)])
def test_torch_channels_last_keeps_memory_format(kw):
    x = torch.randn(2, 4, 3, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last_3d)
    w, b = torch.randn(4, 3, 2, 3, 2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    y = jt.conv_transpose3d(x, w, b, **kw)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    assert_close(y, F.conv_transpose3d(x, w, b, **kw), 1e-12)


def test_transpose_times_script_checks_and_times_every_implementation(tmp_path):
    """scripts/transpose_times.py (docs/perf.md's ConvTranspose3d rows) on tiny shapes: every implementation and pass
    is timed, and only after its result matched float32 F.conv_transpose3d + autograd."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "transpose_times.py"
    out = tmp_path / "transpose.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, str(script), "--quick", "--precision", "fp32", "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.read_text())["results"]
    assert {r["case"] for r in results} == {"up_k2s2", "up_k3s2"}
    for r in results:
        for pass_name in ("fwd", "fwd_bwd"):
            entries = r["times"][pass_name]
            assert set(entries) == {"jaxconv3d_torch", "jaxconv3d_torch_ndhwc", "jaxconv3d_jax", "torch",
                                    "torch_ndhwc", "xla"}
            for entry in entries.values():
                assert entry["median_ms"] > 0 and entry["check"]["passed"], entry
                assert entry["calls_per_loop"] == next(iter(entries.values()))["calls_per_loop"]
