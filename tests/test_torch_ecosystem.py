"""The torch front with the rest of PyTorch: fake and meta tensors, FlopCounterMode, torch.func (grad, vmap, jvp,
per-sample gradients), dynamic shapes (torch.export, torch.compile(dynamic=True)), autocast's casting rule,
negative-bit views, convert_conv3d with parametrizations and lazy modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, jvp, vmap

import jaxconv3d.torch as jt
from jaxconv3d.torch import _ops
from helpers import DEVICES, assert_close

KW = dict(stride=(2, 1, 1), padding=(1, 0, 1), dilation=(1, 2, 1), groups=2)


def _data(n=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, 5, 6, 5, dtype=dtype, generator=g)
    w = torch.randn(6, 2, 2, 2, 3, dtype=dtype, generator=g)
    b = torch.randn(6, dtype=dtype, generator=g)
    return x, w, b


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the DLPack door's launches per operation (the four module-level functions the Functions call)."""
    calls = {"fwd": 0, "dgrad": 0, "wgrad": 0, "bgrad": 0}
    for name in calls:
        real = getattr(_ops, name)

        def counted(*args, _real=real, _name=name):
            calls[_name] += 1
            return _real(*args)

        monkeypatch.setattr(_ops, name, counted)
    return calls


# ---- fake and meta tensors, FlopCounterMode


def test_fake_tensor_mode_gives_shape_without_data(kernel_calls):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.randn(2, 4, 7, 6, 5)
        w = torch.randn(6, 2, 2, 2, 3, requires_grad=True)
        y = jt.conv3d(x, w, None, **KW)
        want = F.conv3d(x, w, None, **KW)
        assert y.shape == want.shape and y.dtype == want.dtype
        y.sum().backward()
        assert w.grad.shape == w.shape
        t = jt.conv_transpose3d(x, torch.randn(4, 3, 3, 3, 3), stride=2)
        assert t.shape == F.conv_transpose3d(x, torch.randn(4, 3, 3, 3, 3), stride=2).shape
    assert sum(kernel_calls.values()) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_meta_tensors(dtype):
    x = torch.empty(2, 4, 7, 6, 5, device="meta", dtype=dtype)
    w = torch.empty(6, 2, 2, 2, 3, device="meta", dtype=dtype)
    y = jt.conv3d(x, w, None, **KW)
    want = F.conv3d(x, w, None, **KW)
    assert y.device.type == "meta" and y.shape == want.shape and y.dtype == dtype
    m = jt.Conv3d(4, 6, 3, padding=1, device="meta")
    assert m(torch.empty(1, 4, 5, 5, 5, device="meta")).shape == (1, 6, 5, 5, 5)


def test_flop_counter_counts_like_nn_conv3d():
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    ref = nn.Conv3d(4, 6, 3, stride=(1, 2, 1), padding=1, groups=2)
    ours = jt.convert_conv3d(nn.Sequential(nn.Conv3d(4, 6, 3, stride=(1, 2, 1), padding=1, groups=2)))
    x = torch.randn(2, 4, 6, 7, 5, requires_grad=True)
    counts = []
    for model in (ref, ours):
        with FlopCounterMode(display=False) as counter:
            model(x).sum().backward()
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0
    with FlopCounterMode(display=False):  # and the result is still computed
        y = ours(x)
    conv = ours[0]
    want = F.conv3d(x.double(), conv.weight.double(), conv.bias.double(), stride=(1, 2, 1), padding=1, groups=2)
    assert_close(y, want, 1e-5)


# ---- torch.func


@pytest.mark.parametrize("argnums", [0, 1, 2, (0, 1, 2)])
def test_func_grad_matches_autograd(argnums):
    x, w, b = _data()
    loss = lambda x, w, b: (jt.conv3d(x, w, b, **KW) ** 2).sum()  # noqa: E731
    got = grad(loss, argnums=argnums)(x, w, b)
    ref = grad(lambda x, w, b: (F.conv3d(x, w, b, **KW) ** 2).sum(), argnums=argnums)(x, w, b)
    for g, r in zip(*(t if isinstance(t, tuple) else (t,) for t in (got, ref))):
        assert_close(g, r, 1e-12)


