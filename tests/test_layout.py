"""Channels-last (NDHWC) through both fronts: `jaxconv3d.conv3d(..., layout="NDHWC")` (DHWIO weights) and torch
channels_last_3d tensors. On the CPU the host kernels take NDHWC through temporaries; results must equal the NCDHW
path bitwise and match lax.conv_general_dilated / F.conv3d in float64."""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxconv3d
import jaxconv3d.torch as jt
from cases import CASES
from helpers import assert_close, randn, run_on_four_cpu_devices

CL = torch.channels_last_3d


def ndhwc(a):
    return np.moveaxis(a, 1, -1)


def dhwio(w):
    return np.transpose(w, (2, 3, 4, 1, 0))


def data(rng, case, dtype="float64"):
    x = randn(rng, case.x_shape, dtype)
    w = randn(rng, case.w_shape, dtype)
    b = randn(rng, (case.w_shape[0],), dtype) if case.bias else None
    return x, w, b


def lax_ndhwc(x, w, b, case):
    cfg = jaxconv3d.conv_config(case.x_shape, case.w_shape, None, **case.kwargs())
    y = jax.lax.conv_general_dilated(
        jnp.asarray(ndhwc(x)), jnp.asarray(dhwio(w)), window_strides=cfg.stride,
        padding=list(zip(cfg.pad_lo, cfg.pad_hi)), rhs_dilation=cfg.dilation, feature_group_count=cfg.groups,
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"), precision=jax.lax.Precision.HIGHEST,
    )
    return y if b is None else y + b


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_jax_ndhwc_matches_ncdhw_and_lax(rng, case):
    x, w, b = data(rng, case)
    y = jaxconv3d.conv3d(ndhwc(x), dhwio(w), b, layout="NDHWC", **case.kwargs())
    y_ncdhw = jaxconv3d.conv3d(x, w, b, **case.kwargs())
    np.testing.assert_array_equal(np.asarray(y), ndhwc(np.asarray(y_ncdhw)))
    assert_close(y, lax_ndhwc(x, w, b, case), 1e-12, case.name)


@pytest.mark.parametrize("case", CASES[:5], ids=lambda c: c.name)
def test_jax_ndhwc_gradients_match_ncdhw(rng, case):
    x, w, b = data(rng, case)
    b = np.zeros(case.w_shape[0]) if b is None else b
    kw = case.kwargs()
    dy = randn(rng, jaxconv3d.conv_config(case.x_shape, case.w_shape, None, **kw).y_shape)

    def loss_cl(x_, w_, b_):
        return jnp.sum(jaxconv3d.conv3d(x_, w_, b_, layout="NDHWC", **kw) * ndhwc(dy))

    def loss(x_, w_, b_):
        return jnp.sum(jaxconv3d.conv3d(x_, w_, b_, **kw) * dy)

    g_cl = jax.grad(loss_cl, argnums=(0, 1, 2))(ndhwc(x), dhwio(w), b)
    g = jax.grad(loss, argnums=(0, 1, 2))(x, w, b)
    np.testing.assert_allclose(g_cl[0], ndhwc(np.asarray(g[0])), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g_cl[1], dhwio(np.asarray(g[1])), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g_cl[2], g[2], rtol=1e-12, atol=1e-12)
    # second order: the gradient of a gradient's norm
    gg_cl = jax.grad(lambda w_: jnp.sum(jax.grad(loss_cl)(ndhwc(x), w_, b) ** 2))(dhwio(w))
    gg = jax.grad(lambda w_: jnp.sum(jax.grad(loss)(x, w_, b) ** 2))(w)
    np.testing.assert_allclose(gg_cl, dhwio(np.asarray(gg)), rtol=1e-10, atol=1e-10)


def test_jax_ndhwc_jit_vmap_and_unbatched(rng):
    case = CASES[3]  # groups 2, mixed stride, dilation
    x, w, b = data(rng, case)
    kw = case.kwargs()
    f = lambda x_, w_: jaxconv3d.conv3d(x_, w_, b, layout="NDHWC", **kw)  # noqa: E731
    want = np.asarray(f(ndhwc(x), dhwio(w)))
    np.testing.assert_array_equal(np.asarray(jax.jit(f)(ndhwc(x), dhwio(w))), want)
    np.testing.assert_array_equal(np.asarray(f(ndhwc(x)[0], dhwio(w))), want[0])  # (D, H, W, C)
    xs = np.stack([ndhwc(x), 2 * ndhwc(x)])
    want2 = np.stack([want, np.asarray(f(xs[1], dhwio(w)))])
    np.testing.assert_allclose(np.asarray(jax.vmap(f, in_axes=(0, None))(xs, dhwio(w))), want2, rtol=1e-12, atol=1e-12)
    ws = np.stack([dhwio(w), -dhwio(w)])  # per-example filters fold into the groups
    got = jax.vmap(lambda w_: jaxconv3d.conv3d(ndhwc(x), w_, None, layout="NDHWC", **kw))(ws)
    nob = np.asarray(jaxconv3d.conv3d(ndhwc(x), dhwio(w), None, layout="NDHWC", **kw))
    np.testing.assert_allclose(np.asarray(got), np.stack([nob, -nob]), rtol=1e-12, atol=1e-12)


