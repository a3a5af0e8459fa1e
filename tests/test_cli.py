"""The `jaxconv3d check` / `jaxconv3d bench` command line, run in-process on whatever device is present (CPU in CI)."""

from __future__ import annotations

import dataclasses
import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import jaxconv3d
from jaxconv3d import bench, bench_check, check, cli, timing, workloads


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
    assert {"method", "l2_cache_bytes", "interleaving", "result_check"} <= report["timing"].keys()
    (result,) = report["results"]
    assert result["config"] == "pointwise" and result["precision"] == "fp32"
    assert set(result["times"]) == {impl.key for impl in workloads.IMPLEMENTATIONS}
    for passes in result["times"].values():
        for pass_name in workloads.PASSES:
            entry = passes[pass_name]
            assert entry["median_ms"] > 0 and entry["loop_median_ms"] > 0 and entry["calls_per_loop"] >= 1
            assert len(entry["samples_ms"]) == 2
            assert entry["check"]["passed"] and entry["check"]["calls_checked"] == 2
    ops = result["times"]["xla"]["fwd_bwd"]["check"]["errors"]
    assert set(ops) == {"forward", "grad_input", "grad_weight"}  # pointwise has no bias
    assert result["summary"]["fwd"]["speedup"] > 0
    for layout in ("NCDHW", "NDHWC"):  # the dispatcher's choice per operation is recorded
        assert set(result["families"][layout]) == {"forward", "grad_input", "grad_weight", "grads"}
        if not torch.cuda.is_available():
            assert result["families"][layout]["forward"]["family"] == "cpu"
    ours = {impl.key for impl in workloads.IMPLEMENTATIONS if impl.ours}
    assert result["summary"]["fwd"]["best_ours"] in ours
    assert {"jaxconv3d_torch", "jaxconv3d_torch_ndhwc", "jaxconv3d_jax", "jaxconv3d_jax_ndhwc"} == ours


def _bench_one(tmp_path, *extra):
    path = tmp_path / "bench.json"
    args = ["bench", "--reps", "2", "--configs", "pointwise", "--precision", "fp32", "--json", str(path), *extra]
    code = cli.main(args)
    return code, json.loads(path.read_text())["results"][0]


def test_bench_times_everyone_with_one_timer(tmp_path, monkeypatch):
    # A clock that reads the number of calls made so far (seconds): a loop of k calls then lasts k seconds whatever
    # runs in it, so every implementation's every sample is exactly 1000 ms a call (and its loop estimate too) if
    # (and only if) it was timed by this timer.
    made, calls = [], [0]
    timed_pass_functions = bench.pass_functions

    def counting(impl, conv):
        def count(fn):
            return lambda ops: (calls.__setitem__(0, calls[0] + 1), fn(ops))[1]
        return {name: count(fn) for name, fn in timed_pass_functions(impl, conv).items()}

    def one_timer(torch_device):
        made.append(timing.LoopTimer(torch_device, clock=lambda: float(calls[0])))
        return made[-1]

    monkeypatch.setattr(bench, "pass_functions", counting)
    monkeypatch.setattr(bench, "LoopTimer", one_timer)
    code, result = _bench_one(tmp_path)
    assert code == 0 and len(made) == 1
    for passes in result["times"].values():
        for entry in passes.values():
            assert entry["samples_ms"] == [1000.0, 1000.0] and entry["calls_per_loop"] == 1
            assert entry["loop_median_ms"] == 1000.0


def test_loop_timer_synchronises_and_divides_by_calls():
    ticks = iter([10.0, 10.5])
    timer = timing.LoopTimer(torch.device("cpu"), clock=lambda: next(ticks))
    seen = []
    ms, last = timer.loop(lambda ops: seen.append(ops) or ops, ["a", "b", "c"], calls=5, first=2)
    assert ms == 100.0 and seen == ["c", "a", "b", "c", "a"] and last == "a"
    assert list(timing._one_two_five(60)) == [1, 2, 5, 10, 20, 50, 60]


