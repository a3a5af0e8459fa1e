"""Every gradient, every order, on both fronts, in float64: numerical second- (and third-) order checks, each mixed
second derivative d/d(phi) ||dL/d(theta)||^2 for theta, phi in (x, w, b) against the references' own autodiff, and
every subset of inputs that need a gradient in torch.

The torch front has two differentiable paths: eager calls take the autograd.Functions of _ops.py, compiled calls the
torch.library custom ops of _library.py (their autograd rules also run eagerly when the op is called directly)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import pytest
import torch
from jax.test_util import check_grads

import jaxconv3d
import jaxconv3d.torch as jt
from helpers import assert_close
from jaxconv3d import conv_config
from jaxconv3d.torch import _library, _ops
from refs import lax_conv64, reference_and_grads, torch_conv64

# Small, but asymmetric, strided, dilated and grouped; two output channels per group.
X_SHAPE, W_SHAPE = (2, 4, 4, 5, 4), (4, 2, 2, 3, 2)
KW = dict(stride=(1, 2, 1), padding=((1, 0), (2, 1), (0, 2)), dilation=(2, 1, 1), groups=2)
TINY_X, TINY_W = (1, 2, 3, 4, 3), (2, 1, 2, 2, 2)
TINY_KW = dict(stride=(1, 2, 1), padding=((1, 0), (0, 1), (1, 1)), groups=2)
NAMES = ("x", "w", "b")


def data(rng, x_shape=X_SHAPE, w_shape=W_SHAPE):
    return rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])


def library_conv3d(x, w, b, **kw):
    """The custom-op path of torch.compile, called eagerly (its autograd rules are _library's)."""
    cfg = conv_config(x.shape, w.shape, None if b is None else b.shape, **kw)
    return _library.conv3d(x, w, b, *_ops._attrs(cfg))


TORCH_PATHS = {"eager": jt.conv3d, "library": library_conv3d}


# ---- JAX


@pytest.mark.parametrize("order", [1, 2])
def test_jax_check_grads(rng, order):
    x, w, b = data(rng)
    check_grads(lambda x_, w_, b_: jaxconv3d.conv3d(x_, w_, b_, **KW), (x, w, b), order=order, modes=["rev"])


def test_jax_check_grads_third_order(rng):
    x, w, b = data(rng, TINY_X, TINY_W)
    check_grads(lambda x_, w_, b_: jaxconv3d.conv3d(x_, w_, b_, **TINY_KW), (x, w, b), order=3, modes=["rev"])


def _penalty(conv, theta: int, phi: int, front: str):
    """phi -> ||dL/d theta||^2 at fixed other arguments, L = sum(sin(conv(x, w, b)))."""
    if front == "jax":
        loss = lambda *a: jnp.sum(jnp.sin(conv(*a)))  # noqa: E731

        def penalty(args):
            g = jax.grad(loss, argnums=theta)(*args)
            return jnp.sum(g**2)

        return lambda args: jax.grad(lambda v: penalty(args[:phi] + (v,) + args[phi + 1 :]))(args[phi])

    def torch_penalty(args):
        leaves = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in args]
        (g,) = torch.autograd.grad(conv(*leaves).sin().sum(), leaves[theta], create_graph=True)
        (d,) = torch.autograd.grad(g.square().sum(), leaves[phi])
        return d

    return torch_penalty


PAIRS = list(itertools.product(range(3), range(3)))
PAIR_IDS = [f"d{NAMES[p]}_of_grad{NAMES[t]}" for t, p in PAIRS]


@pytest.mark.parametrize("theta,phi", PAIRS, ids=PAIR_IDS)
def test_jax_gradient_penalties(rng, theta, phi):
    """E.g. d/dw ||dL/dx||^2 (the gradient penalty) needs grad-input's backward rule in w; d/dx ||dL/db||^2 needs
    grad-bias's backward rule."""
    args = data(rng)
    ours = _penalty(lambda *a: jaxconv3d.conv3d(*a, **KW), theta, phi, "jax")(args)
    want = _penalty(lambda *a: lax_conv64(*a, **KW), theta, phi, "jax")(args)
    assert_close(ours, want, 1e-11, PAIR_IDS[PAIRS.index((theta, phi))])


