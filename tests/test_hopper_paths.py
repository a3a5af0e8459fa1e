"""The Hopper family's kernels (cuda/hopper/, NDHWC) on the layers they exist for, which the small-channel cases of
the other GPU tests never reach: 64-channel forward, grad-input and grad-weight (split reduction) in bf16, TF32 and
float32-accurate (3xTF32) math, TF32 grad-weight from bfloat16 parts (C % 64 == 0) and with the shared-memory
transpose (C = 32), a strided grad-input (residue classes) and a tap-pair forward with its filter resident in shared
memory. Anywhere: that the rule table sends each case where this file expects (so the GPU test below really runs
those kernels). On a compute capability 9.0 GPU: each operation straight through the DLPack adapter into
NaN-poisoned channels_last_3d results with a garbage-filled workspace, against float64 F.conv3d and autograd from
the raw arguments. scripts/mutate.py's Hopper mutations (H1-H5) name these tests."""

from __future__ import annotations

import pytest
import torch
from torch.utils.dlpack import to_dlpack

from helpers import BOUNDS, TORCH_DTYPES, assert_close
from jaxconv3d import _ext, _plan, conv_config
from jaxconv3d.reference import reference_and_grads

OPS = ("forward", "grad_input", "grad_weight")
CL = torch.channels_last_3d

# name: (x_shape, w_shape, conv kwargs, dtype, precision, {op: substring of the tile the rule table picks on cc 9.0})
CASES = {
    "dense_bf16": ((2, 64, 8, 8, 8), (64, 64, 3, 3, 3), dict(padding=1), "bfloat16", None,
                   {"forward": "tma_wgmma_", "grad_input": "tma_wgmma_", "grad_weight": "_split4"}),
    "dense_3xtf32": ((2, 64, 8, 8, 8), (64, 64, 3, 3, 3), dict(padding=1), "float32", None,
                     {"forward": "tma_3xtf32_", "grad_input": "tma_3xtf32_"}),
    "dense_tf32_bf16x3": ((2, 64, 8, 8, 8), (64, 64, 3, 3, 3), dict(padding=1), "float32", "tf32",
                          {"forward": "tma_wgmma_", "grad_weight": "tma_bf16x3_wgmma_"}),
    "c32_tf32_transposed": ((2, 32, 8, 8, 8), (64, 32, 3, 3, 3), dict(padding=1), "float32", "tf32",
                            {"grad_weight": "tma_tf32_wgmma_"}),
    "strided_bf16": ((2, 32, 9, 9, 9), (64, 32, 3, 3, 3), dict(padding=1, stride=2), "bfloat16", None,
                     {"forward": "_resident_filter", "grad_input": "_residues8", "grad_weight": "gather_wgmma_"}),
    "strided_3xtf32": ((2, 32, 9, 9, 9), (64, 32, 3, 3, 3), dict(padding=1, stride=2), "float32", None,
                       {"forward": "tma_3xtf32_", "grad_input": "_residues8"}),
}


def plans(name):
    x_shape, w_shape, kw, dtype, precision, _ = CASES[name]
    cfg = conv_config(x_shape, w_shape, (w_shape[0],), precision=precision, **kw)
    return cfg, {op: _plan.plan(cfg, dtype, 90, op, 1) for op in OPS}


@pytest.mark.parametrize("name", CASES)
def test_rules_send_the_cases_to_the_hopper_kernels(name):
    _, answer = plans(name)
    for op, tile in CASES[name][5].items():
        if answer[op]["family"] != "hopper":
            pytest.skip("the Hopper family is not linked in this build")
        assert tile in answer[op]["tile"], (op, answer[op])


@pytest.mark.gpu
@pytest.mark.parametrize("name", CASES)
def test_hopper_kernels_against_float64(rng, name):
    if not torch.cuda.is_available() or _plan.cc_of(torch.device("cuda")) != 90:
        pytest.skip("needs a compute capability 9.0 GPU")
    x_shape, w_shape, kw, dtype, precision, expected = CASES[name]
    cfg, answer = plans(name)
    math = 1 if precision == "tf32" else 0
    tdt = TORCH_DTYPES[dtype]
    rounded = lambda shape: torch.as_tensor(rng.standard_normal(shape)).to(tdt).double()  # noqa: E731
    x, w, dy, b = rounded(x_shape), rounded(w_shape), rounded(cfg.y_shape), rounded((w_shape[0],))
    dev = lambda t: t.to("cuda", tdt).contiguous(memory_format=CL)  # noqa: E731
    nan = lambda shape: torch.full(shape, float("nan"), dtype=tdt, device="cuda").contiguous(memory_format=CL)  # noqa
    stream = torch.cuda.current_stream().cuda_stream
    attrs = (cfg.stride, cfg.pad_lo, cfg.pad_hi, cfg.dilation, cfg.groups, math, 1, stream)

    def workspace(op):
        n = answer[op]["workspace_bytes"]
        return to_dlpack(torch.full((n,), 255, dtype=torch.uint8, device="cuda")) if n else None

    # Each operation whose plan reads channels-last tensors (the Hopper ones; float32-accurate grad-weight, for one,
    # is sm80's, which the torch front reaches through layout transposes) runs through the adapter as they lie.
    y, dx, dw = nan(cfg.y_shape), nan(cfg.x_shape), nan(cfg.w_shape)
    runs = {
        "forward": lambda: _ext.torch_adapter.fwd(to_dlpack(dev(x)), to_dlpack(dev(w)), to_dlpack(b.to("cuda", tdt)),
                                                  to_dlpack(y), workspace("forward"), *attrs),
        "grad_input": lambda: _ext.torch_adapter.dgrad(to_dlpack(dev(dy)), to_dlpack(dev(w)), to_dlpack(dx),
                                                       workspace("grad_input"), *attrs),
        "grad_weight": lambda: _ext.torch_adapter.wgrad(to_dlpack(dev(x)), to_dlpack(dev(dy)), to_dlpack(dw),
                                                        workspace("grad_weight"), *attrs),
    }
    ran = [op for op in OPS if answer[op]["layout"] == "NDHWC"]
    assert set(expected) <= set(ran), (expected, ran)
    for op in ran:
        runs[op]()
    ref = reference_and_grads(x, w, b, dy, **kw)
    bound = BOUNDS["tf32" if math else dtype]
    for op, out, r in zip(OPS, (y, dx, dw), ref[:3]):
        if op in ran:
            # TF32 grad-weight from bfloat16 parts: three bf16 products carry ~16 bits, far inside single TF32's bound
            # (dropping one of them costs ~2^-9 and would pass that)
            tight = 2e-4 if "bf16x3" in answer[op]["tile"] else bound
            assert_close(out, r, tight, f"{name} {op} ({answer[op]['family']}: {answer[op]['tile']})")
    for op in expected:
        assert answer[op]["family"] == "hopper", (op, answer[op])
