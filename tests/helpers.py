"""Helpers shared by the tests: float64 references, error metrics, devices, random data."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import jax

from jaxconv3d import reference

ROOT = Path(__file__).resolve().parent.parent


def script_module(name: str):
    """scripts/NAME.py imported as a module (the scripts folder is not a package), registered in sys.modules under
    `_script_NAME` (dataclasses look their module up while a class is built)."""
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# Relative Frobenius bounds (shared/notes/testing.md), by dtype name: the CLI's check uses the same table.
BOUNDS = reference.DTYPE_BOUNDS
TORCH_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def has_cuda() -> bool:
    return torch.cuda.is_available()


def jax_has_gpu() -> bool:
    try:
        return len(jax.devices("gpu")) > 0
    except RuntimeError:
        return False


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def rel_error(out, ref) -> tuple[float, float]:
    """(||out - ref|| / ||ref||, max|out - ref| / max|ref|) in float64 (jaxconv3d.reference.error, as the CLI's
    check measures); NaN/Inf in `out` give inf."""
    e = reference.error(out, ref)
    return tuple(float("inf") if np.isnan(v) else v for v in (e.relative, e.max_relative))


def assert_close(out, ref, bound: float, what: str = "") -> None:
    rel, worst = rel_error(out, ref)
    assert rel <= bound and worst <= reference.MAX_ERROR_FACTOR * bound, (
        f"{what}: rel error {rel:.3g}, max error {worst:.3g}, bound {bound}"
    )


to_numpy = reference.to_numpy64


def torch_reference(x, w, b, dy, cfg):
    """Forward and grads of F.conv3d in float64 on the CPU: (y, dx, dw, db), the config's (lo, hi) pads applied with
    F.pad inside the graph, so dx is the gradient with respect to the unpadded input. (Tests of argument handling
    use tests/refs.py, which starts from the raw arguments instead.)"""
    return reference.reference_and_grads(x, w, b, dy, stride=cfg.stride, padding=tuple(zip(cfg.pad_lo, cfg.pad_hi)),
                                         dilation=cfg.dilation, groups=cfg.groups)


def jax_reference(x, w, b, cfg):
    """Forward in float64 through jax.lax.conv_general_dilated (x64 is enabled by conftest)."""
    y = jax.lax.conv_general_dilated(
        np.asarray(to_numpy(x)),
        np.asarray(to_numpy(w)),
        window_strides=cfg.stride,
        padding=list(zip(cfg.pad_lo, cfg.pad_hi)),
        rhs_dilation=cfg.dilation,
        feature_group_count=cfg.groups,
        dimension_numbers=("NCDHW", "OIDHW", "NCDHW"),
        precision=jax.lax.Precision.HIGHEST,
    )
    if b is not None:
        y = y + np.asarray(to_numpy(b))[None, :, None, None, None]
    return y


def randn(rng, shape, dtype="float32"):
    """Fresh normal data (never zeros), rounded to `dtype`, as a float64 numpy array of representable values."""
    a = rng.standard_normal(shape)
    return torch.as_tensor(a).to(TORCH_DTYPES[dtype]).to(torch.float64).numpy()


def jax_device(device: str):
    return jax.devices("cpu" if device == "cpu" else "gpu")[0]


def run_front(front, device, dtype, x, w, b, dy, **kw):
    """(y, dx, dw, db) of jaxconv3d through the 'jax' or 'torch' front on `device`, inputs cast to `dtype`."""
    import jaxconv3d
    import jaxconv3d.torch as jt

    if front == "torch":
        tdt = TORCH_DTYPES[dtype]
        xt = torch.as_tensor(x).to(device, tdt).requires_grad_(True)
        wt = torch.as_tensor(w).to(device, tdt).requires_grad_(True)
        bt = None if b is None else torch.as_tensor(b).to(device, tdt).requires_grad_(True)
        y = jt.conv3d(xt, wt, bt, **kw)
        inputs = (xt, wt) if bt is None else (xt, wt, bt)
        grads = torch.autograd.grad(y, inputs, torch.as_tensor(dy).to(device, tdt))
        return (y, grads[0], grads[1], grads[2] if bt is not None else None)
    jdt = jax.numpy.dtype(dtype)
    dev = jax_device(device)
    put = lambda a: jax.device_put(jax.numpy.asarray(a, jdt), dev)  # noqa: E731
    xj, wj, dyj = put(x), put(w), put(dy)
    if b is None:
        y, vjp = jax.vjp(lambda x_, w_: jaxconv3d.conv3d(x_, w_, **kw), xj, wj)
        dx, dw = vjp(dyj)
        return y, dx, dw, None
    y, vjp = jax.vjp(lambda x_, w_, b_: jaxconv3d.conv3d(x_, w_, b_, **kw), xj, wj, put(b))
    return (y, *vjp(dyj))


def train_side_by_side(ref, model, x, target, steps: int, lr: float) -> None:
    """SGD with momentum on an mse loss for both models on the same data; their losses agree every step within the
    float32 tolerance."""
    opts = [torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9) for m in (ref, model)]
    for _ in range(steps):
        losses = []
        for net, opt in zip((ref, model), opts):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(x), target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert abs(losses[0] - losses[1]) <= 1e-5 * max(1.0, abs(losses[0])), losses


def run_on_four_cpu_devices(script: str, *, x64: bool = False, timeout: int = 300) -> None:
    """Run `script` in a fresh Python with four CPU devices (the device count is fixed at JAX start-up); it must
    print 'sharding ok'. `x64`: with float64 enabled."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    if x64:
        env["JAX_ENABLE_X64"] = "1"
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "sharding ok" in out.stdout


