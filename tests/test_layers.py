"""Layers for JAX frameworks: `jaxconv3d.equinox.Conv3d` against `equinox.nn.Conv3d`, `jaxconv3d.flax.Conv3d`
against `flax.nnx.Conv` and `jaxconv3d.flax.LinenConv3d` against `flax.linen.Conv`: same parameters (same key),
outputs and gradients in float64 (x64 is on for the suite), under jit; our kernels really run (no lax conv in the
jaxpr). Both frameworks are optional: `import jaxconv3d` imports neither, and a missing one is a clear ImportError."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_close, working_flax

TOL = 1e-12


def _runs_our_kernels(fn, *args):
    text = str(jax.make_jaxpr(fn)(*args))
    assert "jaxconv3d_fwd" in text and "conv_general_dilated" not in text


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_import_jaxconv3d_imports_no_framework():
    r = _python("""
        import sys, jaxconv3d
        print(sorted(m for m in ("flax", "equinox") if m in sys.modules))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("module,package", [("jaxconv3d.flax", "flax"), ("jaxconv3d.equinox", "equinox")])
def test_missing_framework_is_a_clear_import_error(module, package):
    r = _python(f"""
        import sys
        sys.modules[{package!r}] = None   # as if not installed
        try:
            import {module}
        except ImportError as e:
            print("ImportError:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert f"needs the '{package}' package: pip install {package}" in r.stdout


# (kernel_size, stride, padding, dilation, groups, use_bias), in equinox's spelling; flax takes the same values.
CONFIGS = [
    ((3, 3, 3), 1, 1, 1, 1, True),
    ((2, 3, 4), (1, 2, 1), "SAME", (1, 1, 2), 1, True),   # even kernel: lax's split of the SAME pads
    ((2, 2, 2), 1, "SAME", 1, 2, False),
    ((3, 1, 2), 2, "VALID", 1, 1, True),
    ((3, 3, 3), (2, 1, 1), ((1, 2), (0, 1), (2, 0)), (1, 2, 1), 2, True),
    ((1, 2, 3), 1, (0, 1, 2), 1, 4, False),
]
IDS = [f"k{c[0]}-s{c[1]}-p{c[2]}-d{c[3]}-g{c[4]}-b{int(c[5])}".replace(" ", "") for c in CONFIGS]
C_IN, C_OUT, SPATIAL = 4, 8, (7, 6, 9)


# ---------------------------------------------------------------- equinox

@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_equinox_matches_eqx_nn_conv3d(rng, cfg):
    eqx = pytest.importorskip("equinox")
    from jaxconv3d.equinox import Conv3d

    k, s, p, d, g, bias = cfg
    pad = p.upper() if isinstance(p, str) else p
    key = jax.random.key(int(rng.integers(1 << 30)))
    ours = Conv3d(C_IN, C_OUT, k, s, pad, d, g, use_bias=bias, key=key)
    ref = eqx.nn.Conv3d(C_IN, C_OUT, k, s, pad, d, g, use_bias=bias, key=key)
    assert ours.weight.dtype == jnp.float64
    np.testing.assert_array_equal(ours.weight, ref.weight)
    if bias:
        assert ours.bias.shape == (C_OUT, 1, 1, 1)
        np.testing.assert_array_equal(ours.bias, ref.bias)
    else:
        assert ours.bias is None and ref.bias is None
    # same leaves in the same order: serialised checkpoints interchange
    leaves = jax.tree_util.tree_leaves(eqx.filter(ours, eqx.is_array))
    assert [a.shape for a in leaves] == [a.shape for a in jax.tree_util.tree_leaves(eqx.filter(ref, eqx.is_array))]

    xb = jnp.asarray(rng.standard_normal((2, C_IN, *SPATIAL)))
    fwd = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))
    assert_close(fwd(ours, xb), fwd(ref, xb), TOL, "forward")
    assert_close(eqx.filter_jit(ours)(xb[0]), ref(xb[0]), TOL, "unbatched forward")
    _runs_our_kernels(lambda x: ours(x), xb[0])

    def loss(m, x):
        return jnp.sum(jnp.sin(jax.vmap(m)(x)))

    grad = eqx.filter_jit(eqx.filter_grad(loss))
    g_ours, g_ref = grad(ours, xb), grad(ref, xb)
    assert_close(g_ours.weight, g_ref.weight, TOL, "grad weight")
    if bias:
        assert_close(g_ours.bias, g_ref.bias, TOL, "grad bias")
    dx = eqx.filter_jit(jax.grad(loss, argnums=1))
    assert_close(dx(ours, xb), dx(ref, xb), TOL, "grad input")


def test_equinox_float32_and_padding_mode():
    eqx = pytest.importorskip("equinox")
    from jaxconv3d.equinox import Conv3d

    key = jax.random.key(3)
    ours = Conv3d(3, 5, 3, padding="SAME_LOWER", dtype=jnp.float32, key=key)
    ref = eqx.nn.Conv3d(3, 5, 3, padding="SAME_LOWER", dtype=jnp.float32, key=key)
    x = jax.random.normal(jax.random.key(4), (3, 6, 5, 4), jnp.float32)
    y = ours(x)
    assert y.dtype == jnp.float32 and y.shape == (5, 6, 5, 4)
    y_ref = jax.lax.conv_general_dilated(
        x[None], ref.weight, (1, 1, 1), "SAME_LOWER", precision=jax.lax.Precision.HIGHEST)[0] + ref.bias
    assert_close(y, y_ref, 1e-5, "float32")
    with pytest.raises(ValueError, match="padding_mode='ZEROS' only"):
        Conv3d(3, 5, 3, padding_mode="REFLECT", key=key)
    with pytest.raises(ValueError, match="rank 4"):
        ours(x[None])


# ---------------------------------------------------------------- flax.nnx

def _flax_kwargs(cfg):
    k, s, p, d, g, bias = cfg
    return dict(kernel_size=k, strides=s, padding=p, kernel_dilation=d, feature_group_count=g, use_bias=bias,
                param_dtype=jnp.float64)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_nnx_matches_nnx_conv(rng, cfg):
    working_flax()
    from flax import nnx
    from jaxconv3d.flax import Conv3d

    seed = int(rng.integers(1 << 30))
    kw = _flax_kwargs(cfg)
    ours = Conv3d(C_IN, C_OUT, rngs=nnx.Rngs(seed), **kw)
    ref = nnx.Conv(C_IN, C_OUT, rngs=nnx.Rngs(seed), **kw)
    s_ours, s_ref = nnx.state(ours, nnx.Param), nnx.state(ref, nnx.Param)
    assert jax.tree_util.tree_structure(s_ours) == jax.tree_util.tree_structure(s_ref)
    jax.tree.map(np.testing.assert_array_equal, s_ours, s_ref)
    assert ours.kernel.shape == (*cfg[0], C_IN // cfg[4], C_OUT)
    assert (ours.bias.shape == (C_OUT,)) if cfg[5] else ours.bias is None

    # checkpoints interchange: load the reference's (perturbed) state into ours
    s_ref = jax.tree.map(lambda a: a + 0.25, s_ref)
    nnx.update(ref, s_ref)
    nnx.update(ours, s_ref)

    x = jnp.asarray(rng.standard_normal((2, *SPATIAL, C_IN)))
    fwd = nnx.jit(lambda m, x: m(x))
    assert_close(fwd(ours, x), fwd(ref, x), TOL, "forward")
    assert_close(ours(x[0]), ref(x[0]), TOL, "unbatched forward")
    _runs_our_kernels(lambda x: ours(x), x)

    def loss(m, x):
        return jnp.sum(jnp.sin(m(x)))

    grad = nnx.jit(nnx.grad(loss, argnums=(0, 1)))
    (gm_ours, gx_ours), (gm_ref, gx_ref) = grad(ours, x), grad(ref, x)
    jax.tree.map(lambda a, b: assert_close(a, b, TOL, "grad params"), nnx.state(gm_ours), nnx.state(gm_ref))
    assert_close(gx_ours, gx_ref, TOL, "grad input")


def test_nnx_float32_masks_and_errors():
    working_flax()
    from flax import nnx
    from jaxconv3d.flax import Conv3d

    kw = dict(kernel_size=(2, 3, 3), padding="CIRCULAR")
    mask = jnp.asarray(np.random.default_rng(0).integers(0, 2, (2, 3, 3, 3, 6)), jnp.float32)
    ours = Conv3d(3, 6, mask=mask, rngs=nnx.Rngs(1), **kw)
    ref = nnx.Conv(3, 6, mask=mask, precision=jax.lax.Precision.HIGHEST, rngs=nnx.Rngs(1), **kw)
    x = jax.random.normal(jax.random.key(2), (2, 3, 5, 4, 6, 3), jnp.float32)   # two batch dimensions
    y = ours(x)
    assert y.dtype == jnp.float32 and y.shape == (2, 3, 5, 4, 6, 6)
    assert_close(y, ref(x), 1e-5, "float32")
    with pytest.raises(ValueError, match="3 ints"):
        Conv3d(3, 6, kernel_size=(3, 3), rngs=nnx.Rngs(0))
    with pytest.raises(NotImplementedError, match="input_dilation"):
        Conv3d(3, 6, kernel_size=(3, 3, 3), input_dilation=2, rngs=nnx.Rngs(0))


# ---------------------------------------------------------------- flax.linen

@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_linen_matches_linen_conv(rng, cfg):
    working_flax()
    from flax import linen
    from jaxconv3d.flax import LinenConv3d

    kw = _flax_kwargs(cfg)
    ours, ref = LinenConv3d(C_OUT, **kw), linen.Conv(C_OUT, **kw)
    x = jnp.asarray(rng.standard_normal((2, *SPATIAL, C_IN)))
    key = jax.random.key(int(rng.integers(1 << 30)))
    p_ours, p_ref = ours.init(key, x), ref.init(key, x)
    assert jax.tree_util.tree_structure(p_ours) == jax.tree_util.tree_structure(p_ref)
    jax.tree.map(np.testing.assert_array_equal, p_ours, p_ref)
    assert p_ours["params"]["kernel"].shape == (*cfg[0], C_IN // cfg[4], C_OUT)

    params = jax.tree.map(lambda a: a + 0.25, p_ref)   # the reference's params drive ours unchanged
    fwd = jax.jit(lambda p, x, m: m.apply(p, x), static_argnums=2)
    assert_close(fwd(params, x, ours), fwd(params, x, ref), TOL, "forward")
    _runs_our_kernels(lambda x: ours.apply(params, x), x)

    grad = jax.jit(jax.grad(lambda p, x, m: jnp.sum(jnp.sin(m.apply(p, x))), argnums=(0, 1)), static_argnums=2)
    (gp_ours, gx_ours), (gp_ref, gx_ref) = grad(params, x, ours), grad(params, x, ref)
    jax.tree.map(lambda a, b: assert_close(a, b, TOL, "grad params"), gp_ours, gp_ref)
    assert_close(gx_ours, gx_ref, TOL, "grad input")


def test_linen_float32():
    working_flax()
    from flax import linen
    from jaxconv3d.flax import LinenConv3d

    kw = dict(kernel_size=(4, 2, 3), strides=(2, 1, 1), padding="SAME", feature_group_count=2)
    x = jax.random.normal(jax.random.key(5), (2, 9, 6, 5, 4), jnp.float32)
    ours, ref = LinenConv3d(6, **kw), linen.Conv(6, precision=jax.lax.Precision.HIGHEST, **kw)
    params = ref.init(jax.random.key(6), x)
    y = ours.apply(params, x)
    assert y.dtype == jnp.float32 and y.shape == (2, 5, 6, 5, 6)
    assert_close(y, ref.apply(params, x), 1e-5, "float32")