def test_a_sample_cancels_the_loops_fixed_cost():
    # 0.3 s of fixed cost a loop (first-call latency, synchronisation) and 0.1 s a call: the 5-call loop lasts
    # 0.8 s, the 10-call loop 1.3 s. The sample is 100 ms a call; the loop estimate keeps 30 ms of the fixed cost.
    # The untimed call before them takes the first input set.
    ticks = iter([10.0, 10.8, 20.0, 21.3])
    timer = timing.LoopTimer(torch.device("cpu"), clock=lambda: next(ticks))
    seen = []
    sample = timer.sample(lambda ops: seen.append(ops) or ops, ["a", "b", "c"], calls=5, first=2)
    assert sample.ms == pytest.approx(100.0) and sample.loop_ms == pytest.approx(130.0)
    assert sample.calls == 16 and seen == ["c"] + ["a", "b", "c"] * 5 and sample.result == "c"


def test_a_sample_whose_long_loop_is_not_longer_is_measured_again():
    # Host noise: the first try's 10-call loop (0.7 s) is shorter than its 5-call loop (0.9 s): measured again; the
    # second try is sane (0.8 s, 1.3 s). Three insane tries in a row give the loop estimate, flagged.
    ticks = iter([0.0, 0.9, 1.0, 1.7, 10.0, 10.8, 20.0, 21.3])
    timer = timing.LoopTimer(torch.device("cpu"), clock=lambda: next(ticks))
    sample = timer.sample(lambda ops: ops, ["a", "b"], calls=5)
    assert sample.ms == pytest.approx(100.0) and not sample.fallback and sample.calls == 32
    ticks = iter([0.0, 1.0, 2.0, 2.5] * timing.PAIR_TRIES)
    timer = timing.LoopTimer(torch.device("cpu"), clock=lambda: next(ticks))
    sample = timer.sample(lambda ops: ops, ["a", "b"], calls=5)
    assert sample.fallback and sample.ms == sample.loop_ms == pytest.approx(50.0)
    assert sample.calls == 16 * timing.PAIR_TRIES


def test_interleaved_order_is_a_reproducible_shuffle_per_repetition():
    orders = [bench.interleaved_order(12, rep, seed=0) for rep in range(6)]
    assert all(sorted(order) == list(range(12)) for order in orders)
    assert len({tuple(order) for order in orders}) == 6  # not one block order repeated
    assert orders == [bench.interleaved_order(12, rep, seed=0) for rep in range(6)]
    assert orders != [bench.interleaved_order(12, rep, seed=1) for rep in range(6)]

    # measure_units times the units in exactly that order, one loop each per repetition, after every warm-up.
    log = []
    impl = workloads.IMPLEMENTATIONS[0]
    units = [
        bench.Unit(impl, "fwd", lambda ops, i=i: log.append(i) or torch.zeros(1), [None], bench_check.ResultCheck(1.0))
        for i in range(4)
    ]
    reference = {"forward": torch.zeros(1)}
    timer = timing.LoopTimer(torch.device("cpu"), min_loop_ms=0.0, clock=lambda: float(len(log)))  # a call a second
    bench.measure_units(units, timer, [reference], reps=3, seed=7)
    warm_up = [i for i in range(4) for _ in range(bench.WARMUP_CALLS + 1)]  # + the one calibration loop
    # each sample: an untimed call, a loop of one call, then one of two
    assert log == warm_up + [i for rep in range(3) for i in bench.interleaved_order(4, rep, seed=7) for _ in range(4)]
    assert all(unit.check.passed and len(unit.samples_ms) == 3 for unit in units)


def test_bench_flags_wrong_results(tmp_path, monkeypatch, capsys):
    def slightly_wrong(make_conv):
        def make(case, precision, *layout):
            conv = make_conv(case, precision, *layout)
            return lambda x, w, b: conv(x, w, b) * (1 + 1e-3)  # 10x the fp32 bound; gradients scaled too

        return make

    wrong = {"jaxconv3d_torch", "xla"}
    implementations = tuple(
        dataclasses.replace(impl, make_conv=slightly_wrong(impl.make_conv)) if impl.key in wrong else impl
        for impl in workloads.IMPLEMENTATIONS
    )
    monkeypatch.setattr(bench, "IMPLEMENTATIONS", implementations)
    code, result = _bench_one(tmp_path)
    assert code == 1  # one of ours is wrong
    for key, passes in result["times"].items():
        for pass_name, entry in passes.items():
            if key in wrong:
                assert entry["wrong_result"] and entry["error"].startswith("wrong result")
                assert "median_ms" not in entry and not entry["check"]["passed"]
            else:
                assert entry["median_ms"] > 0 and entry["check"]["passed"]
    for summary in result["summary"].values():
        assert summary["best_ours"] not in wrong and summary["best_reference"] not in wrong
    out = capsys.readouterr().out
    assert "WRONG" in out and "error: pointwise fp32 jaxconv3d_torch fwd: wrong result: forward rel err" in out