def test_jax_ndhwc_rejects_bad_arguments():
    x, w = jnp.ones((1, 4, 4, 4, 2)), jnp.ones((3, 3, 3, 2, 5))
    with pytest.raises(ValueError, match="layout must be"):
        jaxconv3d.conv3d(x, w, layout="NHWC")
    with pytest.raises(ValueError, match=r"input must have shape \(N, D, H, W, C\)"):
        jaxconv3d.conv3d(jnp.ones((4, 4, 2)), w, layout="NDHWC")
    with pytest.raises(ValueError, match=r"weight must have shape \(kD, kH, kW"):
        jaxconv3d.conv3d(x, jnp.ones((3, 3, 2, 5)), layout="NDHWC")
    with pytest.raises(ValueError, match="input channels"):
        jaxconv3d.conv3d(x, jnp.ones((3, 3, 3, 3, 5)), layout="NDHWC")


def test_jax_ndhwc_batch_sharded_jit():
    """Four CPU devices in a fresh process: a batch-sharded NDHWC input stays sharded and matches one device."""
    script = textwrap.dedent(
        """
        import numpy as np, jax, jax.numpy as jnp
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        import jaxconv3d
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((8, 6, 6, 6, 3)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((3, 3, 3, 3, 4)), jnp.float32)
        f = lambda x, w: jaxconv3d.conv3d(x, w, padding=1, layout="NDHWC")
        want = f(x, w)
        mesh = Mesh(np.array(jax.devices()), ("data",))
        xs = jax.device_put(x, NamedSharding(mesh, P("data")))
        got = jax.jit(f)(xs, w)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert got.sharding.spec[0] == "data"
        loss = lambda x, w: jnp.sum(f(x, w) ** 2)
        for g, r in zip(jax.jit(jax.grad(loss, argnums=(0, 1)))(xs, w), jax.grad(loss, argnums=(0, 1))(x, w)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-3)
        print("sharding ok")
        """
    )
    run_on_four_cpu_devices(script)


# ---- torch: channels_last_3d tensors


@pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_torch_channels_last_matches_contiguous(rng, case, dtype):
    tdt = getattr(torch, dtype)
    x, w, b = (None if a is None else torch.as_tensor(a).to(tdt) for a in data(rng, case))
    dy = torch.as_tensor(randn(rng, jaxconv3d.conv_config(case.x_shape, case.w_shape, None, **case.kwargs()).y_shape))
    dy = dy.to(tdt)

    def run(fmt):
        xt = x.contiguous(memory_format=fmt).requires_grad_(True)
        wt = w.contiguous(memory_format=fmt).requires_grad_(True)
        bt = None if b is None else b.clone().requires_grad_(True)
        y = jt.conv3d(xt, wt, bt, **case.kwargs())
        inputs = (xt, wt) if bt is None else (xt, wt, bt)
        return y, torch.autograd.grad(y, inputs, dy.contiguous(memory_format=fmt))

    y_cl, g_cl = run(CL)
    y, g = run(torch.contiguous_format)
    if case.x_shape[1] > 1:
        assert y_cl.is_contiguous(memory_format=CL) and not y_cl.is_contiguous()  # F.conv3d's rule
    assert y.is_contiguous()
    # grad-weight comes back in the weight's memory format (what AccumulateGrad would otherwise convert to)
    assert g_cl[1].is_contiguous(memory_format=CL) and g[1].is_contiguous()
    torch.testing.assert_close(y_cl, y, rtol=0, atol=0)
    for a, r in zip(g_cl, g):
        torch.testing.assert_close(a, r, rtol=0, atol=0)


def test_torch_and_jax_agree_bitwise_in_ndhwc(rng):
    case = CASES[0]
    x, w, b = data(rng, case, "float32")
    x32, w32, b32 = (a.astype(np.float32) for a in (x, w, b))
    y_torch = jt.conv3d(torch.as_tensor(x32).contiguous(memory_format=CL), torch.as_tensor(w32), torch.as_tensor(b32),
                        **case.kwargs())
    cpu = jax.devices("cpu")[0]  # the torch tensors above live on the CPU: both fronts on the same kernels
    y_jax = jaxconv3d.conv3d(*(jax.device_put(a, cpu) for a in (ndhwc(x32), dhwio(w32), b32)), layout="NDHWC",
                             **case.kwargs())
    np.testing.assert_array_equal(ndhwc(y_torch.numpy()), np.asarray(y_jax))


def test_torch_custom_ops_keep_channels_last():
    """The torch.library ops (what torch.compile runs) agree with their fake-tensor rules on channels_last_3d."""
    from jaxconv3d.torch import _library

    x = torch.randn(2, 3, 5, 6, 7).contiguous(memory_format=CL)
    w = torch.randn(4, 3, 3, 3, 3)
    attrs = ((1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), 1, 0)
    torch.library.opcheck(_library.conv3d, (x, w, None, *attrs))
    y = _library.conv3d(x, w, None, *attrs)
    assert y.is_contiguous(memory_format=CL)
    torch.library.opcheck(_library.input_grad, (y.detach(), w, tuple(x.shape), *attrs))
    torch.library.opcheck(_library.weight_grad, (x, y.detach(), tuple(w.shape), *attrs))
