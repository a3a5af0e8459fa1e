"""The bench's floors on the measured card (jaxconv3d/card_rates.py): at the H100 rates suite.json states, they are
suite.json's own floors, for every configuration, precision and pass."""

import pytest

from jaxconv3d import card_rates
from jaxconv3d.workloads import PRECISIONS, load_suite

H100 = dict(copy_tb_s=3.0, gemm_tflop_s=dict(fp32=51.0, tf32=395.0, bf16=746.0))


@pytest.mark.parametrize("pass_name", ["fwd", "fwd_bwd"])
def test_floors_at_the_h100_rates_are_the_suites(pass_name):
    checked = 0
    for case in load_suite()[0]:
        for name, recorded in (case.baseline_h100 or {}).items():
            want = recorded.get(f"floor_{pass_name}_ms")
            if want is None or name not in H100["gemm_tflop_s"]:
                continue
            got = card_rates.floor_ms(case, PRECISIONS[name], pass_name, H100)
            assert got == pytest.approx(want, rel=0.02, abs=0.0011), (case.name, name, pass_name)
            checked += 1
    assert checked >= 21  # seven configurations x three precisions


def test_no_rates_no_floor():
    case = load_suite()[0][0]
    assert card_rates.floor_ms(case, PRECISIONS["fp32"], "fwd", None) is None
    assert card_rates.floor_ms(case, PRECISIONS["fp16"], "fwd", H100) is None  # no fp16 GEMM rate measured