# Half the spacing of each dtype's subnormals: the error a correctly rounded result keeps where the exact value is
# tiny, whatever its terms' size (a float16 gradient element of 1.07e-7 is stored as 1.19e-7, 12 % off).
SUBNORMAL_HALF_SPACING = {"float16": 2.0**-25, "bfloat16": 2.0**-134, "float32": 2.0**-150, "float64": 0.0}


def dtype_name(value) -> str:
    """'float16', 'bfloat16', ... for a torch tensor, JAX or numpy array."""
    return str(getattr(value, "dtype", "float64")).replace("torch.", "")


def assert_close_scaled(out, ref, scale, bound: float, what: str = "") -> None:
    """Error measured against the size of the terms summed, not of the (possibly cancelling) result: `scale` is the
    same operation applied to the absolute values of its operands (e.g. conv(|x|, |w|) + |b|, or sum |dy| for the
    bias gradient). A correct kernel's rounding error is a small multiple of eps * scale element by element, so this
    holds however much the sum cancels (a one-channel bias gradient can be a near-zero scalar); element by element,
    the output dtype's rounding among its subnormals is allowed on top (SUBNORMAL_HALF_SPACING)."""
    floor = SUBNORMAL_HALF_SPACING.get(dtype_name(out), 0.0)
    out = np.asarray(to_numpy(out), np.float64)
    ref = np.asarray(to_numpy(ref), np.float64)
    scale = np.asarray(to_numpy(scale), np.float64)
    assert out.shape == ref.shape == scale.shape, (what, out.shape, ref.shape, scale.shape)
    assert np.all(np.isfinite(out)), f"{what}: non-finite values"
    diff = np.abs(out - ref)
    rel = float(np.linalg.norm(diff) / (np.linalg.norm(scale) or 1.0))
    worst = float(np.max(np.maximum(diff - floor, 0.0) / np.maximum(scale, np.finfo(np.float64).tiny), initial=0.0))
    assert rel <= bound and worst <= 10 * bound, (
        f"{what}: scaled error {rel:.3g}, worst element {worst:.3g}, bound {bound}"
    )


# ---- the depthwise stencil tests (test_depthwise.py, test_stencil_cl.py): a case straight through the adapter

STENCIL_PRECISIONS = pytest.mark.parametrize(
    "dtype,math", [("float32", 0), ("float32", 1), ("bfloat16", 0), ("float16", 0)],
    ids=["float32", "tf32", "bfloat16", "float16"])


def stencil_case(rng, case, dtype: str, math: int, layout: int):
    """Case (x_shape, w_shape, kwargs) with bias on every other index, on a GPU: its config, each operation's plan
    for a caller holding `layout`, float64 operands already rounded to dtype, and the adapter's trailing arguments."""
    import types

    from jaxconv3d import _plan, conv_config

    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    index, (x_shape, w_shape, kw) = case
    bias = index % 2 == 0
    cfg = conv_config(x_shape, w_shape, (w_shape[0],) if bias else None, precision="tf32" if math else None, **kw)
    tdt = TORCH_DTYPES[dtype]
    cc = _plan.cc_of(torch.device("cuda"))
    rounded = lambda shape: torch.as_tensor(rng.standard_normal(shape)).to(tdt).double()  # noqa: E731
    stream = torch.cuda.current_stream().cuda_stream
    return types.SimpleNamespace(
        cfg=cfg, kw=kw, tdt=tdt,
        plans={op: _plan.plan(cfg, tdt, cc, op, layout) for op in ("forward", "grad_input", "grad_weight")},
        x=rounded(x_shape), w=rounded(w_shape), dy=rounded(cfg.y_shape), b=rounded((w_shape[0],)) if bias else None,
        attrs=(cfg.stride, cfg.pad_lo, cfg.pad_hi, cfg.dilation, cfg.groups, math, layout, stream),
    )


@functools.cache
def _flax_cannot_run() -> str:
    """Why the installed flax cannot run its own layers with the installed jax ("" when it can), found once."""
    import flax
    import jax.numpy as jnp
    try:
        from flax import linen, nnx

        nnx.Conv(1, 1, (1, 1, 1), rngs=nnx.Rngs(0))
        linen.Conv(1, (1, 1, 1)).init(jax.random.key(0), jnp.zeros((1, 1, 1, 1, 1)))
    except (AttributeError, ImportError, TypeError) as error:
        return f"flax {flax.__version__} does not run with jax {jax.__version__}: {error}"
    return ""


def working_flax():
    """flax, or a skip when the installed flax cannot run its own layers with the installed jax (flax 0.12.8 on
    jax 0.11 fails inside nnx.Variable): the comparisons with flax's layers are then impossible, which is not ours
    to fix. The skip names both versions."""
    flax = pytest.importorskip("flax")
    if _flax_cannot_run():
        pytest.skip(_flax_cannot_run())
    return flax
