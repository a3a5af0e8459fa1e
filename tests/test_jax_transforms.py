"""The JAX front under jit, grad, value_and_grad, vmap (folded, not looped), grad-of-grad and several devices."""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import pytest

import jaxconv3d
from helpers import assert_close, jax_reference, randn, run_on_four_cpu_devices
from jaxconv3d import conv_config

KW = dict(stride=(1, 2, 1), padding=((1, 0), (2, 1), (0, 2)), dilation=(1, 1, 2), groups=2)
X_SHAPE, W_SHAPE = (2, 4, 5, 6, 7), (6, 2, 3, 2, 3)


def reference(x, w, b):
    cfg = conv_config(x.shape, w.shape, b.shape, **KW)
    return jax_reference(x, w, b, cfg)


def ours(x, w, b):
    return jaxconv3d.conv3d(x, w, b, **KW, precision="highest")


def ref_fn(x, w, b):
    """The same function written with lax, differentiable by JAX itself."""
    y = jax.lax.conv_general_dilated(
        x, w, KW["stride"], KW["padding"], rhs_dilation=(1, 1, 2), feature_group_count=2,
        dimension_numbers=("NCDHW", "OIDHW", "NCDHW"), precision="highest",
    )
    return y + b[None, :, None, None, None]


@pytest.fixture
def data(rng):
    return randn(rng, X_SHAPE, "float64"), randn(rng, W_SHAPE, "float64"), randn(rng, (6,), "float64")


def loss(fn):
    return lambda x, w, b: jnp.sum(jnp.sin(fn(x, w, b)))


def test_jit_matches_eager(data):
    x, w, b = data
    assert_close(jax.jit(ours)(x, w, b), reference(x, w, b), 1e-12)
    assert_close(ours(x, w, b), reference(x, w, b), 1e-12)


def test_grad_and_value_and_grad(data):
    x, w, b = data
    got = jax.jit(jax.grad(loss(ours), argnums=(0, 1, 2)))(x, w, b)
    want = jax.grad(loss(ref_fn), argnums=(0, 1, 2))(x, w, b)
    for g, r in zip(got, want):
        assert_close(g, r, 1e-12)
    value, grads = jax.value_and_grad(loss(ours), argnums=1)(x, w, b)
    # The loss is a sum of terms of both signs that can cancel: bound its error by the size of the terms, not of
    # the (possibly near-zero) sum.
    terms = jnp.sin(ref_fn(x, w, b))
    assert abs(float(value) - float(jnp.sum(terms))) <= 1e-12 * float(jnp.sum(jnp.abs(terms)))
    assert_close(grads, want[1], 1e-12)


def test_grad_of_grad(data):
    x, w, b = data
    for argnum in (0, 1):
        inner = lambda fn: lambda x_: jnp.sum(jax.grad(loss(fn), argnums=(0, 1))(x_, w, b)[1 - argnum] ** 2)  # noqa
        assert_close(jax.grad(inner(ours))(x), jax.grad(inner(ref_fn))(x), 1e-10)


def test_vmap_over_input_folds_into_batch(data, rng):
    x, w, b = data
    xs = randn(rng, (3, *X_SHAPE), "float64")
    got = jax.jit(jax.vmap(ours, in_axes=(0, None, None)))(xs, w, b)
    for i in range(3):
        assert_close(got[i], reference(xs[i], w, b), 1e-12)
    # The batched program holds one custom call, not one per example.
    hlo = jax.jit(jax.vmap(ours, in_axes=(0, None, None))).lower(xs, w, b).as_text()
    assert hlo.count("jaxconv3d_fwd") == 1


def test_vmap_over_weights_and_per_example_grads(data, rng):
    x, w, b = data
    xs = randn(rng, (3, *X_SHAPE), "float64")
    ws = randn(rng, (3, *W_SHAPE), "float64")
    bs = randn(rng, (3, 6), "float64")
    got = jax.vmap(ours)(xs, ws, bs)
    for i in range(3):
        assert_close(got[i], reference(xs[i], ws[i], bs[i]), 1e-12)
    per_example = jax.jit(jax.vmap(jax.grad(loss(ours), argnums=(1, 2)), in_axes=(0, None, None)))(xs, w, b)
    want = jax.vmap(jax.grad(loss(ref_fn), argnums=(1, 2)), in_axes=(0, None, None))(xs, w, b)
    for g, r in zip(per_example, want):
        assert_close(g, r, 1e-12)


