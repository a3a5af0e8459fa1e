"""The Examples in the public docstrings run and print what they say (doctest), for both fronts and the optional
layers (skipped where their framework is not installed)."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

from helpers import working_flax

MODULES = [
    "jaxconv3d._jax_api",  # conv3d
    "jaxconv3d._transpose",  # conv_transpose3d
    "jaxconv3d._ffi",  # export_disabled_checks
    "jaxconv3d._spatial",  # halo_exchange, sharded_conv3d, sharded_conv_transpose3d (examples need a mesh: skipped)
    "jaxconv3d._plan",  # explain
    "jaxconv3d._params",  # conv_config
    "jaxconv3d.torch",  # conv3d, Conv3d, convert_conv3d
    "jaxconv3d.torch._transpose",  # conv_transpose3d, ConvTranspose3d
    "jaxconv3d.flax",
    "jaxconv3d.equinox",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    framework = {"jaxconv3d.flax": "flax", "jaxconv3d.equinox": "equinox"}.get(name)
    if framework == "flax":
        working_flax()  # flax's own layers must run with this jax
    elif framework:
        pytest.importorskip(framework)
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 or name == "jaxconv3d._spatial", f"{name} has no examples"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"
