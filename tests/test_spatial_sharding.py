"""Spatial sharding on four CPU devices (a fresh process: the device count is fixed when JAX starts).

Under plain jit, an activation sharded along D, H or W (with or without the batch) stays sharded: each device
exchanges only its halo with its neighbours (collective-permute), convolves its slab with our kernel, and the
result, forward and gradients (first and second order), equals the single-device one; the compiled program holds
no all-gather. Where no slab decomposition exists, the axis is gathered and the result is still right. Under
shard_map, `halo_exchange` and `sharded_conv3d` do the same by hand.
"""

from __future__ import annotations

import textwrap

from helpers import run_on_four_cpu_devices

PRELUDE = """
import numpy as np, jax, jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jaxconv3d
assert len(jax.devices()) == 4
rng = np.random.default_rng(0)
mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("a", "b"))
line = Mesh(np.array(jax.devices()), ("z",))

def close(got, want, tol=1e-12, what=""):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-300)
    assert err <= tol, (what, err)

def data(x_shape, w_shape):
    return (jnp.asarray(rng.standard_normal(x_shape)), jnp.asarray(rng.standard_normal(w_shape)),
            jnp.asarray(rng.standard_normal(w_shape[0] if len(w_shape) else 1)))

def check_jit(f, x, w, b, mesh, spec, halo=True, out_spec=None, order2=True, permute=True):
    what = f"{spec}"
    xs = jax.device_put(x, NamedSharding(mesh, spec))
    got = jax.jit(f)(xs, w, b)
    close(got, f(x, w, b), 1e-12, what)
    if halo:
        assert got.sharding.spec == (out_spec or spec), (what, got.sharding.spec)
    loss = lambda x, w, b: jnp.sum(jnp.sin(f(x, w, b)))
    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    for g, r in zip(grad(xs, w, b), jax.grad(loss, argnums=(0, 1, 2))(x, w, b)):
        close(g, r, 1e-12, what)
    hlos = [jax.jit(f).lower(xs, w, b).compile().as_text(), grad.lower(xs, w, b).compile().as_text()]
    if order2:
        gg = lambda x, w, b: jnp.sum(jax.grad(loss, argnums=1)(x, w, b) ** 2)
        close(jax.jit(jax.grad(gg))(xs, w, b), jax.grad(gg)(x, w, b), 1e-10, what + " 2nd order")
        hlos.append(jax.jit(jax.grad(gg)).lower(xs, w, b).compile().as_text())
    for hlo in hlos:
        assert ("all-gather" in hlo) != halo, (what, "all-gather" in hlo)
        if halo:
            assert ("collective-permute" in hlo) == permute, what
"""


def run(body: str) -> None:
    run_on_four_cpu_devices(PRELUDE + textwrap.dedent(body) + "\nprint('sharding ok')\n", x64=True, timeout=600)


def test_jit_halo_exchange_along_each_axis_and_with_batch():
    run("""
    x, w, b = data((2, 3, 8, 8, 8), (4, 3, 3, 3, 3))
    f = lambda x, w, b: jaxconv3d.conv3d(x, w, b, padding=1)
    check_jit(f, x, w, b, mesh, P(None, None, "a"))              # D over 2
    # each device convolves its own slab (4 of 8 rows, the halos as zero padding) into its 4 output rows, and each
    # halo row (received from a neighbour, followed by two rows of zeros) into the one output row it reaches: the
    # slab extended by its halo is never built (_sharding.split_call)
    hlo = jax.jit(f).lower(jax.device_put(x, NamedSharding(mesh, P(None, None, "a"))), w, b).compile().as_text()
    calls = [l for l in hlo.splitlines() if "jaxconv3d_fwd" in l and "custom-call(" in l]
    own = [l for l in calls if "f64[2,4,4,8,8]" in l and "f64[2,3,4,8,8]" in l]
    thin = [l for l in calls if "f64[2,4,1,8,8]" in l and "f64[2,3,3,8,8]" in l]
    assert len(calls) == 3 and len(own) == 1 and len(thin) == 2, calls
    check_jit(f, x, w, b, line, P(None, None, None, "z"))        # H over 4
    check_jit(f, x, w, b, line, P(None, None, None, None, "z"))  # W over 4
    check_jit(f, x, w, b, mesh, P("b", None, "a"))               # batch and D
    check_jit(f, x, w, b, mesh, P(None, None, "a", None, "b"))   # D and W (corners through two exchanges)
    check_jit(f, x, w, b, mesh, P(None, None, ("a", "b")))       # D over both mesh axes
    channels_last = lambda x, w, b: jaxconv3d.conv3d(x, w, b, padding=1, layout="NDHWC")
    check_jit(channels_last, jnp.moveaxis(x, 1, -1), jnp.transpose(w, (2, 3, 4, 1, 0)), b, line, P(None, "z"))
    """)