@pytest.mark.parametrize("argnums", [0, 1, 2, (0, 2), (1, 2), (0, 1, 2)])
def test_jax_grad_subsets(rng, argnums):
    args = data(rng)
    loss = lambda fn: lambda *a: jnp.sum(jnp.sin(fn(*a)))  # noqa: E731
    got = jax.grad(loss(lambda *a: jaxconv3d.conv3d(*a, **KW)), argnums=argnums)(*args)
    want = jax.grad(loss(lambda *a: lax_conv64(*a, **KW)), argnums=argnums)(*args)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert_close(g, r, 1e-12, f"argnums={argnums}")


# ---- torch


@pytest.mark.parametrize("path", TORCH_PATHS)
def test_torch_gradgradcheck(rng, path):
    x, w, b = (torch.tensor(a, requires_grad=True) for a in data(rng, TINY_X, TINY_W))
    conv = TORCH_PATHS[path]
    fn = lambda x_, w_, b_: conv(x_, w_, b_, **TINY_KW)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("theta,phi", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("path", TORCH_PATHS)
def test_torch_gradient_penalties(rng, path, theta, phi):
    args = data(rng)
    conv = TORCH_PATHS[path]
    ours = _penalty(lambda *a: conv(*a, **KW), theta, phi, "torch")(args)
    want = _penalty(lambda *a: torch_conv64(*a, **KW), theta, phi, "torch")(args)
    assert_close(ours, want, 1e-11, f"{path} {PAIR_IDS[PAIRS.index((theta, phi))]}")


SUBSETS = {"x_only": "x", "w_only": "w", "b_only": "b", "frozen_bias": "xw", "x_and_b": "xb", "all": "xwb",
           "none": ""}


@pytest.mark.parametrize("subset", SUBSETS)
@pytest.mark.parametrize("path", TORCH_PATHS)
def test_torch_requires_grad_subsets(rng, path, subset):
    """Only the inputs that need a gradient get one, and each is F.conv3d's."""
    x, w, b = data(rng)
    need = SUBSETS[subset]
    leaves = [torch.tensor(a, requires_grad=name in need) for a, name in zip((x, w, b), NAMES)]
    y = TORCH_PATHS[path](*leaves, **KW)
    ref_y, *ref_grads = reference_and_grads(x, w, b, torch.zeros(y.shape, dtype=torch.float64), **KW)
    assert_close(y, ref_y, 1e-12, "y")
    assert y.requires_grad == bool(need)
    if not need:
        return
    dy = torch.as_tensor(rng.standard_normal(y.shape))
    y.backward(dy)
    ref_grads = reference_and_grads(x, w, b, dy, **KW)[1:]
    for leaf, ref, name in zip(leaves, ref_grads, NAMES):
        if name in need:
            assert leaf.grad is not None, f"{subset}: no grad for {name}"
            assert_close(leaf.grad, ref, 1e-12, f"{subset} d{name}")
        else:
            assert leaf.grad is None, f"{subset}: {name} got a grad"


def test_torch_compile_input_only_and_weight_only(rng):
    """The compiled graph's backward with frozen weights (dx only) and with a frozen input (dw, db only)."""
    x, w, b = data(rng)
    dy = None
    torch._dynamo.reset()
    fn = torch.compile(lambda x_, w_, b_: jt.conv3d(x_, w_, b_, **KW), fullgraph=True, backend="aot_eager")
    for need in ("x", "wb"):
        leaves = [torch.tensor(a, requires_grad=name in need) for a, name in zip((x, w, b), NAMES)]
        y = fn(*leaves)
        dy = torch.as_tensor(rng.standard_normal(y.shape)) if dy is None else dy
        y.backward(dy)
        ref = reference_and_grads(x, w, b, dy, **KW)
        assert_close(y, ref[0], 1e-12, f"{need} y")
        for leaf, r, name in zip(leaves, ref[1:], NAMES):
            if name in need:
                assert leaf.grad is not None, f"compiled, {need} needed: no grad for {name}"
                assert_close(leaf.grad, r, 1e-12, f"compiled {need} d{name}")
            else:
                assert leaf.grad is None