@pytest.mark.parametrize("which", ["input", "weight", "both", "bias"])
def test_func_vmap_is_one_launch(which, kernel_calls):
    x, w, b = _data()
    xs, ws, bs = torch.stack([x, 2 * x]), torch.stack([w, -w]), torch.stack([b, b + 1])
    in_dims = {"input": (0, None, None), "weight": (None, 0, None), "both": (0, 0, None), "bias": (None, None, 0)}
    args = {"input": (xs, w, b), "weight": (x, ws, b), "both": (xs, ws, b), "bias": (x, w, bs)}[which]
    got = vmap(lambda x, w, b: jt.conv3d(x, w, b, **KW), in_dims=in_dims[which])(*args)
    assert kernel_calls["fwd"] == 1
    want = torch.stack([
        F.conv3d(*(a[i] if d is not None else a for a, d in zip(args, in_dims[which])), **KW) for i in range(2)])
    assert_close(got, want, 1e-12)


def test_func_jvp_is_bilinear():
    x, w, b = _data()
    tangents = tuple(torch.randn_like(t) for t in (x, w, b))
    _, got = jvp(lambda x, w, b: jt.conv3d(x, w, b, **KW), (x, w, b), tangents)
    _, want = jvp(lambda x, w, b: F.conv3d(x, w, b, **KW), (x, w, b), tangents)
    assert_close(got, want, 1e-12)
    # forward-over-reverse: a Hessian-vector product through grad-input and grad-weight's jvp rules
    loss = lambda w, f: (f(x, w, b, **KW) ** 3).sum()  # noqa: E731
    _, hvp = jvp(lambda w: grad(loss)(w, jt.conv3d), (w,), (tangents[1],))
    _, hvp_ref = jvp(lambda w: grad(loss)(w, F.conv3d), (w,), (tangents[1],))
    assert_close(hvp, hvp_ref, 1e-10)


def test_per_sample_grads_equal_a_loop(kernel_calls):
    x, w, b = _data(n=4)

    def loss(w, b, xi):
        return (jt.conv3d(xi[None], w, b, **KW) ** 2).sum()

    gw, gb = vmap(grad(loss, argnums=(0, 1)), in_dims=(None, None, 0))(w, b, x)
    assert kernel_calls == {"fwd": 1, "dgrad": 0, "wgrad": 1, "bgrad": 1}  # one batched launch per operation
    for i in range(x.shape[0]):
        lw, lb = torch.autograd.grad(loss(w.requires_grad_(), b.requires_grad_(), x[i]), (w, b))
        assert_close(gw[i], lw, 1e-12)
        assert_close(gb[i], lb, 1e-12)


@pytest.mark.parametrize("in_dims", [(0, 0, 0), (0, None, None), (None, 0, 0)], ids=["all", "input", "weight"])
def test_vmap_of_grad_of_every_operand_equals_a_loop(in_dims, kernel_calls):
    """Grad-input, grad-weight and grad-bias under vmap (folded into the batch or the groups), against a loop."""
    x, w, b = _data(n=2)
    args = [torch.stack([t, 0.5 * t, -t]) if d == 0 else t for t, d in zip((x, w, b), in_dims)]
    loss = lambda x, w, b: (jt.conv3d(x, w, b, **KW) ** 2).sum()  # noqa: E731
    got = vmap(grad(loss, argnums=(0, 1, 2)), in_dims=in_dims)(*args)
    assert kernel_calls == {"fwd": 1, "dgrad": 1, "wgrad": 1, "bgrad": 1}
    for i in range(3):
        one = [a[i] if d == 0 else a for a, d in zip(args, in_dims)]
        want = grad(lambda x, w, b: (F.conv3d(x, w, b, **KW) ** 2).sum(), argnums=(0, 1, 2))(*one)
        for g, r in zip(got, want):
            assert_close(g[i], r, 1e-12)


def test_vmap_over_a_zero_length_axis():
    x, w, b = _data()
    y = vmap(lambda xi: jt.conv3d(xi, w, b, **KW))(x[:0])
    assert y.shape == (0, *F.conv3d(x[0], w, b, **KW).shape)
    gw = vmap(grad(lambda w, xi: jt.conv3d(xi[None], w, b, **KW).sum()), in_dims=(None, 0))(w, x[:0])
    assert gw.shape == (0, *w.shape)


def test_double_backward_still_works():
    x, w, b = (t.requires_grad_() for t in _data(n=1))
    assert torch.autograd.gradgradcheck(lambda x, w, b: jt.conv3d(x, w, b, **KW), (x, w, b))


# ---- dynamic shapes


