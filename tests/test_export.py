"""jax.export: targets registered at import, the disabled checks to pass, versioned target names, a symbolic batch,
and the round trip across processes (serialise here, deserialise and call in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import jaxconv3d
from jaxconv3d import _ffi



def _f(x, w, b):
    return jaxconv3d.conv3d(x, w, b, padding=1, stride=(1, 2, 1))


def _args(n=2):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, 3, 6, 5, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((4, 3, 3, 3, 3)), jnp.float32)
    b = jnp.asarray(rng.standard_normal((4,)), jnp.float32)
    return x, w, b


def _run_fresh(code: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *argv], capture_output=True, text=True,
                          timeout=300)


def test_export_needs_the_disabled_checks_we_name():
    x, w, b = _args()
    with pytest.raises(ValueError, match="custom calls"):
        export.export(jax.jit(_f))(x, w, b)
    checks = jaxconv3d.export_disabled_checks()
    assert len(checks) == len(_ffi.TARGETS) == 5  # fwd, dgrad, wgrad, bgrad, grads
    assert all(f"_v{jaxconv3d.FFI_TARGET_VERSION}" in name for name in _ffi.TARGETS)
    text = export.export(jax.jit(_f), disabled_checks=checks)(x, w, b).mlir_module()
    assert f"@jaxconv3d_fwd_v{jaxconv3d.FFI_TARGET_VERSION}" in text


def test_targets_registered_at_import():
    """A fresh process that only imports jaxconv3d can run a program naming our targets (no call of ours first)."""
    code = """
        import jax, jax.numpy as jnp, jaxconv3d
        from jaxconv3d import _ffi
        out = jax.ShapeDtypeStruct((1,), jnp.float32)
        print(float(jax.ffi.ffi_call(_ffi.BGRAD, out)(jnp.ones((2, 1, 1, 1, 1), jnp.float32))[0]))
    """
    r = _run_fresh(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2.0"


@pytest.mark.parametrize("symbolic", [False, True], ids=["static", "symbolic-batch"])
def test_round_trip_in_a_fresh_process(tmp_path, symbolic):
    x, w, b = _args()
    x_spec = jax.ShapeDtypeStruct((export.symbolic_shape("b")[0], *x.shape[1:]), x.dtype) if symbolic else x
    exp = export.export(jax.jit(_f), disabled_checks=jaxconv3d.export_disabled_checks())(x_spec, w, b)
    path = tmp_path / "conv.bin"
    path.write_bytes(exp.serialize())
    batches = (1, 3, 5) if symbolic else (2,)
    for n in batches:
        xn, _, _ = _args(n)
        np.save(tmp_path / f"x{n}.npy", np.asarray(xn))
        np.save(tmp_path / f"want{n}.npy", np.asarray(_f(xn, w, b)))
    np.save(tmp_path / "w.npy", np.asarray(w))
    np.save(tmp_path / "b.npy", np.asarray(b))
    code = """
        import sys, pathlib, numpy as np, jax
        import jaxconv3d  # registers the targets
        from jax import export
        d = pathlib.Path(sys.argv[1])
        exp = export.deserialize(bytearray((d / "conv.bin").read_bytes()))
        w, b = np.load(d / "w.npy"), np.load(d / "b.npy")
        for n in map(int, sys.argv[2:]):
            got = np.asarray(exp.call(np.load(d / f"x{n}.npy"), w, b))
            np.testing.assert_array_equal(got, np.load(d / f"want{n}.npy"))
        print("ok")
    """
    r = _run_fresh(code, str(tmp_path), *map(str, batches))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_symbolic_batch_gradients_export():
    """Shape polymorphism through the VJP too (grad-input, grad-weight, grad-bias with a symbolic batch)."""
    x, w, b = _args()
    loss = lambda x, w, b: jnp.sum(_f(x, w, b) ** 2)  # noqa: E731
    spec = jax.ShapeDtypeStruct((export.symbolic_shape("b")[0], *x.shape[1:]), x.dtype)
    exp = export.export(jax.jit(jax.grad(loss, argnums=(0, 1, 2))),
                        disabled_checks=jaxconv3d.export_disabled_checks())(spec, w, b)
    for n in (1, 3):
        xn, _, _ = _args(n)
        for got, want in zip(exp.call(xn, w, b), jax.grad(loss, argnums=(0, 1, 2))(xn, w, b)):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("fn", ["transpose", "ndhwc", "vmap"])
def test_symbolic_batch_other_entry_points(fn):
    """conv_transpose3d (with its gradients), the channels-last layout and a vmapped call with a symbolic batch."""
    b = export.symbolic_shape("b")[0]
    rng = np.random.default_rng(1)
    if fn == "transpose":
        f = jax.grad(lambda x, w: jnp.sum(jaxconv3d.conv_transpose3d(x, w, stride=2, padding=1, output_padding=1) ** 2),
                     argnums=(0, 1))
        x, w = rng.standard_normal((3, 2, 4, 4, 4)), rng.standard_normal((2, 4, 3, 3, 3))
    elif fn == "ndhwc":
        f = lambda x, w: jaxconv3d.conv3d(x, w, padding=1, layout="NDHWC")  # noqa: E731
        x, w = rng.standard_normal((3, 4, 5, 4, 2)), rng.standard_normal((3, 3, 3, 2, 4))
    else:
        f = jax.vmap(lambda x, w: jaxconv3d.conv3d(x, w, padding=1), in_axes=(0, None))
        x, w = rng.standard_normal((3, 2, 2, 4, 4, 4)), rng.standard_normal((4, 2, 3, 3, 3))
    x, w = jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
    spec = jax.ShapeDtypeStruct((b, *x.shape[1:]), x.dtype)
    exp = export.deserialize(export.export(jax.jit(f), disabled_checks=jaxconv3d.export_disabled_checks())(
        spec, w).serialize())
    for n in (1, 3):
        got, want = exp.call(x[:n], w), f(x[:n], w)
        for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_array_equal(np.asarray(g), np.asarray(r))


def test_only_the_batch_may_be_symbolic():
    x, w, b = _args()
    c = export.symbolic_shape("c")[0]
    spec = jax.ShapeDtypeStruct((2, 3, c, 5, 4), x.dtype)
    with pytest.raises(ValueError, match="only the batch dimension may be symbolic"):
        export.export(jax.jit(_f), disabled_checks=jaxconv3d.export_disabled_checks())(spec, w, b)


def test_stale_export_fails_with_a_clear_message():
    """A program exported against version 1 (targets without a version suffix) is refused with a message that says
    to re-export, not run against handlers with another interface."""
    x, w, b = _args()
    y = jax.ShapeDtypeStruct((2, 4, 6, 3, 4), jnp.float32)
    ws = jax.ShapeDtypeStruct((0,), jnp.uint8)

    def old(x, w, b):  # what jaxconv3d 0.1 put in an exported program
        return jax.ffi.ffi_call("jaxconv3d_fwd", (y, ws))(x, w, b, stride=np.ones(3, np.int64), groups=1)[0]

    exp = export.export(jax.jit(old), disabled_checks=[export.DisabledSafetyCheck.custom_call("jaxconv3d_fwd")])(
        x, w, b)
    exp = export.deserialize(exp.serialize())
    with pytest.raises(Exception, match="older jaxconv3d.*re-export"):
        jax.block_until_ready(exp.call(x, w, b))


@pytest.mark.parametrize("op", ["forward", "grad_input", "grad_weight"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("cc", [0, 80, 90])
@pytest.mark.parametrize("w_shape,spatial", [((16, 16, 3, 3, 3), (6, 7, 5)), ((32, 1, 3, 3, 3), (9, 9, 9)),
                                             ((64, 32, 1, 1, 1), (2, 2, 2))])
def test_symbolic_batch_plan_covers_every_batch(op, dtype, cc, w_shape, spatial):
    """The workspace planned once for a symbolic batch is at least what any concrete batch asks for."""
    from jaxconv3d import _plan

    b = export.symbolic_shape("b")[0]
    groups = 32 if w_shape[1] == 1 else 1
    cin = w_shape[1] * groups
    cfg = jaxconv3d.conv_config((b, cin, *spatial), w_shape, None, padding=1, groups=groups)
    planned = _plan.plan(cfg, dtype, cc, op)
    for n in (1, 2, 7, 64, 1000, 50_000, 1 << 20, 3_000_017):
        concrete = _plan.plan(cfg.replace(batch=n), dtype, cc, op)
        assert concrete["layout"] == planned["layout"]
        assert concrete["workspace_bytes"] <= planned["workspace_bytes"], n