def test_jit_halo_exchange_kernel_shapes_stride_dilation():
    run("""
    x, w, b = data((1, 2, 16, 8, 4), (3, 2, 3, 2, 3))
    same = lambda x, w, b: jaxconv3d.conv3d(x, w, b, padding="same", dilation=(2, 1, 1))  # lo 2, hi 2
    check_jit(same, x, w, b, line, P(None, None, "z"))
    asym = lambda x, w, b: jaxconv3d.conv3d(x, w, b, padding=((0, 2), (1, 0), (1, 1)))    # hi only
    check_jit(asym, x, w, b, line, P(None, None, "z"))
    down = lambda x, w, b: jaxconv3d.conv3d(x, w, b, stride=2, padding=1)                 # k3 s2 p1: lo 1, hi 0
    check_jit(down, x, w, b, line, P(None, None, "z"))
    w4 = jnp.asarray(rng.standard_normal((3, 2, 4, 2, 2)))
    down4 = lambda x, w, b: jaxconv3d.conv3d(x, w, b, stride=(2, 2, 2), padding=(1, 0, 0))  # k4 s2 p1: lo 1, hi 1
    check_jit(down4, x, w4, b, line, P(None, None, "z"))
    w2 = jnp.asarray(rng.standard_normal((3, 2, 2, 2, 2)))
    noexchange = lambda x, w, b: jaxconv3d.conv3d(x, w, b, stride=2)                      # k2 s2: no halo at all
    check_jit(noexchange, x, w2, b, line, P(None, None, "z"), permute=False)
    w1 = jnp.asarray(rng.standard_normal((3, 2, 1, 1, 1)))
    sub = lambda x, w, b: jaxconv3d.conv3d(x, w, b, stride=2)                             # k1 s2: crops (hi -1)
    check_jit(sub, x, w1, b, line, P(None, None, "z"), order2=False, permute=False)
    grouped = lambda x, w, b: jaxconv3d.conv3d(x, w[:2, :1], b[:2], padding=1, groups=2)
    check_jit(grouped, x, w, b, line, P(None, None, "z"), order2=False)
    """)


def test_jit_falls_back_to_gathering_where_no_slab_plan_exists():
    run("""
    x, w, b = data((2, 2, 8, 6, 6), (3, 2, 3, 3, 3))
    valid = lambda x, w, b: jaxconv3d.conv3d(x, w, b)                    # output 6 != input 8: no even slabs
    check_jit(valid, x, w, b, line, P(None, None, "z"), halo=False, order2=False)
    w7 = jnp.asarray(rng.standard_normal((3, 2, 7, 3, 3)))
    wide = lambda x, w, b: jaxconv3d.conv3d(x, w, b, padding=(3, 1, 1))  # halo 3 > slab 2
    check_jit(wide, x, w7, b, line, P(None, None, "z"), halo=False, order2=False)
    # the batch sharding of the same call is kept while D is gathered
    xs = jax.device_put(x, NamedSharding(mesh, P("b", None, "a")))
    close(jax.jit(valid)(xs, w, b), valid(x, w, b))
    """)


def test_conv_transpose_stays_sharded():
    run("""
    x, w, _ = data((2, 4, 4, 4, 4), (4, 3, 2, 2, 2))
    b = jnp.asarray(rng.standard_normal(3))  # C_out = weight.shape[1]
    up = lambda x, w, b: jaxconv3d.conv_transpose3d(x, w, b, stride=2)                    # the UNet up-sampler
    check_jit(up, x, w, b, line, P(None, None, "z"), permute=False)
    w4 = jnp.asarray(rng.standard_normal((4, 3, 4, 3, 3)))
    up4 = lambda x, w, b: jaxconv3d.conv_transpose3d(x, w, b, stride=(2, 1, 1), padding=1)  # k4 s2 p1: halo
    check_jit(up4, x, w4, b, line, P(None, None, "z"))
    check_jit(up4, x, w4, b, mesh, P("a", None, None, "b"))
    """)