@pytest.mark.parametrize("in_axes", [(0, None, None), (None, 0, None), (0, 0, 0)], ids=["input", "weight", "all"])
def test_vmap_over_a_zero_length_axis(data, in_axes):
    """As lax: an empty vmapped axis gives the empty result (and empty per-example gradients), no error."""
    args = [jnp.zeros((0, *a.shape), a.dtype) if ax == 0 else a for a, ax in zip(data, in_axes)]
    got = jax.vmap(ours, in_axes=in_axes)(*args)
    want = jax.vmap(ref_fn, in_axes=in_axes)(*args)
    assert got.shape == want.shape and got.dtype == want.dtype
    grads = jax.vmap(jax.grad(loss(ours), argnums=(0, 1, 2)), in_axes=in_axes)(*args)
    grads_ref = jax.vmap(jax.grad(loss(ref_fn), argnums=(0, 1, 2)), in_axes=in_axes)(*args)
    assert [g.shape for g in grads] == [g.shape for g in grads_ref]


def test_nested_vmap(data, rng):
    _, w, b = data
    xs = randn(rng, (2, 3, *X_SHAPE), "float64")
    got = jax.vmap(jax.vmap(ours, in_axes=(0, None, None)), in_axes=(0, None, None))(xs, w, b)
    assert_close(got[1, 2], reference(xs[1, 2], w, b), 1e-12)


def test_bfloat16_under_jit_and_grad(data):
    x, w, b = (a.astype(jnp.bfloat16) for a in data)
    y = jax.jit(ours)(x, w, b)
    assert y.dtype == jnp.bfloat16
    g = jax.grad(lambda w_: jnp.sum(ours(x, w_, b).astype(jnp.float32)))(w)
    assert g.dtype == jnp.bfloat16 and g.shape == w.shape


def test_shard_map_and_sharded_jit():
    """Four CPU devices (a fresh process, since the device count is fixed at JAX start-up): the batch sharded across
    them through shard_map and through plain jit gives the single-device result, and plain jit partitions the
    custom calls along the batch instead of gathering their operands."""
    script = textwrap.dedent(
        """
        import numpy as np, jax, jax.numpy as jnp
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        import jaxconv3d
        assert len(jax.devices()) == 4
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((8, 3, 6, 6, 6)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((4, 3, 3, 3, 3)), jnp.float32)
        b = jnp.asarray(rng.standard_normal((4,)), jnp.float32)
        f = lambda x, w, b: jaxconv3d.conv3d(x, w, b, padding=1)
        want = f(x, w, b)
        gw_want = jax.grad(lambda w: jnp.sum(f(x, w, b) ** 2))(w)
        mesh = Mesh(np.array(jax.devices()), ("data",))
        shard_map = getattr(jax, "shard_map", None)
        if shard_map is None:
            from jax.experimental.shard_map import shard_map
        sm = shard_map(f, mesh=mesh, in_specs=(P("data"), P(), P()), out_specs=P("data"))
        np.testing.assert_array_equal(np.asarray(jax.jit(sm)(x, w, b)), np.asarray(want))
        def sharded_loss(w):
            y = shard_map(f, mesh=mesh, in_specs=(P("data"), P(), P()), out_specs=P("data"))(x, w, b)
            return jnp.sum(y ** 2)
        gw = jax.jit(jax.grad(sharded_loss))(w)
        np.testing.assert_allclose(np.asarray(gw), np.asarray(gw_want), rtol=1e-5, atol=1e-4)
        xs = jax.device_put(x, NamedSharding(mesh, P("data")))
        got = jax.jit(f)(xs, w, b)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert got.sharding.spec[0] == "data"
        # Partitioned, not gathered: each device convolves its 2 of the 8 examples.
        hlo = jax.jit(f).lower(xs, w, b).compile().as_text()
        assert "all-gather" not in hlo
        assert any("f32[2,4,6,6,6]" in l and "jaxconv3d_fwd" in l for l in hlo.splitlines())
        loss = lambda x, w, b: jnp.sum(f(x, w, b) ** 2)
        grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(xs, w, b)
        for g, r in zip(grads, jax.grad(loss, argnums=(0, 1, 2))(x, w, b)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-5, atol=1e-3)
        print("sharding ok")
        """
    )
    run_on_four_cpu_devices(script)
