"""Argument normalisation shared by both fronts (jaxconv3d._params)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxconv3d._params import MATH_ACCURATE, MATH_TF32, conv_config, math_mode, padding_pairs, triple


def test_triples():
    assert triple(2, "stride", minimum=1) == (2, 2, 2)
    assert triple((1, 2, np.int64(3)), "stride", minimum=1) == (1, 2, 3)
    with pytest.raises(TypeError, match="stride must be an int or a tuple of 3 ints"):
        triple((1, 2), "stride", minimum=1)
    with pytest.raises(TypeError):
        triple(True, "stride", minimum=1)


@pytest.mark.parametrize(
    "padding,expected",
    [
        (1, ((1, 1, 1), (1, 1, 1))),
        ((0, 1, 2), ((0, 1, 2), (0, 1, 2))),
        (((1, 0), (0, 2), (3, 1)), ((1, 0, 3), (0, 2, 1))),
        ("valid", ((0, 0, 0), (0, 0, 0))),
        # torch puts the odd extra element of "same" on the high side
        ("same", ((1, 0, 3), (1, 1, 3))),
    ],
)
def test_padding_forms(padding, expected):
    assert padding_pairs(padding, kernel=(3, 2, 4), stride=(1, 1, 1), dilation=(1, 1, 2)) == expected


def test_same_padding_keeps_shape():
    cfg = conv_config((1, 2, 7, 8, 9), (3, 2, 4, 3, 2), None, padding="same", dilation=(2, 1, 3))
    assert cfg.out_spatial == (7, 8, 9)


def test_output_shape_and_flops():
    cfg = conv_config((16, 3, 64, 64, 64), (64, 3, 3, 3, 3), None)
    assert cfg.y_shape == (16, 64, 62, 62, 62)
    assert abs(cfg.flops() / 1e9 - 39.54) < 0.01  # the suite's kb54 GFLOP count


@pytest.mark.parametrize(
    "precision,mode",
    [(None, MATH_ACCURATE), ("highest", MATH_ACCURATE), ("tf32", MATH_TF32),
     (jax.lax.Precision.HIGHEST, MATH_ACCURATE), (jax.lax.Precision.DEFAULT, MATH_TF32),
     ((jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST), MATH_ACCURATE)],
)
def test_precision(precision, mode):
    assert math_mode(precision) == mode
