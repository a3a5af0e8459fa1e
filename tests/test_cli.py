"""The `jaxconv3d check` / `jaxconv3d bench` command line, run in-process on whatever device is present (CPU in CI)."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from jaxconv3d import check, cli, workloads


def test_check_passes_on_default_configs(tmp_path, capsys):
    path = tmp_path / "check.json"
    assert cli.main(["check", "--configs", "basic_bias,stride2_asym_pad", "--precision", "fp32,bf16", "--json", str(path)]) == 0
    assert "FAIL" not in capsys.readouterr().out
    report = json.loads(path.read_text())
    ops = {(r["config"], r["op"]) for r in report["results"]}
    assert ("basic_bias", "grad_bias") in ops and ("basic_bias", "torch vs lax") in ops
    assert all(r["passed"] for r in report["results"])


def test_bench_writes_positive_timings(tmp_path):
    path = tmp_path / "bench.json"
    assert cli.main(["bench", "--reps", "2", "--configs", "pointwise", "--precision", "fp32", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert {"environment", "timing", "reps", "results"} <= report.keys()
    assert {"device", "torch", "jax", "jaxconv3d"} <= report["environment"].keys()
    (result,) = report["results"]
    assert result["config"] == "pointwise" and result["precision"] == "fp32"
    assert set(result["times"]) == {impl.key for impl in workloads.IMPLEMENTATIONS}
    for passes in result["times"].values():
        for pass_name in workloads.PASSES:
            assert passes[pass_name]["median_ms"] > 0
            assert len(passes[pass_name]["samples_ms"]) == 2
    assert result["summary"]["fwd"]["speedup"] > 0
    for layout in ("NCDHW", "NDHWC"):  # the dispatcher's choice per operation is recorded
        assert set(result["families"][layout]) == {"forward", "grad_input", "grad_weight"}
        if not torch.cuda.is_available():
            assert result["families"][layout]["forward"]["family"] == "cpu"


def test_error_metric_flags_wrong_results():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(2, 3, 4, 5, 6))
    bound = check.ERROR_BOUNDS["fp32"]
    assert check.error(reference, reference).within(bound)
    assert check.error(reference * (1 + 1e-7), reference).within(bound)  # float32 rounding-sized error passes

    one_element_off = reference.copy()
    one_element_off.flat[17] += 1e-3 * np.abs(reference).max()
    assert not check.error(one_element_off, reference).within(bound)

    for bad in (math.nan, math.inf):
        broken = reference.copy()
        broken.flat[3] = bad
        assert not check.error(broken, reference).within(bound)
        assert not check.error(broken, reference).worst(check.Error(0.0, 0.0)).within(bound)


def test_bitwise_equal_sees_one_ulp_and_signed_zero():
    a = np.linspace(-1, 1, 11, dtype=np.float32)
    b = a.copy()
    assert check.bitwise_equal(a, b)
    b[4] = np.nextafter(b[4], np.float32(2))
    assert not check.bitwise_equal(a, b)
    assert not check.bitwise_equal(np.zeros(3), -np.zeros(3))


def test_check_catches_a_wrong_kernel(monkeypatch, capsys):
    correct = check.ours_torch

    def slightly_wrong(case, precision):
        conv = correct(case, precision)
        return lambda x, w, b: conv(x, w, b) * (1 + 1e-4)

    monkeypatch.setattr(check, "ours_torch", slightly_wrong)
    assert cli.main(["check", "--configs", "basic_bias", "--precision", "fp32"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and " NO" in out  # over the bound, and no longer bitwise equal to the JAX front


def test_channel_sliced_reference_agrees(monkeypatch):
    # Suite problems on a GPU get references on a few channels; force that path on small problems.
    monkeypatch.setattr(check, "FULL_REFERENCE_MAX_FLOPS", 0)
    case = next(c for c in workloads.COVERAGE_CASES if c.name == "pointwise_s321")
    operands = workloads.random_operands(case, torch.float64, torch.device("cpu"), seed=0)
    (out_ops, out_case, _), (in_ops, in_case, _) = check.reference_parts(case, operands)
    assert out_ops["forward"][1].tolist() == [0, 2, 4, 6] and out_case.out_channels == 4
    assert in_ops["grad_input"][1].tolist() == [0, 3, 6, 9] and in_case.in_channels == 4

    grouped = next(c for c in workloads.COVERAGE_CASES if c.name == "depthwise_same")
    operands = workloads.random_operands(grouped, torch.float64, torch.device("cpu"), seed=0)
    ((ops, sub_case, _),) = check.reference_parts(grouped, operands)
    assert sub_case.groups == 4 and ops["grad_input"][1].tolist() == [0, 2, 5, 7]

    configs = "basic_bias,pointwise_s321,depthwise_same"
    assert cli.main(["check", "--configs", configs, "--precision", "fp32,fp64"]) == 0


def test_cpu_scale_down_keeps_the_kind_of_problem():
    suite = {case.name: workloads.scale_for_cpu(case) for case in workloads.BUILTIN_SUITE}
    for case in suite.values():
        assert case.batch == 1
        assert max(case.in_channels, case.out_channels) <= workloads.CPU_MAX_CHANNELS
        assert math.prod(case.spatial) <= workloads.CPU_MAX_POSITIONS
        assert case.problem  # still a valid convolution
    assert suite["depthwise"].groups == suite["depthwise"].in_channels == 16
    assert suite["down_s2"].problem.stride == (2, 2, 2)


def test_suite_location_from_environment(tmp_path, monkeypatch):
    suite = {
        "configs": {
            "tiny": {"N": 1, "Cin": 2, "Cout": 3, "DHW": [4, 5, 6], "k": [3, 3, 3], "padding": 1, "groups": 1}
        }
    }
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    monkeypatch.setenv(workloads.SUITE_ENV_VAR, str(path))
    cases, source = workloads.load_suite()
    assert source == str(path) and [c.describe() for c in cases] == ["N1 C2->3 4x5x6 k3 p1"]

    monkeypatch.setenv(workloads.SUITE_ENV_VAR, str(tmp_path / "missing.json"))
    assert cli.main(["bench", "--suite"]) == 2
