"""Every entry path against independent float64 references built from the user's raw arguments (tests/refs.py):
torch eager (function and module), torch.compile, torch.export, JAX eager / jit / vmap, shard_map and the CLI
`check` implementations, on asymmetric, strided, dilated, grouped and "same"-with-even-kernel cases."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import jaxconv3d
import jaxconv3d.torch as jt
from helpers import assert_close
from jaxconv3d import check, conv_config, workloads
from refs import RAW_CASES, SAME_PADS, is_pairs, lax_conv64, out_shape, reference_and_grads, torch_conv64

F64 = 1e-12
CASE_IDS = [c.name for c in RAW_CASES]


def operands(rng, case):
    x = rng.standard_normal(case.x_shape)
    w = rng.standard_normal(case.w_shape)
    b = rng.standard_normal(case.w_shape[0]) if case.bias else None
    dy = rng.standard_normal(out_shape(case))
    return x, w, b, dy


def torch_leaves(x, w, b):
    leaf = lambda a: None if a is None else torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    return leaf(x), leaf(w), leaf(b)


def torch_grads(fn, x, w, b, dy):
    xt, wt, bt = torch_leaves(x, w, b)
    y = fn(xt, wt, bt)
    leaves = [t for t in (xt, wt, bt) if t is not None]
    grads = torch.autograd.grad(y, leaves, torch.as_tensor(dy))
    return (y, *grads) if bt is not None else (y, *grads, None)


def jax_grads(fn, x, w, b, dy):
    args = (x, w) if b is None else (x, w, b)
    y, vjp = jax.vjp(fn, *map(jnp.asarray, args))
    grads = vjp(jnp.asarray(dy))
    return (y, *grads) if b is not None else (y, *grads, None)


def compare(got, want, what):
    for name, g, r in zip(("y", "dx", "dw", "db"), got, want):
        if r is None:
            assert g is None, f"{what} {name}"
            continue
        assert_close(g, r, F64, f"{what} {name}")


@pytest.mark.parametrize("case", RAW_CASES, ids=CASE_IDS)
def test_the_two_references_agree(rng, case):
    x, w, b, _ = operands(rng, case)
    bt = None if b is None else torch.as_tensor(b)
    want = torch_conv64(torch.as_tensor(x), torch.as_tensor(w), bt, **case.kwargs())
    assert_close(lax_conv64(x, w, b, **case.kwargs()), want, F64, case.name)


@pytest.mark.parametrize("case", RAW_CASES, ids=CASE_IDS)
def test_torch_eager(rng, case):
    x, w, b, dy = operands(rng, case)
    got = torch_grads(lambda x_, w_, b_: jt.conv3d(x_, w_, b_, **case.kwargs()), x, w, b, dy)
    compare(got, reference_and_grads(x, w, b, dy, **case.kwargs()), f"torch eager {case.name}")


@pytest.mark.parametrize("case", RAW_CASES, ids=CASE_IDS)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_jax(rng, case, jit):
    x, w, b, dy = operands(rng, case)

    def fn(*args):
        return jaxconv3d.conv3d(*args, **case.kwargs())

    got = jax_grads(jax.jit(fn) if jit else fn, x, w, b, dy)
    compare(got, reference_and_grads(x, w, b, dy, **case.kwargs()), f"jax {case.name}")


@pytest.mark.parametrize("case", [c for c in RAW_CASES if not is_pairs(c.padding)],
                         ids=lambda c: c.name)
def test_module_against_nn_conv3d(rng, case):
    """jt.Conv3d and nn.Conv3d built with the same raw constructor arguments, same weights, float64."""
    kw = {k: v for k, v in case.kwargs().items() if k != "groups"}
    o, cg, *k = case.w_shape
    g = case.groups
    ref = nn.Conv3d(cg * g, o, tuple(k), bias=case.bias, groups=g, **kw).double()
    ours = jt.Conv3d(cg * g, o, tuple(k), bias=case.bias, groups=g, **kw).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.as_tensor(rng.standard_normal(case.x_shape))
    assert_close(ours(x), ref(x), F64, case.name)


COMPILE_CASES = [c for c in RAW_CASES if c.name in ("asym_pairs_dilated_grouped", "same_even_kernel_dilated")]


@pytest.mark.parametrize("case", COMPILE_CASES, ids=lambda c: c.name)
def test_torch_compile(rng, case):
    """Compiled calls (the torch.library custom op path) against the reference, gradients included."""
    x, w, b, dy = operands(rng, case)
    torch._dynamo.reset()
    fn = torch.compile(lambda x_, w_, b_: jt.conv3d(x_, w_, b_, **case.kwargs()), fullgraph=True, backend="aot_eager")
    got = torch_grads(fn, x, w, b, dy)
    compare(got, reference_and_grads(x, w, b, dy, **case.kwargs()), f"torch.compile {case.name}")


def test_torch_export(rng):
    """An exported program of a module with even-kernel "same" padding (asymmetric pads) and a strided one."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = jt.Conv3d(3, 4, (2, 4, 2), padding="same", dilation=(3, 1, 2)).double()
            self.b = jt.Conv3d(4, 2, (3, 2, 3), stride=(2, 1, 2), padding=(1, 0, 2), groups=2).double()

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    net = Net()
    x = torch.as_tensor(rng.standard_normal((2, 3, 6, 7, 8)))
    exported = torch.export.export(net, (x,))
    got = exported.module()(x)
    h = torch.tanh(torch_conv64(x, net.a.weight, net.a.bias, padding="same", dilation=(3, 1, 2)))
    want = torch_conv64(h, net.b.weight, net.b.bias, stride=(2, 1, 2), padding=(1, 0, 2), groups=2)
    assert_close(got, want.detach(), F64, "torch.export")


