"""scripts/fresh_seeds.py, the flakiness check of issue 10: shards cover the test files once each, a pass counts only
when it ran, and the summary line and exit status say what happened."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import ROOT, script_module


def _module():
    return script_module("fresh_seeds")


def test_shards_cover_every_test_file_once():
    mod = _module()
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
    for shards in (1, 3, 7):
        parts = mod.shard_files(["tests"], shards)
        assert len(parts) == (1 if shards == 1 else shards)
        if shards > 1:
            assert sorted(f for part in parts for f in part) == files
            sizes = [sum((ROOT / f).stat().st_size for f in part) for part in parts]
            assert max(sizes) - min(sizes) <= max((ROOT / f).stat().st_size for f in files)
    assert mod.shard_files(["tests/test_params.py"], 3) == [["tests/test_params.py"]]  # a file is not split


def test_a_pass_line_sums_its_shards():
    mod = _module()
    tails = ["366 passed, 14 warnings in 224.29s (0:03:44)", "1070 passed, 376 skipped in 347.00s (0:05:46)",
             "1 failed, 353 passed, 18 skipped, 1 error in 311.97s"]
    assert mod.pass_summary(tails) == "1789 passed, 14 warnings, 394 skipped, 1 failed, 1 errors over 3 shards"
    assert mod.pass_summary(tails[1:2]) == "1070 passed, 376 skipped"


def _run(n: int, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "fresh_seeds.py"), str(n), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": "", **env})


def test_passes_are_counted_and_a_deadline_is_not_a_pass(tmp_path):
    done = _run(2, "tests/test_params.py", OUT=str(tmp_path), FRESH_SEED_BASE="7", JOBS_PER_GPU="2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fresh seeds: 2/2" in done.stdout and "from seed 7" in done.stdout
    assert "2 process(es) at once" in done.stdout  # JOBS_PER_GPU, counted as one "GPU" without one
    assert {p.name for p in (tmp_path / "seeds").iterdir()} == {"pass_0.log", "pass_1.log"}
    late = _run(1, "tests/test_params.py", OUT=str(tmp_path), DEADLINE="0.001")
    assert late.returncode == 1 and "fresh seeds: 0/1 (1 not finished by the deadline)" in late.stdout
