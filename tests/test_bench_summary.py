"""The bench's closing summary (bench.speedup_summary): per precision and pass, the geomean and the minimum of best
reference / best of ours over configurations, and the largest best-of-ours / floor on the measured card."""

import math

import pytest

from jaxconv3d.bench import speedup_summary


def result(config, precision, fwd, fwd_bwd):
    def entry(pair):
        speedup, over_floor = pair
        return dict(speedup=speedup, ours_over_card_floor=over_floor)
    return dict(config=config, precision=precision, summary=dict(fwd=entry(fwd), fwd_bwd=entry(fwd_bwd)))


def test_geomean_minimum_and_worst_floor_ratio():
    s = speedup_summary([
        result("a", "fp32", (2.0, 1.2), (4.0, None)),
        result("b", "fp32", (0.5, 1.9), (1.0, None)),
        result("a", "bf16", (None, None), (3.0, 2.5)),  # a row with no reference timed: no speedup
    ])
    assert s["fp32"]["fwd"] == dict(geomean=pytest.approx(1.0), min=0.5, configs=2, worst_over_floor=1.9)
    assert s["fp32"]["fwd_bwd"] == dict(geomean=pytest.approx(2.0), min=1.0, configs=2, worst_over_floor=None)
    assert s["bf16"]["fwd"] == dict(geomean=None, min=None, configs=0, worst_over_floor=None)
    assert s["bf16"]["fwd_bwd"]["geomean"] == pytest.approx(3.0) and s["bf16"]["fwd_bwd"]["worst_over_floor"] == 2.5
    assert math.isclose(s["fp32"]["fwd"]["geomean"], math.sqrt(2.0 * 0.5))