@pytest.mark.parametrize("case", RAW_CASES[:3], ids=CASE_IDS[:3])
def test_jax_vmap_over_inputs_and_weights(rng, case):
    x, w, b, _ = operands(rng, case)
    xs = rng.standard_normal((3, *case.x_shape))
    ws = rng.standard_normal((3, *case.w_shape))
    fn = lambda x_, w_: jaxconv3d.conv3d(x_, w_, None if b is None else jnp.asarray(b), **case.kwargs())  # noqa: E731
    over_x = jax.jit(jax.vmap(fn, in_axes=(0, None)))(xs, w)
    over_both = jax.vmap(fn)(xs, ws)
    for i in range(3):
        assert_close(over_x[i], lax_conv64(xs[i], w, b, **case.kwargs()), F64, f"vmap x {case.name} {i}")
        assert_close(over_both[i], lax_conv64(xs[i], ws[i], b, **case.kwargs()), F64, f"vmap x,w {case.name} {i}")


@pytest.mark.parametrize(
    "kernel,dilation", sorted(SAME_PADS), ids=[f"k{k}d{d}" for k, d in sorted(SAME_PADS)]
)
def test_same_padding_table(rng, kernel, dilation):
    """ "same" pads from an explicit table (not from torch, not from us): the normalised config and both fronts'
    results agree with a conv on the input padded by hand."""
    lo, hi = SAME_PADS[(kernel, dilation)]
    x = rng.standard_normal((1, 2, 3, 2, 9))
    w = rng.standard_normal((2, 2, 1, 1, kernel))
    cfg = conv_config(x.shape, w.shape, None, padding="same", dilation=(1, 1, dilation))
    assert (cfg.pad_lo[2], cfg.pad_hi[2]) == (lo, hi)
    want = F.conv3d(F.pad(torch.as_tensor(x), (lo, hi)), torch.as_tensor(w), dilation=(1, 1, dilation))
    kw = dict(padding="same", dilation=(1, 1, dilation))
    assert_close(jt.conv3d(torch.as_tensor(x), torch.as_tensor(w), **kw), want, F64, "torch")
    assert_close(jaxconv3d.conv3d(x, w, **kw), want, F64, "jax")


CLI_CASES = [c for c in workloads.COVERAGE_CASES if c.name in ("stride2_asym_pad", "dilated", "depthwise_same",
                                                                  "groups2", "kernel357")]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.name)