def test_shard_map_helpers():
    run("""
    for kw, k in [(dict(padding=1), 3), (dict(padding=1, stride=2), 3), (dict(padding=(2, 1, 0), dilation=2), 3),
                  (dict(stride=2), 2)]:
        x, w, b = data((2, 3, 16, 6, 5), (4, 3, k, 3, k))
        f = lambda x, w, b: jaxconv3d.conv3d(x, w, b, **kw)
        for axis in (0, 2):  # D, and W (the same problem with D and W swapped)
            swap = (lambda a: jnp.swapaxes(a, 2, 4)) if axis else (lambda a: a)
            kw_ = {k: v[::-1] if axis and isinstance(v, tuple) else v for k, v in kw.items()}
            f = lambda x, w, b: jaxconv3d.conv3d(x, w, b, **kw_)
            spec = P(*(None,) * (2 + axis), "z")
            sm = jax.shard_map(lambda x, w, b: jaxconv3d.sharded_conv3d(x, w, b, axis_name="z", spatial_axis=axis,
                                                                         **kw_),
                               mesh=line, in_specs=(spec, P(), P()), out_specs=spec)
            x_, w_ = swap(x), swap(w)
            close(jax.jit(sm)(x_, w_, b), f(x_, w_, b), 1e-12, str(kw_))
            loss = lambda fn: lambda *a: jnp.sum(jnp.sin(fn(*a)))
            for g, r in zip(jax.jit(jax.grad(loss(sm), argnums=(0, 1, 2)))(x_, w_, b),
                            jax.grad(loss(f), argnums=(0, 1, 2))(x_, w_, b)):
                close(g, r, 1e-12, str(kw_))
    h = jax.shard_map(lambda x: jaxconv3d.halo_exchange(x, "z", 1, 2, 0), mesh=line, in_specs=P(None, None, "z"),
                      out_specs=P(None, None, "z"))
    got = np.asarray(h(jnp.arange(16.)[None, None, :, None, None]))[0, 0, :, 0, 0].reshape(4, 7)
    np.testing.assert_array_equal(got[0], [0, 0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(got[3], [11, 12, 13, 14, 15, 0, 0])
    bad = jax.shard_map(lambda x, w: jaxconv3d.sharded_conv3d(x, w, axis_name="z"), mesh=line,
                        in_specs=(P(None, None, "z"), P()), out_specs=P(None, None, "z"))
    try:
        bad(x, w)
    except ValueError as e:
        assert "no slab decomposition along depth" in str(e), e
    else:
        raise AssertionError("expected a ValueError")
    try:
        jax.shard_map(lambda x: jaxconv3d.halo_exchange(x, "z", 5, 0, 0), mesh=line, in_specs=P(None, None, "z"),
                      out_specs=P(None, None, "z"))(x)
    except ValueError as e:
        assert "lo must be an int between 0 and the slab's size 4" in str(e), e
    else:
        raise AssertionError("expected a ValueError")
    """)


def test_jit_random_configurations():
    """Random kernel / stride / padding / dilation / groups along a D sharded over 4 devices (and W over 2 with the
    batch over 2): the result always equals one device's; the call is halo-exchanged exactly where `halo_plan`
    says a slab decomposition exists, and gathered otherwise."""
    run("""
    from jaxconv3d import conv_config
    from jaxconv3d._sharding import halo_plan
    r = np.random.default_rng(7)
    planned = 0
    for trial in range(14):
        k, s, d = (int(v) for v in r.integers(1, 4, 3))
        if trial % 2:
            padding = "same" if s == 1 else (int(r.integers(0, 3)), 1, 1)
        else:
            padding = (int(r.integers(0, 3)), 0, int(r.integers(0, 2)))
        g = int(r.choice([1, 2]))
        x, w, b = data((2, 2 * g, 8 * int(r.integers(1, 3)), 4, 4), (2 * g, 2, k, 2, k))
        kw = dict(stride=(s, 1, 1), padding=padding, dilation=(d, 1, 1), groups=g)
        try:
            cfg = conv_config(x.shape, w.shape, None, **kw)
        except ValueError:
            continue
        f = lambda x, w, b, kw=kw: jaxconv3d.conv3d(x, w, b, **kw)
        halo = halo_plan(cfg, 0, ("z",), 4) is not None
        planned += halo
        permute = halo and (cfg.pad_lo[0] > 0 or d * (k - 1) + 1 - s - cfg.pad_lo[0] > 0)
        check_jit(f, x, w, b, line, P(None, None, "z"), halo=halo, order2=False, permute=permute)
        wide = halo_plan(cfg, 2, ("a",), 2) is not None
        check_jit(f, x, w, b, mesh, P("b", None, None, None, "a"), halo=wide, order2=False,
                  permute=wide and (cfg.pad_lo[2] > 0 or k - 1 - cfg.pad_lo[2] > 0))
    assert planned >= 3, planned
    """)


