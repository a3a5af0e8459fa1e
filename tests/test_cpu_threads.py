"""JAXCONV3D_CPU_THREADS and thread start failures: the CPU kernels never abort the process (each case runs in a
fresh interpreter, since the variable is read by the C++ side and an abort would take pytest down)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = """
import resource, sys
import torch, torch.nn.functional as F
import jaxconv3d.torch as jt
g = torch.Generator().manual_seed(0)
x, w = torch.randn(2, 16, 16, 16, 16, generator=g), torch.randn(16, 16, 3, 3, 3, generator=g)
want = torch.load(sys.argv[1]) if sys.argv[2] == "compare" else None
margin_mib = int(sys.argv[-1])
if margin_mib:  # leave too little address space for the thread stacks the call would start
    with open("/proc/self/status") as f:
        vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + margin_mib * 2**20, resource.RLIM_INFINITY))
y = jt.conv3d(x, w, padding=1)
resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
if want is None:
    torch.save(y, sys.argv[1])
else:
    assert torch.equal(y, want), "results differ"
print("ok")
"""


def _run(threads: str | None, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("JAXCONV3D_CPU_THREADS", None)
    if threads is not None:
        env["JAXCONV3D_CPU_THREADS"] = threads
    return subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), *argv], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("threads") / "y.pt")
    r = _run("1", path, "make", "0")
    assert r.returncode == 0, r.stderr
    return path


@pytest.mark.parametrize("threads,margin_mib", [("100000", 0), ("100000", 4), ("100000", 12), ("3", 4)])
def test_many_threads_or_failed_starts_do_not_abort(reference, threads, margin_mib):
    """A huge count is capped; a thread that cannot start (no room for its stack) is done without; the result is the
    same bits as with one thread."""
    r = _run(threads, reference, "compare", str(margin_mib))
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert r.stdout.strip() == "ok"


@pytest.mark.parametrize("value", ["abc", "-2", "0", "4x", "99999999999999999999999"])
def test_malformed_value_warns_naming_the_variable(reference, value):
    r = _run(value, reference, "compare", "0")
    assert r.returncode == 0, r.stderr
    assert "JAXCONV3D_CPU_THREADS" in r.stderr and repr(value).strip("'") in r.stderr