def test_torch_export_with_a_dynamic_batch():
    from torch.export import Dim, export

    torch.manual_seed(0)
    for model in (jt.Conv3d(2, 4, 3, padding=1, stride=(1, 2, 1)),
                  jt.ConvTranspose3d(2, 4, 3, stride=2, padding=1, output_padding=1)):
        ep = export(model, (torch.randn(3, 2, 5, 6, 5),), dynamic_shapes=({0: Dim("batch")},))
        for n in (1, 2, 7):
            x = torch.randn(n, 2, 5, 6, 5)
            assert torch.equal(ep.module()(x), model(x))


def test_compile_dynamic_does_not_recompile_per_batch():
    import torch._dynamo

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = jt.Conv3d(2, 4, 3, padding=1)
    compiled = torch.compile(model, dynamic=True, fullgraph=True, backend="aot_eager")
    torch._dynamo.utils.counters.clear()
    for n in (3, 4, 6, 9):
        x = torch.randn(n, 2, 5, 6, 7)
        assert torch.equal(compiled(x), model(x))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


# ---- autocast, negative-bit views


@pytest.mark.parametrize("device", DEVICES)
def test_autocast_keeps_float64_like_f_conv3d(device):
    x, w, b = (t.to(device) for t in _data())
    with torch.autocast(device, dtype=torch.bfloat16):
        y, ref = jt.conv3d(x, w, b, **KW), F.conv3d(x, w, b, **KW)
        y32, ref32 = jt.conv3d(x.float(), w.float(), b.float(), **KW), F.conv3d(x.float(), w.float(), b.float(), **KW)
    assert y.dtype == ref.dtype == torch.float64
    assert y32.dtype == ref32.dtype == torch.bfloat16
    assert_close(y, ref, 1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_negative_bit_views_keep_their_sign(device):
    x, w, b = (t.to(device) for t in _data())
    nx, nw = torch._neg_view(x), torch._neg_view(w)
    assert nx.is_neg()
    assert_close(jt.conv3d(nx, nw, b, **KW), F.conv3d(-x, -w, b, **KW), 1e-12)
    imag = torch.complex(torch.zeros_like(x), x).conj().imag  # the imaginary part of a conjugate: -x, lazily
    assert imag.is_neg()
    assert_close(jt.conv3d(imag, w, b, **KW), F.conv3d(-x, w, b, **KW), 1e-12)
    xg = x.clone().requires_grad_()  # a negative-bit output gradient reaches grad-input and grad-weight
    dy = torch.randn_like(F.conv3d(x, w, None, **KW))
    (gx,) = torch.autograd.grad(jt.conv3d(xg, w, None, **KW), xg, torch._neg_view(dy))
    (gx_ref,) = torch.autograd.grad(F.conv3d(xg, w, None, **KW), xg, -dy)
    assert_close(gx, gx_ref, 1e-12)


# ---- convert_conv3d with parametrizations and lazy modules


def test_convert_keeps_parametrizations(kernel_calls):
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    ref = nn.Sequential(weight_norm(nn.Conv3d(2, 4, 3, padding=1)))
    model = jt.convert_conv3d(nn.Sequential(weight_norm(nn.Conv3d(2, 4, 3, padding=1))))
    model.load_state_dict(ref.state_dict())
    assert isinstance(model[0], jt.Conv3d)
    assert torch.nn.utils.parametrize.is_parametrized(model[0], "weight")
    x = torch.randn(2, 2, 5, 5, 5)
    y = model(x)
    assert kernel_calls["fwd"] == 1
    assert_close(y, ref(x).double(), 1e-5)
    y.sum().backward()
    ref(x).sum().backward()
    for name in ("original0", "original1"):
        got = getattr(model[0].parametrizations.weight, name).grad
        assert_close(got, getattr(ref[0].parametrizations.weight, name).grad.double(), 1e-4)


@pytest.mark.parametrize("lazy,ours,ref", [(nn.LazyConv3d, jt.Conv3d, F.conv3d),
                                            (nn.LazyConvTranspose3d, jt.ConvTranspose3d, F.conv_transpose3d)])
def test_convert_lazy_module_becomes_ours_when_materialised(kernel_calls, lazy, ours, ref):
    model = jt.convert_conv3d(nn.Sequential(lazy(4, 3, padding=1)))
    x = torch.randn(2, 3, 5, 5, 5)
    y = model(x)
    assert sum(kernel_calls.values()) == 1  # the first call already runs our kernel
    assert type(model[0]) is ours
    assert model[0].weight.shape[2:] == (3, 3, 3)
    assert_close(y, ref(x.double(), model[0].weight.double(), model[0].bias.double(), padding=1), 1e-5)