def test_shard_map_transposed_convolution():
    run("""
    for kw, k in [(dict(stride=2), 2), (dict(stride=2, padding=1), 4), (dict(stride=2, padding=1, output_padding=1), 3),
                  (dict(padding=1, groups=2), 3)]:
        x, w, _ = data((2, 4, 8, 3, 3), (4, 2 if kw.get("groups") else 3, k, 3, 3))
        b = jnp.asarray(rng.standard_normal(4 if kw.get("groups") else 3))
        f = lambda x, w, b: jaxconv3d.conv_transpose3d(x, w, b, **kw)
        spec = P(None, None, "z")
        sm = jax.shard_map(lambda x, w, b: jaxconv3d.sharded_conv_transpose3d(x, w, b, axis_name="z", **kw),
                           mesh=line, in_specs=(spec, P(), P()), out_specs=spec)
        close(jax.jit(sm)(x, w, b), f(x, w, b), 1e-12, str(kw))
        loss = lambda fn: lambda *a: jnp.sum(jnp.sin(fn(*a)))
        for g, r in zip(jax.jit(jax.grad(loss(sm), argnums=(0, 1, 2)))(x, w, b),
                        jax.grad(loss(f), argnums=(0, 1, 2))(x, w, b)):
            close(g, r, 1e-12, str(kw))
        unbatched = jax.shard_map(
            lambda x, w, b: jaxconv3d.sharded_conv_transpose3d(x[0], w, b, axis_name="z", **kw)[None],
            mesh=line, in_specs=(spec, P(), P()), out_specs=spec)
        close(unbatched(x[:1], w, b), f(x[:1], w, b), 1e-12, str(kw))
    x, w, b = data((1, 4, 8, 3, 3), (4, 3, 3, 3, 3))
    for kw, message in [(dict(stride=2, padding=1), "no slab decomposition along depth"),  # output 15 rows
                        (dict(stride=2, output_padding=1), "output_padding along depth must not exceed padding")]:
        bad = jax.shard_map(lambda x, w: jaxconv3d.sharded_conv_transpose3d(x, w, axis_name="z", **kw), mesh=line,
                            in_specs=(P(None, None, "z"), P()), out_specs=P(None, None, "z"))
        try:
            bad(x, w)
        except ValueError as e:
            assert message in str(e), e
        else:
            raise AssertionError("expected a ValueError")
    """)


def test_scaling_script_runs_and_keeps_activations_sharded(tmp_path):
    """scripts/scaling.py (the multi-GPU scaling table of docs/perf.md) on four CPU devices, tiny shapes: every row
    is timed, equals the one-device step, and ours never all-gathers an activation."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "scaling.py"
    out = tmp_path / "scaling.json"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    args = ["--devices", "1", "2", "4", "--shape", "4", "3", "4", "8", "8", "8", "--dtype", "float32", "--reps", "2",
            "--shardings", "batch", "D", "--json", str(out)]
    done = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(r["impl"], r["sharding"], r["devices"]) for r in rows} >= {
        ("ours", "batch", 1), ("ours", "batch", 2), ("ours", "D", 2), ("ours", "batch", 4), ("ours", "D", 4)}
    for r in rows:
        assert r["ms"] > 0 and r["max_rel_diff_vs_1"] < 1e-4, r
        if r["impl"] == "ours":
            assert not r["all_gather"], r
