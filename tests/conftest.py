"""Shared test set-up: float64 references, error metrics, devices.

Import order matters on GPU machines (torch before JAX initialises its backend), and JAX must not take 75% of
GPU memory away from torch.
"""

from __future__ import annotations

import os
import zlib

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

from helpers import has_cuda  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="no CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_cuda():
            item.add_marker(skip_gpu)



# Every random draw in the suite is seeded: from JAXCONV3D_TEST_SEED when set (to reproduce a failure or to try
# fresh seeds), else a fixed default. The seed is printed in the report header; each test derives its own stream from
# (seed, test id), so a test's data does not depend on which other tests run.
TEST_SEED = int(os.environ.get("JAXCONV3D_TEST_SEED", "20261126"))


def pytest_report_header(config):
    return f"jaxconv3d test seed: {TEST_SEED} (set JAXCONV3D_TEST_SEED to change it)"


def _test_seed(request) -> int:
    return (TEST_SEED * 1_000_003 + zlib.crc32(request.node.nodeid.encode())) % 2**63


@pytest.fixture(autouse=True)
def _seed_torch(request):
    """torch.randn & co. in tests draw from a per-test seeded stream."""
    torch.manual_seed(_test_seed(request))


@pytest.fixture
def rng(request):
    return np.random.default_rng(_test_seed(request))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.sections.append(("jaxconv3d seed", f"JAXCONV3D_TEST_SEED={TEST_SEED}"))