def test_result_check_flags_nan_wrong_shape_and_missing_gradient():
    cpu, ones = torch.device("cpu"), torch.ones
    reference = {"forward": ones(2, 3), "grad_input": ones(2), "grad_weight": ones(1), "grad_bias": None}
    assert bench_check.result_errors(ones(2, 3), "fwd", reference, cpu)["forward"].within(1e-12)
    with_nan = ones(2, 3)
    with_nan[1, 2] = math.nan
    assert not bench_check.result_errors(with_nan, "fwd", reference, cpu)["forward"].within(1.0)
    with pytest.raises(ValueError, match="shape"):
        bench_check.result_errors(ones(3, 2), "fwd", reference, cpu)
    with pytest.raises(ValueError, match="grad_input"):
        bench_check.result_errors((ones(2, 3), None, ones(1), None), "fwd_bwd", reference, cpu)


def test_l2_size_read_from_the_card(monkeypatch):
    cuda0 = torch.device("cuda", 0)
    card = types.SimpleNamespace(L2_cache_size=2**20)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: card)
    assert timing.l2_cache_bytes(cuda0) == 2**20
    card.L2_cache_size = 0
    assert timing.l2_cache_bytes(cuda0) == timing.DEFAULT_L2_BYTES == 50 * 2**20
    assert timing.l2_cache_bytes(torch.device("cpu")) == timing.DEFAULT_L2_BYTES

    case, fp32 = workloads.BUILTIN_SUITE[1], workloads.PRECISIONS["fp32"]  # unet_64: x + w = 128 MiB, dy too
    assert timing.input_set_count(case, fp32, l2_bytes=50 * 2**20) == 1
    assert timing.input_set_count(case, fp32, l2_bytes=256 * 2**20) == 2  # fits: rotate so 2 x L2 is streamed
    small = workloads.scale_for_cpu(case)
    assert timing.input_set_count(small, fp32, 2**20) < timing.input_set_count(small, fp32, 8 * 2**20)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_bench_reference_uses_raw_arguments():
    # Asymmetric pairs go through F.pad, "same" through F.conv3d itself: neither through jaxconv3d's normalisation.
    for name in ("stride2_asym_pad", "depthwise_same", "dilated"):
        case = next(c for c in workloads.COVERAGE_CASES if c.name == name)
        ops = workloads.random_operands(case, torch.float64, torch.device("cpu"), seed=0)
        expected = workloads.torch_conv(case)(ops.x, ops.w, ops.b)
        torch.testing.assert_close(bench_check.reference_conv(case)(ops.x, ops.w, ops.b), expected)


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


# ---- command-line options: --version, --list, --json's folder, -q / -v


def _no_run(*args, **kwargs):
    raise AssertionError("the command ran")


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"jaxconv3d {jaxconv3d.__version__}\n"


@pytest.mark.parametrize("argv", [["--list"], ["check", "--list"], ["bench", "--suite", "--list"]])
def test_list_shows_the_configurations_and_exits(argv, capsys, monkeypatch):
    monkeypatch.delenv(workloads.SUITE_ENV_VAR, raising=False)
    monkeypatch.setattr(cli, "run_check", _no_run)
    monkeypatch.setattr(cli, "run_bench", _no_run)
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert str(workloads.SHIPPED_SUITE) in lines[0]
    for case in (*workloads.BUILTIN_SUITE, *workloads.COVERAGE_CASES):
        (line,) = [line for line in lines if line.split()[0] == case.name]
        assert case.describe() in line
    (down_s2,) = [line for line in lines if line.split()[0] == "down_s2"]
    assert down_s2.endswith("-> " + workloads.scale_for_cpu(workloads.BUILTIN_SUITE[4]).describe())


def test_a_command_is_required_without_list(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2 and "a command is required" in capsys.readouterr().err


def test_json_folder_is_created(tmp_path, capsys):
    path = tmp_path / "new" / "deeper" / "check.json"
    assert cli.main(["check", "--configs", "basic_bias", "--precision", "fp32", "--json", str(path)]) == 0
    assert json.loads(path.read_text())["command"] == "check"
    assert f"wrote {path}" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["check", "bench"])
