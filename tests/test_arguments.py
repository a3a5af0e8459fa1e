"""Argument handling that a cache could hide: a value that equals and hashes like an accepted one (True == 1,
1.0 == 1) must still be rejected after the accepted one was cached, through conv_config and both fronts, and
through ConvTranspose3d's argument handling."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxconv3d
import jaxconv3d.torch as jt
from jaxconv3d import conv_config
from jaxconv3d._transpose_params import transpose_config

X, W = (1, 2, 5, 5, 5), (2, 2, 3, 3, 3)
GOOD = dict(stride=1, padding=1, dilation=1, groups=1)
# (argument, a value equal to the good one that must be refused, exception)
LOOKALIKES = [
    ("stride", True, TypeError), ("stride", 1.0, TypeError), ("stride", (1, 1, True), TypeError),
    ("padding", True, TypeError), ("padding", 1.0, TypeError), ("padding", (1, 1.0, 1), TypeError),
    ("dilation", True, TypeError), ("dilation", 1.0, TypeError),
    ("groups", True, ValueError), ("groups", 1.0, ValueError),
]
IDS = [f"{arg}={value!r}" for arg, value, _ in LOOKALIKES]


@pytest.mark.parametrize("arg,value,exc", LOOKALIKES, ids=IDS)
def test_cached_value_does_not_admit_a_lookalike(arg, value, exc):
    good = dict(GOOD)
    if isinstance(value, tuple):
        good[arg] = tuple(int(v) for v in value)
    conv_config(X, W, None, **good)  # cached now
    with pytest.raises(exc):
        conv_config(X, W, None, **{**good, arg: value})
    x, w = np.ones(X, np.float32), np.ones(W, np.float32)
    jaxconv3d.conv3d(x, w, **good)
    with pytest.raises(exc):
        jaxconv3d.conv3d(jnp.asarray(x), jnp.asarray(w), **{**good, arg: value})
    xt, wt = torch.ones(X), torch.ones(W)
    jt.conv3d(xt, wt, **good)
    with pytest.raises(exc):
        jt.conv3d(xt, wt, **{**good, arg: value})


def test_numpy_ints_are_ints():
    a = conv_config(X, W, None, stride=np.int64(2), padding=(np.int32(1), 0, 1), groups=np.int64(1))
    assert a.stride == (2, 2, 2) and a.pad_lo == (1, 0, 1) and a.groups == 1


# ConvTranspose3d: the same rule for its own cache (output_padding too)
T_GOOD = dict(stride=2, padding=1, output_padding=1, groups=1, dilation=2)
T_LOOKALIKES = [
    ("stride", (1, 2, True), TypeError), ("stride", 2.0, TypeError), ("padding", (1, True, 1), TypeError),
    ("output_padding", True, TypeError), ("output_padding", (1, 1.0, 1), TypeError),
    ("dilation", (2, 2, True), TypeError),
    ("groups", True, ValueError),
]


@pytest.mark.parametrize("arg,value,exc", T_LOOKALIKES, ids=[f"{a}={v!r}" for a, v, _ in T_LOOKALIKES])
def test_transpose_cache_does_not_admit_a_lookalike(arg, value, exc):
    good = dict(T_GOOD)
    if isinstance(value, tuple):
        good[arg] = tuple(int(v) for v in value)
    elif arg == "stride":
        good[arg] = int(value)
    transpose_config((1, 2, 4, 4, 4), (2, 3, 3, 3, 3), None, **good)  # cached now
    with pytest.raises(exc):
        transpose_config((1, 2, 4, 4, 4), (2, 3, 3, 3, 3), None, **{**good, arg: value})