def test_cli_check_paths(rng, case):
    """What `jaxconv3d check` runs (both fronts) and what it compares with (its F.conv3d and lax references),
    against the independent reference from the case's raw arguments."""
    precision = workloads.PRECISIONS["fp64"]
    x = torch.as_tensor(rng.standard_normal(case.x_shape))
    w = torch.as_tensor(rng.standard_normal(case.w_shape))
    b = torch.as_tensor(rng.standard_normal(case.out_channels)) if case.bias else None
    want = torch_conv64(x, w, b, **case.conv_kwargs)
    assert_close(check.ours_torch(case, precision)(x, w, b), want, F64, "check: ours torch")
    assert_close(check.torch_conv(case, precision)(x, w, b), want, F64, "check: its F.conv3d reference")
    jx, jw, jb = (None if t is None else jnp.asarray(t.numpy()) for t in (x, w, b))
    assert_close(check.ours_jax(case, precision)(jx, jw, jb), want, F64, "check: ours jax")
    assert_close(check.lax_conv(case, precision)(jx, jw, jb), want, F64, "check: its lax reference")


def test_shard_map_against_reference():
    """Four CPU devices in a fresh process: shard_map and batch-sharded jit in float64 on asymmetric / "same"
    cases, forward and gradients, against lax from the raw arguments."""
    script = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, %r)
        import numpy as np, jax, jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        import jaxconv3d
        from refs import RAW_CASES, lax_conv64
        shard_map = getattr(jax, "shard_map", None)
        if shard_map is None:
            from jax.experimental.shard_map import shard_map
        mesh = Mesh(np.array(jax.devices()), ("data",))
        rng = np.random.default_rng(7)
        for case in RAW_CASES[:2]:
            xs = rng.standard_normal((4 * case.x_shape[0], *case.x_shape[1:]))
            w, b = rng.standard_normal(case.w_shape), rng.standard_normal(case.w_shape[0])
            f = lambda x, w, b: jaxconv3d.conv3d(x, w, b, **case.kwargs())
            ref = lambda x, w, b: lax_conv64(x, w, b, **case.kwargs())
            want = ref(xs, w, b)
            def close(got, want, what):
                err = np.linalg.norm(np.asarray(got) - np.asarray(want)) / np.linalg.norm(np.asarray(want))
                assert err < 1e-12, (case.name, what, err)
            sm = shard_map(f, mesh=mesh, in_specs=(P("data"), P(), P()), out_specs=P("data"))
            close(jax.jit(sm)(xs, w, b), want, "shard_map")
            close(jax.jit(f)(jax.device_put(xs, NamedSharding(mesh, P("data"))), w, b), want, "sharded jit")
            loss = lambda fn: lambda x, w, b: jnp.sum(jnp.sin(fn(x, w, b)))
            got = jax.jit(jax.grad(loss(sm), argnums=(0, 1, 2)))(xs, w, b)
            for g, r, what in zip(got, jax.grad(loss(ref), argnums=(0, 1, 2))(xs, w, b), "xwb"):
                close(g, r, "grad " + what)
        print("shard_map references ok")
        """
        % os.path.dirname(os.path.abspath(__file__))
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "shard_map references ok" in out.stdout


@pytest.mark.parametrize("front", ["torch", "jax"])
def test_empty_batch(rng, front):
    """A batch of zero examples: empty output and input gradient, zero weight and bias gradients, as F.conv3d."""
    case = RAW_CASES[0]
    x = np.zeros((0, *case.x_shape[1:]))
    w, b = rng.standard_normal(case.w_shape), rng.standard_normal(case.w_shape[0])
    dy = np.zeros((0, *out_shape(case)[1:]))
    if front == "torch":
        got = torch_grads(lambda x_, w_, b_: jt.conv3d(x_, w_, b_, **case.kwargs()), x, w, b, dy)
    else:
        got = jax_grads(lambda *a: jaxconv3d.conv3d(*a, **case.kwargs()), x, w, b, dy)
    want = reference_and_grads(x, w, b, dy, **case.kwargs())
    for name, g, r in zip(("y", "dx", "dw", "db"), got, want):
        assert tuple(g.shape) == tuple(r.shape), name
        assert np.array_equal(np.asarray(g.detach() if isinstance(g, torch.Tensor) else g), r.numpy()), name