def test_unwritable_json_path_fails_before_the_run(command, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "run_check", _no_run)
    monkeypatch.setattr(cli, "run_bench", _no_run)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for bad in (blocker / "out.json", tmp_path):  # folder under a file; a folder as the path
        assert cli.main([command, "--configs", "pointwise", "--json", str(bad)]) == 2
        assert f"jaxconv3d {command}: error: --json {bad}" in capsys.readouterr().err


@pytest.mark.parametrize("position", ["before", "after"])
def test_quiet_prints_only_the_table_and_verdict(position, capsys):
    args = ["check", "--configs", "basic_bias", "--precision", "fp32"]
    argv = ["-q", *args] if position == "before" else [*args, "-q"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split()[:3] == ["config", "prec", "op"]  # no header, no configuration list
    assert "all 5 checks passed" in lines[-1] and "rel err =" not in captured.out
    assert captured.err == ""


def test_normal_and_verbose_output(tmp_path, capsys):
    from jaxconv3d import report

    args = ["check", "--configs", "basic_bias", "--precision", "fp32"]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("jaxconv3d check on ") and "rel err =" in captured.out
    assert "check 1/1" not in captured.err  # stderr is no terminal here: no progress bar either

    path = tmp_path / "bench.json"
    assert cli.main(["bench", "-v", "--reps", "2", "--configs", "pointwise", "--precision", "fp32", "--json", str(path)]) == 0
    captured = capsys.readouterr()
    assert "bench 1/2 pointwise fp32" in captured.err and "bench 2/2 pointwise fp32" in captured.err
    assert captured.out.startswith("jaxconv3d bench on ") and f"wrote {path}" in captured.out
    assert report.verbosity == report.NORMAL  # restored after the command

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["check", "-q", "-v"])
    assert exit_info.value.code == 2


# ---- the suite shipped with the package


def test_shipped_suite_loads_the_seven_configurations(monkeypatch):
    monkeypatch.delenv(workloads.SUITE_ENV_VAR, raising=False)
    assert workloads.find_suite() == workloads.SHIPPED_SUITE
    assert workloads.SHIPPED_SUITE.parent == Path(jaxconv3d.__file__).resolve().parent / "data"
    cases, source = workloads.load_suite()
    assert source == str(workloads.SHIPPED_SUITE)
    assert [c.name for c in cases] == ["kb54", "unet_64", "unet_256", "video_c3d", "down_s2", "depthwise", "pointwise"]
    assert cases == workloads.BUILTIN_SUITE  # same shapes as the built-in copy (baselines are not compared)
    assert all(case.baseline_h100 for case in cases)  # and the H100 baselines come with it


def test_general_suite_takes_per_axis_arguments_as_the_fronts_do(monkeypatch):
    """data/general.json (shapes outside the suite: stems, non-cubic kernels) writes per-axis stride and padding as
    JSON lists; they load as tuples, the form F.conv3d and both fronts take and the fast path accepts."""
    monkeypatch.setenv(workloads.SUITE_ENV_VAR, str(workloads.SHIPPED_SUITE.parent / "general.json"))
    cases = {c.name: c for c in workloads.load_suite()[0]}
    assert set(cases) == {"stem7_s2", "i3d_stem", "r21d_spatial", "r21d_temporal"}
    stem = cases["i3d_stem"]
    assert stem.stride == (1, 2, 2) and stem.padding == (1, 3, 3) and stem.kernel == (3, 7, 7)
    assert stem.problem.y_shape == (2, 64, 16, 56, 56)
    assert workloads._per_axis([[1, 2], [0, 0], 3]) == ((1, 2), (0, 0), 3) and workloads._per_axis("same") == "same"


def test_package_is_marked_typed():
    assert (Path(jaxconv3d.__file__).resolve().parent / "py.typed").is_file()


def _bench_json(path: Path) -> Path:
    """A small bench JSON with two configurations and two precisions (speedups above and below 1)."""
    results = [
        {"config": c, "precision": p, "summary": {"fwd": {"speedup": s}, "fwd_bwd": {"speedup": s * 1.1}}}
        for c, p, s in (("a", "bf16", 0.5), ("a", "fp32", 1.5), ("b", "bf16", 2.0), ("b", "fp32", 0.8))
    ]
    path.write_text(json.dumps({"environment": {"device": "test card"}, "results": results}))
    return path


def test_plot_speedups_are_read_from_the_summaries(tmp_path):
    from jaxconv3d import plot

    table = plot.speedups(json.loads(_bench_json(tmp_path / "b.json").read_text()))
    assert table["fwd"][("b", "bf16")] == 2.0 and table["fwd_bwd"][("a", "fp32")] == pytest.approx(1.65)
    assert plot.geomean([0.5, 2.0]) == pytest.approx(1.0)


def test_plot_command_draws_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "out" / "speedups.png"
    assert cli.main(["plot", str(_bench_json(tmp_path / "b.json")), str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert f"wrote {png}" in capsys.readouterr().out


def test_plot_rejects_a_json_without_speedups(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"results": []}))
    assert cli.main(["plot", str(empty), str(tmp_path / "x.png")]) == 2
    assert "no speedups to plot" in capsys.readouterr().err


def test_plot_without_matplotlib_fails_before_a_bench_run(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    ran = []
    monkeypatch.setattr(cli, "run_bench", lambda *a, **k: ran.append(a) or 0)
    assert cli.main(["bench", "--configs", "pointwise", "--json", str(tmp_path / "b.json"), "--plot",
                     str(tmp_path / "p.png")]) == 2
    assert "pip install matplotlib" in capsys.readouterr().err and not ran


def test_bench_plot_draws_after_the_run(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    json_path, png = tmp_path / "b.json", tmp_path / "p.png"
    monkeypatch.setattr(cli, "run_bench", lambda configs, suite, precisions, path, reps, seed: _bench_json(Path(path))
                        and 0)
    assert cli.main(["bench", "--json", str(json_path), "--plot", str(png)]) == 0
    assert png.exists()


def test_command_without_torch_says_what_to_install(monkeypatch, capsys):
    """The `jaxconv3d` command on a JAX-only install: --version works, the commands explain instead of a traceback."""
    import sys

    from jaxconv3d import command

    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` sees where torch is not installed
    assert command.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"jaxconv3d {jaxconv3d.__version__}"
    assert command.main(["bench", "--suite"]) == 2
    assert "pip install 'jaxconv3d[torch]'" in capsys.readouterr().err


def test_command_runs_the_cli_where_torch_is_installed(capsys):
    from jaxconv3d import command

    assert command.main(["--list"]) == 0
    assert "kb54" in capsys.readouterr().out


def test_every_implementation_of_a_pass_loops_the_same_number_of_calls():
    # calls_per_loop picks 1 for a 3 ms call and 2 for a 0.6 ms one; the pass then loops max(1, 2) calls for both,
    # so neither implementation's first-call latency is spread over more calls than the other's.
    impl = workloads.IMPLEMENTATIONS[0]
    now = [0.0]
    cost = {"slow": 3.0, "fast": 0.6, "bwd": 0.15}

    def call(name):
        def fn(ops):
            now[0] += cost[name] / 1e3
            return torch.zeros(1)
        return fn

    units = [bench.Unit(impl, pass_name, call(name), [None], bench_check.ResultCheck(1.0))
             for name, pass_name in (("slow", "fwd"), ("fast", "fwd"), ("bwd", "fwd_bwd"))]
    timer = timing.LoopTimer(torch.device("cpu"), min_loop_ms=1.0, clock=lambda: now[0])
    for unit in units:
        bench.warm_up(unit, timer)
    assert [unit.calls for unit in units] == [1, 2, 10]
    bench.share_calls(units)
    assert [unit.calls for unit in units] == [2, 2, 10]


def test_overhead_probe_times_every_row_and_its_torch_counterpart():
    from jaxconv3d import overhead

    measured = dict(overhead.rows(calls=10))
    assert len(measured) == 11 and all(math.isfinite(us) and us > 0 for us in measured.values())
    for ours, theirs in [("jaxconv3d.torch.conv3d", "torch F.conv3d (cuDNN on GPU)"),
                         ("step: jaxconv3d.torch.conv3d, grads of x, w, b", "step: torch F.conv3d, grads of x, w, b"),
                         ("jax.jit(jaxconv3d.conv3d) dispatch", "jax.jit(lax.conv_general_dilated) dispatch")]:
        assert ours in measured and theirs in measured
