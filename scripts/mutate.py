#!/usr/bin/env python3
"""Mutation check: does the test suite catch small deliberate bugs?

Each mutation below is one small edit (a sign, an index, a swapped pair, a dropped term) in the kernels, the argument
handling, the autodiff rules or a front. For each, in a temporary copy of the repository (the working tree is never
touched): apply it, rebuild the extension if C++ changed (CPU-only build, JAXCONV3D_CUDA=OFF), run the test suite
(`pytest -x -q`, fast targeted files first, with a timeout), record caught / survived, restore the file. CUDA
mutations (cuda=True) are listed there as pending and not counted.

GPU mode (--gpu, on an sm_90 machine) evaluates the CUDA mutations only (--cpu-too adds the CPU ones, full suite
each). The copy gets a Ninja CUDA build (-DCMAKE_CUDA_ARCHITECTURES=90 unless the CMAKE_ARGS environment variable,
as scripts/setup.sh uses it, names architectures; -j cpu_count), so a mutation rebuilds one translation unit and
relinks (~10-30 s on 16 cores; cuda/sm80/common.cuh is in seven sm80 units, smallc_geom.cuh in the three
first-layer ones), and a restored file is recompiled together with the next mutation's. Each CUDA mutation names
targeted GPU selections (`tests`: pytest node ids, or "file -k expr") that reach its code on an H100; they run first
on the unmutated build (a selection failing there is dropped and said), then per mutation in order with -x and
--timeout (default 150 s) until one fails (caught); a mutation surviving them all faces the broad GPU suite too only
with --broad. Results merge into docs/mutation-report-gpu.txt (--gpu-report): one entry per CUDA mutation, the
entries of ids not run this time kept from the previous runs, so two runs with complementary --only lists make one
report; its last line is `mutation score: caught/total` over the CUDA mutations evaluated so far.
docs/mutation-report.txt (the CPU run) is not touched by --gpu. --deadline stops starting mutations after that many
seconds so a run under a hard time limit still writes its report. The GPU machine's driver is .device/mutate_gpu.sh.

    scripts/py scripts/mutate.py                      # all CPU-side mutations; report to docs/mutation-report.txt
    scripts/py scripts/mutate.py --only K1,P2         # some of them
    scripts/py scripts/mutate.py --list               # what would be applied (and each CUDA mutation's GPU tests)
    scripts/py scripts/mutate.py --gpu --only C1,C2   # on a GPU machine: those CUDA mutations, merged report

Prints `mutation score: caught/total`. Run on demand, not in CI (CPU: about 30-40 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shutil
import re
import shlex
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Fast, targeted files first so a caught mutation stops early under -x; then every other test file.
FIRST = ["test_params.py", "test_arguments.py", "test_errors.py", "test_dtypes_exact.py", "test_references.py",
         "test_grad_orders.py", "test_property_fronts.py", "test_conv.py", "test_kernels.py"]
TEST_SEED = "20261126"
NOT_MUTATION_TESTS = ("test_mutation_table.py",)  # checks the table against the source, not the library's behaviour


@dataclasses.dataclass(frozen=True)
class Mutation:
    id: str
    path: str
    edits: tuple  # ((find, replace), ...): each `find` must occur exactly once in the file
    what: str
    cuda: bool = False
    tests: tuple = ()  # CUDA mutations: targeted GPU selections (a pytest node id, or "file -k expr"), tried in order

    @property
    def cxx(self) -> bool:
        return self.path.endswith((".cc", ".h", ".cu"))


def M(id, path, find, replace, what, cuda=False, more=(), tests=()):
    return Mutation(id, path, ((find, replace), *more), what, cuda, tuple(tests))


CPU = "cuda/conv_cpu.cc"
HALF = "cuda/half_convert.h"
PARAMS = "jaxconv3d/_params.py"
AUTODIFF = "jaxconv3d/_autodiff.py"
OPS = "jaxconv3d/torch/_ops.py"
LIB = "jaxconv3d/torch/_library.py"
# GPU test selections
CONV = "tests/test_conv.py::test_matches_float64_reference"
EXACT = "tests/test_dtypes_exact.py"
KERNELS = "tests/test_kernels.py"
FRONTS = "tests/test_property_fronts.py::test_fronts_property"
DEPTHWISE = "tests/test_depthwise.py::test_stencil3_against_float64"
FUSED = "tests/test_fused_backward.py::test_fused_against_float64_and_bitwise_the_pair"
SMALLC = "tests/test_smallc.py"


def smallc(*ids: str) -> tuple[str, ...]:
    """test_smallc's float64 check for these parametrisations ("case-dtype-layout")."""
    return tuple(f"{SMALLC}::test_kernels_against_float64[{i}]" for i in ids)


def stencil_cl(*ids: str) -> tuple[str, ...]:
    """test_stencil_cl's float64 check for these parametrisations ("case-dtype")."""
    return tuple(f"tests/test_stencil_cl.py::test_stencil_against_float64[{i}]" for i in ids)


def depthwise(*ids: str) -> tuple[str, ...]:
    """test_depthwise's float64 check for these parametrisations ("case-dtype")."""
    return tuple(f"tests/test_depthwise.py::test_stencil3_against_float64[{i}]" for i in ids)


DISPATCH = "tests/test_dispatch.py::test_every_family_on_every_case_it_accepts"
HOPPER = "tests/test_hopper_paths.py::test_hopper_kernels_against_float64"

MUTATIONS = [
    # ---- CPU kernels
    M("K1", CPU, "std::fill(yplane, yplane + p.out_spatial(), bias ? bias[o] : Acc(0));",
      "std::fill(yplane, yplane + p.out_spatial(), Acc(0));", "forward ignores the bias"),
    M("K2", CPU, "const int64_t c0 = (o / Og) * Cg;", "const int64_t c0 = (o % p.groups) * Cg;",
      "forward: output channels assigned to groups round-robin (differs only with groups > 1 and O/groups > 1)"),
    M("K3", CPU, "floor_div(extent - 1 - offset, stride));", "floor_div(extent - 2 - offset, stride));",
      "valid tap range one short at the high edge"),
    M("K4", CPU, "const Acc* xplane = x + (n * p.in_channels + ci) * p.in_spatial();",
      "const Acc* xplane = x + ci * p.in_spatial();", "grad-weight reads example 0's input for every example"),
    M("K5", CPU, "for (int64_t q = 0; q < Q; ++q) part += yplane[row * Q + q];",
      "for (int64_t q = 1; q < Q; ++q) part += yplane[row * Q + q];", "grad-bias skips the first column"),
    M("K6", HALF, "bits += 0x7fffu + ((bits >> 16) & 1u);", "",
      "bfloat16 results truncated instead of rounded to nearest even"),
    M("K7", HALF, "v += 0xfffu + ((v >> 13) & 1u);", "v += 0x1000u;",
      "float16 results round half up instead of half to even"),
    M("K8", HALF, "bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23)",
      "bits = sign | (static_cast<uint32_t>(127 - 14 - e) << 23)", "float16 subnormal inputs widened 2x too large"),
    M("K9", CPU, "tap.off[a] = k[a] * p.dilation[a] - p.pad_lo[a];", "tap.off[a] = k[a] * p.dilation[a] - p.pad_hi[a];",
      "kernels offset taps by the high padding"),
    M("K10", CPU, "for (int64_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) body(i);",
      "for (int64_t i = next.fetch_add(1); i < count - 1; i = next.fetch_add(1)) body(i);",
      "threaded runs drop the last work item (only above the threading cut)"),
    M("K11", HALF, "if (rem > half || (rem == half && (q & 1u))) ++q;", "if (rem > half) ++q;",
      "float16 subnormal results: ties rounded down"),
    M("K12", CPU, "const int64_t g = ci / Cg, c = ci % Cg;", "const int64_t g = ci % p.groups, c = ci % Cg;",
      "grad-input: input channels assigned to groups round-robin"),
    M("K13", CPU, "const GradualUnderflow gradual_underflow;", "",
      "subnormals flushed to zero when called from XLA"),
    # ---- argument handling
    M("P1", PARAMS, '"float32", "high", "bfloat16_3x"', '"float32", "bfloat16_3x"',
      'precision="high" / lax.Precision.HIGH mapped to TF32',
      more=(('_TF32_NAMES = {"tf32",', '_TF32_NAMES = {"high", "tf32",'),)),
    M("P2", PARAMS, "key = (*args, tuple(_types(v) for v in typed))", "key = (*args, ())",
      "types dropped from the argument cache key (both configs)"),
    M("P3", PARAMS, "lo = tuple(t // 2 for t in total)", "lo = tuple(t - t // 2 for t in total)",
      '"same": the odd padding element on the low side'),
    M("P4", PARAMS, "lo = tuple(int(v[0]) for v in padding)", "lo = tuple(int(v[1]) for v in padding)",
      "(lo, hi) padding pairs read as (hi, lo)",
      more=(("hi = tuple(int(v[1]) for v in padding)", "hi = tuple(int(v[0]) for v in padding)"),)),
    M("P5", PARAMS, "out.append((size + lo + hi - span) // s + 1)",
      "out.append((size + lo + hi - span + s - 1) // s + 1)",
      "output size rounded up (ceil mode)"),
    M("P6", PARAMS, "return MATH_ACCURATE if MATH_ACCURATE in modes else MATH_TF32",
      "return MATH_TF32 if MATH_TF32 in modes else MATH_ACCURATE", "a precision pair is TF32 if either is"),
    M("P7", PARAMS, "if size + lo + hi < span:", "if size + lo + hi <= span:",
      "an input exactly as large as the dilated kernel is refused"),
    # ---- JAX autodiff rules, JAX door and front
    M("A1", AUTODIFF, "_like_primal(weight_grad(c, dy, cfg), w)", "_like_primal(-weight_grad(c, dy, cfg), w)",
      "grad-input's backward rule: weight term negated (gradient penalty)"),
    M("A2", AUTODIFF, "return (jnp.broadcast_to(c[None, :, None, None, None], shape),)",
      "return (-jnp.broadcast_to(c[None, :, None, None, None], shape),)", "grad-bias's backward rule negated"),
    M("A3", AUTODIFF, "_like_primal(conv(x, c, _ffi.no_bias(x.dtype), cfg), dy)",
      "_like_primal(jnp.zeros_like(dy), dy)",
      "grad-weight's backward rule: no term for dy"),
    M("A4", AUTODIFF, "out = out.reshape(out.shape[0], size, out.shape[1] // size, *out.shape[2:])",
      "out = out.reshape(out.shape[0], out.shape[1] // size, size, *out.shape[2:])",
      "vmap over weights: channels unfolded in the wrong order"),
    M("F1", "jaxconv3d/_ffi.py", 'pad_lo=np.asarray(a["pad_lo"], np.int64),',
      'pad_lo=np.asarray(a["pad_hi"], np.int64),',
      "JAX door: pad_lo and pad_hi swapped",
      more=(('pad_hi=np.asarray(a["pad_hi"], np.int64),', 'pad_hi=np.asarray(a["pad_lo"], np.int64),'),)),
    M("J1", "jaxconv3d/_jax_api.py", "groups=groups, precision=precision", "groups=groups, precision=None",
      "JAX front ignores precision"),
    M("R3", "cuda/sm80/plan.cc", "if (p.in[a] != p.out[a]) return false;", "if (false) return false;",
      "fused backward (and float32 streaming grad-weight) taken where x and dy differ in extent",
      tests=("tests/test_fused_backward.py",)),
    M("S1", "jaxconv3d/_sharding.py", "outs = tuple(jax.lax.psum(o, reduce_axes) if r != ACT and reduce_axes else o",
      "outs = tuple(o if r != ACT and reduce_axes else o",
      "sharded jit: batch reductions (grad-weight, grad-bias) not summed across devices"),
    M("S2", "jaxconv3d/_sharding.py", "own = _add_rows(own, part, sp.hi_first, d) if out_role == ACT else own + part",
      "own = _add_rows(own, part, sp.hi_first, d) if out_role == ACT else own",
      "sharded jit, one axis split: grad-weight drops the upper halo's terms"),
    M("S3", "jaxconv3d/_sharding.py", "h.n - h.lo, h.dim)", "h.n - h.lo - 1, h.dim)",
      "sharded jit: grad-input's lower-halo gradient added one row early at its owner"),
    M("Z1", AUTODIFF, "zeros = tuple(jnp.zeros(s, arrays[0].dtype) for s in shapes)",
      "zeros = tuple(jnp.ones(s, arrays[0].dtype) for s in shapes)",
      "JAX: an empty batch gives ones for the weight and bias gradients"),
    M("F2", "cuda/ffi_handlers.cc", 'read_triple(a.pad_hi, "pad_hi", pad_hi)',
      'read_triple(a.pad_lo, "pad_hi", pad_hi)',
      "JAX door (C++): pad_hi read from pad_lo"),
    M("D1", "cuda/dlpack_adapter.cc", "if (t->shape[a] != 1 && t->strides[a] != expect)",
      "if (false && t->strides[a] != expect)", "torch door (C++): tensors not compact in the layout's order accepted"),
    # ---- torch autodiff rules and front
    M("T1", OPS, "return (*conv_grads(gy, x, w, cfg, need[0], need[1],",
      "return (*conv_grads(gy, x, w, cfg, need[0] and need[1], need[1],",
      "torch eager: dx skipped when the weights are frozen"),
    M("T2", OPS, "d_w = WeightGrad.apply(c, dy, ctx.cfg) if", "d_w = -WeightGrad.apply(c, dy, ctx.cfg) if",
      "torch eager: grad-input's backward rule, weight term negated"),
    M("T3", OPS, "        return c[None, :, None, None, None].expand(ctx.shape)",
      "        return -c[None, :, None, None, None].expand(ctx.shape)", "torch eager: grad-bias's backward negated"),
    M("L1", LIB, "padding=tuple(zip(pad_lo, pad_hi)),", "padding=tuple(zip(pad_hi, pad_lo)),",
      "torch.compile path: pad_lo and pad_hi swapped"),
    M("L2", LIB, "dw = weight_grad(x, gy, w.shape, *ctx.attrs) if need_w else None",
      "dw = weight_grad(x, gy, w.shape, *ctx.attrs) if need_w and need_x else None",
      "torch.compile path: dw skipped when the input needs no grad"),
    M("L3", LIB, "d_w = weight_grad(c, dy, w.shape, *ctx.attrs) if",
      "d_w = -weight_grad(c, dy, w.shape, *ctx.attrs) if",
      "torch.compile path: grad-input's backward rule, weight term negated"),
    M("TF1", "jaxconv3d/torch/__init__.py", "precision=precision, memoize=not dispatched,",
      "precision=None, memoize=not dispatched,", "torch front ignores precision"),
    # equivalent on the CPU, whose kernels take the caller's layout: only an NCDHW kernel family (sm80) under a
    # channels-last caller needs the conversion, so the GPU run evaluates it
    M("TF2", "jaxconv3d/torch/_ops.py", "    return _in_format(y, cl)", "    return y",
      "torch forward returns the kernel's memory format, not the input's", True,
      tests=("tests/test_torch_front.py::test_channels_last_output_from_an_ncdhw_kernel",)),
    # ---- kernel-family rules (plain C++, built everywhere: the CPU build's explain() sees them)
    M("R1", "cuda/hopper/hopper_rules.cc",
      "if (p.stride[0] != 1 || p.stride[1] != 1 || p.stride[2] != 1 || p.out_channels > 64) return false;",
      "if (p.out_channels > 64) return false;", "first-layer grad-input on registers accepts strided problems"),
    M("R2", "cuda/sm80/plan.cc", "if (p.kernel[a] != 3 || p.stride[a] != 1 || p.dilation[a] != 1) return false;",
      "if (p.kernel[a] != 3 || p.stride[a] != 1) return false;", "3x3x3 depthwise kernels accept dilated problems"),
    # ---- CUDA kernels (evaluated only with --gpu on a GPU machine). Each names the GPU tests that reach the mutated
    # code on an H100 (sm_90; what the rule table picks there, or the family a test forces with JAXCONV3D_FAMILY).
    M("C1", "cuda/sm80/wgrad.cu", "for (int s = 0; s < S; ++s) v += ws[(i64)s * wel + e];",
      "for (int s = 1; s < S; ++s) v += ws[(i64)s * wel + e];", "grad-weight split reduction drops split 0", True,
      # k7_pad3 / same_dilated: sm80 wgrad_16x256 with 3 / 2 splits; c32: float32-accurate wgrad_32x256, split
      tests=(f"{CONV}[k7_pad3-torch-float32-cuda]", f"{CONV}[same_dilated-jax-float32-cuda]",
             "tests/test_dynamic_range.py -k 'cuda and c32 and ties'")),
    M("C2", "cuda/sm80/wgrad.cu", "*ke = *kb + chunk < P ? *kb + chunk : P;", "*ke = *kb + chunk;",
      "grad-weight split range not clipped to P", True,
      # P not a multiple of the rounded chunk (positions past P read past x and dy): valid_k357 (P 125),
      # stride3_odd_channels (135), asym_pad_dilation (360 in 2 splits of 192), same_dilated (336 in 2 of 176)
      tests=("tests/test_conv.py -k 'cuda and float32 and (valid_k357 or stride3_odd or asym_pad or same_dilated)'",)),
    M("C3", "cuda/device_common.cuh", "return __float2bfloat16(static_cast<float>(v));", "return __float2bfloat16_rz(static_cast<float>(v));",
      "CUDA bfloat16 results truncated", True,
      # the JAX front's arrays live on the GPU: sm80 gemm_ffma / wgrad results held to correct rounding
      tests=(f"{EXACT}::test_results_correctly_rounded[jax-bfloat16]",
             f"{EXACT}::test_rounding_to_nearest_even[jax-bfloat16]")),
    M("C4", "cuda/sm80/plan.cc", "s->base[a] = -(int)p.pad_lo[a];", "s->base[a] = -(int)p.pad_hi[a];",
      "stencil kernel offsets by the high padding", True,
      # sm80 `stencil` forward (depthwise, not 3x3x3 stride 1) with pad_lo != pad_hi: only the property tests draw it
      tests=(f"{KERNELS}::test_property_cuda[float32-0]", f"{FRONTS}[cuda-torch-float32]")),
    M("C5", "cuda/sm80/plan.cc", "if (t == DType::kF32) return m == MathMode::kTF32;",
      "if (t == DType::kF32) return true;", "float32 always on TF32 tensor cores", True,
      # sm80 gemm with more than 32 columns in float32: the 33-channel grad-input (gemm_ffma_128x64)
      tests=(f"{KERNELS}::test_more_than_2_31_elements", f"{FRONTS}[cuda-torch-float32]")),
    M("C6", "cuda/sm80/bgrad.cu", "for (int w = 0; w < NT / 32; ++w) t += s_red[w];",
      "for (int w = 0; w < NT / 32 - 1; ++w) t += s_red[w];", "grad-bias block reduction drops the last warp", True,
      # the last warp holds sums once a channel has more than 31 x 32 16-byte chunks: (1, 2, 32, 64, 64)
      tests=("tests/test_kernels.py::test_bgrad_against_float64_whatever_the_address",)),
    M("H1", "cuda/hopper/conv_tma.cuh", "Mma<float, BN, 0, 0>::run(part, ab, bs, 1);", "(void)bs;",
      "Hopper 3xTF32 drops the big*small product", True,
      tests=(f"{HOPPER}[dense_3xtf32]", "tests/test_dynamic_range.py -k 'cuda and c32 and torch'")),
    M("H2", "cuda/hopper/conv_wgrad.cuh", "ordered_sums(rows, total, k1 - k0, s);",
      "ordered_sums(rows, total, k1 - k0 - 1, s);", "Hopper grad-weight reduction drops each chunk's last split", True,
      tests=(f"{HOPPER}[dense_bf16]", f"{HOPPER}[strided_bf16]")),
    M("G1", "cuda/sm80/plan.cc", "s->P[a] = int(dgrad ? 2 - p.pad_lo[a] : p.pad_lo[a]);",
      "s->P[a] = int(p.pad_lo[a]);", "3x3x3 depthwise grad-input offset by pad instead of 2 - pad", True,
      # padding 0 and asymmetric cases (pad 1 makes 2 - pad == pad)
      tests=(f"{DEPTHWISE}[1-float32]", f"{DEPTHWISE}[2-float32]")),
    M("G2", "cuda/sm80/common.cuh", "for (int w = 0; w < WARPS; ++w) v += red[w][threadIdx.x];",
      "for (int w = 1; w < WARPS; ++w) v += red[w][threadIdx.x];",
      "3x3x3 depthwise grad-weights (block_sum27) drop the first warp's sums", True,
      # float32 cases whose dy differs from x in extent (elsewhere float32 runs the streaming grad-weight)
      tests=(f"{DEPTHWISE}[1-float32]", f"{DEPTHWISE}[2-float32]")),
    M("G3", "cuda/hopper/conv_smallc_dgrad.cuh", "slot -= slot >= a.span[0] ? a.span[0] : 0;", "",
      "first-layer grad-input: the dx ring slot not wrapped", True,
      tests=(f"{SMALLC} -k 'test_kernels_against_float64 and bfloat16 and NCDHW'",)),
    M("G4", "cuda/sm80/stencil3_stream.cuh", "const int z = s - 2;", "const int z = s - 1;",
      "streaming depthwise stencil stores an output plane before its last source plane", True,
      tests=(f"{DEPTHWISE}[0-float32]", f"{DEPTHWISE}[7-float32]")),
    M("H3", "cuda/hopper/conv_tma.cuh", "tile >= a->cls[c + 1].first_tile", "tile > a->cls[c + 1].first_tile",
      "strided grad-input: each residue class's first tile computed as the previous class's", True,
      tests=(f"{HOPPER}[strided_bf16]", f"{HOPPER}[strided_3xtf32]")),
    M("H4", "cuda/hopper/conv_tma.cuh", "res_base + 2 * (iter % a->cls[0].ktiles) * Cfg::kRegionB",
      "res_base + 2 * ((iter + 1) % a->cls[0].ktiles) * Cfg::kRegionB",
      "resident filter: each K-tile multiplied by the next K-tile's taps", True,
      # tap-pair forwards with the filter in shared memory and more than one K-tile: the strided 32-channel layer,
      # and the folded first layers under JAXCONV3D_FAMILY=hopper (k3_pad1: 2 K-tiles, valid_k357: 8)
      tests=(f"{HOPPER}[strided_bf16]", f"{DISPATCH}[k3_pad1-False-None-bfloat16-hopper]",
             f"{DISPATCH}[valid_k357-True-None-bfloat16-hopper]")),
    M("H5", "cuda/hopper/conv_wgrad_bf16x3.cuh", "Mma<__nv_bfloat16, BN, 1, 1>::run(acc, a_lo, b_hi, 1);", "",
      "TF32 grad-weight from bf16 parts drops the x_lo * dy_hi product", True,
      tests=(f"{HOPPER}[dense_tf32_bf16x3]",)),
    # ---- added with the GPU evaluation: the channels-last stencil family's rules and the first-layer kernels
    M("N1", "cuda/stencil/plan.cc", "if (p.kernel[a] != 3 || p.stride[a] != 1 || p.dilation[a] != 1) return false;",
      "if (p.kernel[a] != 3 || p.stride[a] != 1) return false;",
      "channels-last depthwise stencil accepts dilated layers (its kernel reads undilated taps)", True,
      # the rule table's own test (host C++, so the CPU suite sees it too; no GPU test runs a dilated channels-last
      # depthwise layer), then the property test's channels-last calls on the GPU
      tests=("tests/test_stencil_cl.py::test_rules_take_channels_last_depthwise_3x3x3_only",
             f"{FRONTS}[cuda-torch-float32]")),
    M("N2", "cuda/hopper/conv_smallc.cuh",
      "smallc_mma<T, SPLIT, 64>(acc, ab[ks], as[SPLIT ? ks : 0], big, small, ks > 0 ? 1 : 0);",
      "if (ks < NKS - 1) smallc_mma<T, SPLIT, 64>(acc, ab[ks], as[SPLIT ? ks : 0], big, small, ks > 0 ? 1 : 0);",
      "first-layer forward drops its last wgmma k-step", True,
      tests=smallc("0-bfloat16-NCDHW", "0-float32-NDHWC")),
    M("N3", "cuda/hopper/smallc_geom.cuh", "e.w = j2 * dil[2];", "e.w = j2;",
      "first-layer kernels: the W tap displacement ignores the dilation", True,
      # case 13: dilation (3, 1, 2); smallc_geom.cuh is in all three first-layer kernels' translation units
      tests=smallc("13-bfloat16-NCDHW", "13-float32-NDHWC")),
    M("N4", "cuda/stencil/depthwise_ndhwc.cu", "for (int j = 1; j < kSlices; ++j) s += sums[j][threadIdx.x];",
      "for (int j = 1; j < kSlices - 1; ++j) s += sums[j][threadIdx.x];",
      "channels-last depthwise grad-weight: the reduction drops its last slice", True,
      # case 0: 39 blocks of 4 warps sum into each tap, so every slice holds partial sums
      tests=stencil_cl("0-float32", "8-bfloat16")),
    M("N6", "cuda/hopper/conv_smallc_wgrad_halo.cuh",
      "if (e > 0) st_shared(dst + a.plane_bytes + (e - 1) * 2, v);",
      "if (e > 0) st_shared(dst + a.plane_bytes + e * 2, v);",
      "halo'd first-layer grad-weight (16-bit): the halo's shifted copy not shifted", True,
      tests=smallc("0-bfloat16-NDHWC", "15-float16-NDHWC")),
    M("N8", "cuda/hopper/conv_smallc_wgrad_halo.cuh",
      "const bool column = nb.od == bk.od + 1 && g.stride[0] < a.hd;",
      "const bool column = g.stride[0] < a.hd;",
      "halo'd first-layer grad-weight (16-bit): a split's next D column keeps the previous column's planes", True,
      # case 21: 1110 bricks, three a split, D columns of 37: splits cross columns
      tests=smallc("21-bfloat16-NDHWC", "21-float16-NDHWC")),
    M("N9", "cuda/hopper/conv_smallc_dgrad.cuh", "store_p(acc, buf ^ 1);", "store_p(acc, buf);",
      "first-layer grad-input (16-bit, two P buffers): the next plane's products stored over this plane's", True,
      tests=smallc("0-bfloat16-NDHWC", "15-float16-NDHWC")),
    M("N10", "cuda/hopper/conv_smallc_wgrad.cuh", "for (int j = 1; j < kReduceChunks; ++j) t += sums[j][o];",
      "for (int j = 1; j < kReduceChunks - 1; ++j) t += sums[j][o];",
      "first-layer grad-weight reduction drops its last chunk of splits", True,
      # case 0: 60 bricks, one a split: chunk 15 holds splits 15, 31, 47
      tests=smallc("0-bfloat16-NDHWC", "0-float32-NCDHW")),
    M("B1", "cuda/sm80/bgrad.cu", "const bool vec = Osp % V == 0 && reinterpret_cast<uintptr_t>(p) % 16 == 0;",
      "const bool vec = reinterpret_cast<uintptr_t>(p) % 16 == 0;",
      "grad-bias: whole 16-byte loads on rows that are not a whole number of chunks", True,
      tests=("tests/test_kernels.py::test_bgrad_against_float64_whatever_the_address",)),
    M("N7", "cuda/hopper/conv_smallc_wgrad_halo.cuh",
      "toff[j] = j * kRowBytes + (uint32_t((p / 4) ^ (4 * (w & 1) + j)) << 4) + (p % 4) * 4;",
      "toff[j] = j * kRowBytes + (uint32_t((p / 4) ^ (4 * (w & 1))) << 4) + (p % 4) * 4;",
      "halo'd first-layer grad-weight (float32): the split dy tile's swizzle ignores the channel row's low bits", True,
      tests=smallc("0-float32-NDHWC", "15-tf32-NDHWC")),
    M("N11", "cuda/stencil/depthwise_ndhwc.cu",
      "for (int k = 0; k < kRows - 1; ++k) sum += red[(k * kHalf + t - h * kHalf) * CH + lane * VEC + e];",
      "for (int k = 0; k < kRows - 2; ++k) sum += red[(k * kHalf + t - h * kHalf) * CH + lane * VEC + e];",
      "channels-last float32 grad-weight: the block's sum drops its last warp", True,
      tests=stencil_cl("0-float32", "4-float32")),
    M("N5", "cuda/stencil/depthwise_ndhwc.cu", "constexpr int SO = (PH + 1) % 3;", "constexpr int SO = (PH + 2) % 3;",
      "channels-last depthwise forward / grad-input: a plane stored from the wrong accumulator slot", True,
      tests=stencil_cl("0-float32", "8-bfloat16")),
    M("M1", "cuda/sm80/stencil3_mma.cu", "constexpr int SO = (PH + 1) % 3;", "constexpr int SO = (PH + 2) % 3;",
      "tensor-core depthwise stencil: a plane stored from the wrong accumulator slot", True,
      tests=depthwise("9-bfloat16", "11-float16")),
    M("M4", "cuda/sm80/stencil3_mma.cu", "const unsigned ins = pin ? inside : 0u;", "const unsigned ins = inside;",
      "tensor-core depthwise stencil: a source plane outside the volume copied from plane 0 instead of zero-filled",
      True, tests=depthwise("9-bfloat16", "11-float16")),
    M("M5", "cuda/sm80/stencil3_stream.cu", "const int col = RY * b.warp * kRingRow + win.e + threadIdx.x % 32;",
      "const int col = RY * b.warp * kRingRow + threadIdx.x % 32;",
      "float32 streaming stencil: the 16-byte copies' window read without its shift (W taps off by (-P) mod 4)", True,
      tests=depthwise("9-float32", "0-float32")),
    M("M6", "cuda/sm80/stencil3_stream.cuh", "const unsigned ins = zin ? inside : 0u;", "const unsigned ins = inside;",
      "float32 streaming stencil: a source plane outside the volume copied from plane 0 instead of zero-filled", True,
      tests=depthwise("9-float32", "0-float32")),
    M("M7", "cuda/sm80/dw3_bwd_stream.cu", "const bool interior = unsigned(s - Q0) < unsigned(b.zc);",
      "const bool interior = unsigned(s - Q0) <= unsigned(b.zc);",
      "float32 streaming grad-weight: the next chunk's first dy plane counted by this chunk too", True,
      tests=tuple(f"{FUSED}[{i}]" for i in ("7-float32", "0-float32")) + depthwise("8-float32")),
    M("M8", "cuda/sm80/dw3_bwd_stream.cu", "if (s >= Q0 && s < b.planes + Q0) {",
      "if (s >= Q0 && s + 1 < b.planes + Q0) {",
      "float32 streaming grad-weight: a chunk's last x plane never copied (its stage keeps an older plane)", True,
      tests=tuple(f"{FUSED}[{i}]" for i in ("7-float32", "0-float32")) + depthwise("8-float32")),
    M("M2", "cuda/sm80/mma16.cuh", "(flip ? 26 - tap : tap)", "(tap)",
      "tensor-core depthwise stencils (band_fragment): grad-input with the filter not flipped", True,
      tests=depthwise("9-bfloat16", "11-float16") + stencil_cl("4-bfloat16", "13-float16")),
    M("N12", "cuda/hopper/depthwise_band.cu", "constexpr int SO = (PH + 1) % 3;", "constexpr int SO = (PH + 2) % 3;",
      "channels-last tensor-core depthwise stencil (TMA): a plane staged from the wrong accumulator slot", True,
      tests=stencil_cl("4-bfloat16", "13-float16")),
    M("N13", "cuda/hopper/depthwise_band.cu", "uint32_t(32 * p + 16 * (h ^ ((p >> 2) & 1)))", "uint32_t(32 * p + 16 * h)",
      "channels-last tensor-core depthwise stencil (TMA): buffers read and written without TMA's 32-byte swizzle", True,
      tests=stencil_cl("4-bfloat16", "13-float16")),
    M("Q1", "cuda/sm80/stencil3_mma.cu", "  pdl_wait();  // launched as a dependent", "  // launched as a dependent",
      "tensor-core depthwise stencil: launched as a dependent but reads its input without waiting for its producer",
      True, tests=("tests/test_dependent_launch.py::test_dependent_kernels_wait_for_their_producers[bfloat16-0]",)),
    M("Q2", "cuda/stencil/depthwise_ndhwc.cu", "  pdl_wait();  // launched as a dependent of the kernel that wrote",
      "  // launched as a dependent of the kernel that wrote",
      "channels-last grad-weight reduction: launched as a dependent but sums the partials without waiting for them",
      True, tests=("tests/test_dependent_launch.py::test_dependent_kernels_wait_for_their_producers[float32-1]",)),
    M("Q3", "cuda/sm80/dw3_bwd_mma.cu", "if (js >= a0 && js < a0 + len) {", "if (js >= a0 && js + 1 < a0 + len) {",
      "fused depthwise backward: grad-weight drops each warp's last dy plane of a column", True,
      tests=tuple(f"{FUSED}[{i}]" for i in ("1-bfloat16", "2-float16"))),
    M("M9", "cuda/sm80/mma16.cuh", "a[j][2] = blk[j + 1][0]", "a[j][2] = blk[j][0]",
      "fused 16-bit depthwise backward (band_a_tiles): a tile's second column block read from its first", True,
      tests=tuple(f"{FUSED}[{i}]" for i in ("0-bfloat16", "1-float16"))),
    M("M3", "cuda/sm80/mma16.cuh", "* 8 + r + kh];", "* 8 + kh];",
      "tensor-core depthwise grad-weight: C's x-row column read without the dy row's offset", True,
      tests=depthwise("9-bfloat16", "14-float16")),
    M("X1", "cuda/layout_convert.cu", "tile[row][(k & 7) ^ ((row / V) & 7)] = v[j];", "tile[row][k & 7] = v[j];",
      "layout conversion (chunked form): a tile's rows stored unswizzled, gathered swizzled", True,
      tests=("tests/test_cuda.py -k layout",)),
    M("X2", "cuda/layout_convert.cu", "if (j < few) dst[d0 + j * dstep] = v[j];",
      "if (j + 1 < few) dst[d0 + j * dstep] = v[j];",
      "layout conversion (thin form): a position's last channel never written", True,
      tests=("tests/test_cuda.py -k layout",)),
]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


class Sandbox:
    """A copy of the repository with its own CPU-only build of the extension and a Python that imports jaxconv3d
    from the copy (the project's editable install is bypassed), so the working tree is never mutated."""

    def __init__(self, base: Path, cuda: bool):
        self.dir = base / "tree"
        self.build = base / "build"
        self.cuda = cuda
        files = run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True).stdout.split()
        for f in files:
            src, dst = ROOT / f, self.dir / f
            if src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        self.python = self._venv(base / "venv")
        self.env = dict(os.environ, PYTHONPATH=str(self.dir), JAXCONV3D_TEST_SEED=TEST_SEED,
                        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        self.env.pop("VIRTUAL_ENV", None)
        self._configure()

    def _venv(self, path: Path) -> str:
        run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
        py = str(path / "bin" / "python")
        target = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True).stdout.strip()
        # The project environment's packages, without processing its .pth files (one installs the editable finder
        # that would import jaxconv3d from the working tree).
        dirs = {p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if os.path.isdir(p)}
        Path(target, "_mutate_deps.pth").write_text("\n".join(sorted(dirs)) + "\n")
        return py

    def _configure(self) -> None:
        import pybind11

        extra = shlex.split(os.environ.get("CMAKE_ARGS", ""))  # as scripts/setup.sh passes it to scikit-build-core
        if self.cuda and not any(a.startswith("-DCMAKE_CUDA_ARCHITECTURES") for a in extra):
            extra.append("-DCMAKE_CUDA_ARCHITECTURES=90")  # the GPU box; CMakeLists' default builds 80 and 90
        cmd = ["cmake", "-S", str(self.dir), "-B", str(self.build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
               f"-DJAXCONV3D_CUDA={'ON' if self.cuda else 'OFF'}", f"-DPython_EXECUTABLE={sys.executable}",
               f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", *extra]
        out = run(cmd, env=self.env)
        if out.returncode:
            raise SystemExit(f"cmake configure failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        if not self.rebuild():
            raise SystemExit("the unmutated copy does not build")

    def rebuild(self) -> bool:
        """Incremental Ninja build (only the touched translation units and the link)."""
        start = time.time()
        out = run(["cmake", "--build", str(self.build), "-j", str(os.cpu_count() or 2)], env=self.env)
        self.build_seconds = time.time() - start
        if out.returncode:
            self.build_log = (out.stdout + out.stderr)[-3000:]
            return False
        for so in self.build.glob("_ext*.so"):
            shutil.copy(so, self.dir / "jaxconv3d" / so.name)
        return True

    def _pytest(self, args: list[str], timeout: float, where: str = "") -> tuple[str, str, float, str]:
        """Run pytest in the copy: (status, first failing test, seconds, last line of its output); status is 'passed',
        'failed', 'timeout' or, for an exit status of 5, 'empty' (nothing collected)."""
        cmd = [self.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::UserWarning", *args]
        start = time.time()
        try:
            out = run(cmd, cwd=self.dir, env=self.env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", "", time.time() - start, ""
        seconds = time.time() - start
        summary = (out.stdout.strip().splitlines() or [""])[-1]
        if out.returncode == 5:
            return "empty", "", seconds, summary
        if out.returncode == 0:
            return "passed", "", seconds, summary
        failed = [line.split(" ", 1)[1] for line in out.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
        first = failed[0] if failed else (summary or "(crashed)")
        if out.returncode < 0:
            first = f"crashed (signal {-out.returncode}){where}"
        return "failed", first[:150], seconds, summary

    def test(self, timeout: float) -> tuple[str, str, float]:
        """('passed' | 'failed' | 'timeout', first failing test, seconds)."""
        # test_mutation_table reads the source, where a mutation's text is replaced by design: it would catch them all
        tests = sorted(p.name for p in (self.dir / "tests").glob("test_*.py") if p.name not in NOT_MUTATION_TESTS)
        order = [t for t in FIRST if t in tests] + [t for t in tests if t not in FIRST]
        status, first, seconds, _ = self._pytest(["-x", *[f"tests/{t}" for t in order]], timeout)
        return ("failed" if status == "empty" else status), first, seconds

    def test_selection(self, selection: str, timeout: float, stop_first: bool = True) -> tuple[str, str, float]:
        """One GPU selection ("tests/x.py::test[id]", several node ids, or "tests/x.py -k 'expr'"), -x."""
        args = [*(["-x"] if stop_first else []), *shlex.split(selection)]
        status, first, seconds, summary = self._pytest(args, timeout, where=f" in {selection}")
        if status == "empty":  # nothing collected: a stale selection is an error in the table, not a catch
            return "empty", f"no test collected by {selection}", seconds
        if status == "passed" and " skipped" in summary and " passed" not in summary:
            return "empty", f"every test of {selection} skipped (no GPU?)", seconds
        return status, first, seconds


def apply(sandbox: Sandbox, m: Mutation) -> str:
    """Write the mutated file; returns its original text."""
    path = sandbox.dir / m.path
    original = text = path.read_text()
    for find, replace in m.edits:
        count = text.count(find)
        if count != 1:
            raise ValueError(f"{m.id}: {find!r} occurs {count} times in {m.path} (update the mutation)")
        text = text.replace(find, replace)
    path.write_text(text)
    return original


# --gpu --broad: after a CUDA mutation survives its targeted selections, these GPU tests run too (-x, -m gpu).
BROAD = ("tests/test_kernels.py tests/test_conv.py tests/test_dispatch.py tests/test_smallc.py tests/test_depthwise.py "
         "tests/test_stencil_cl.py tests/test_hopper_paths.py tests/test_dynamic_range.py tests/test_cuda.py -m gpu")
GPU_REPORT = ROOT / "docs" / "mutation-report-gpu.txt"
_ENTRY = re.compile(r"^(\S+)\s+(caught|SURVIVED|pending|build failed|no test)\b")


def merge_gpu_report(path: Path, header: str, entries: dict) -> list:
    """The GPU report's lines: its previous entries (one block per mutation id: the result line and its "by" line)
    with this run's replacing those of the same id, in table order, then `mutation score: caught/total`."""
    old = {}
    if path.exists():
        current = None
        for line in path.read_text().splitlines():
            m = _ENTRY.match(line)
            if m:
                current = m.group(1)
                old[current] = [line]
            elif current and line.startswith(" " * 16):
                old[current].append(line)
            else:
                current = None
    old.update(entries)
    lines = [header, ""]
    caught = total = 0
    for m in MUTATIONS:
        if not m.cuda:
            continue
        block = old.get(m.id) or [f"{m.id:4} {'pending':9} {'':6} {m.path}: {m.what}  [not run yet]"]
        lines += block
        status = _ENTRY.match(block[0]).group(2)
        total += status in ("caught", "SURVIVED")
        caught += status == "caught"
    pending = sum(1 for m in MUTATIONS if m.cuda and (m.id not in old or _ENTRY.match(old[m.id][0]).group(2)
                                                      not in ("caught", "SURVIVED")))
    lines += ["", f"mutation score: {caught}/{total}" + (f" ({pending} CUDA mutations not evaluated)" if pending else "")]
    return lines


def commit_label() -> str:
    """HEAD's short hash, marked where tracked files differ from it."""
    commit = run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT).stdout.strip() or "unknown"
    if run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT).stdout.strip():
        commit += " + uncommitted changes"
    return commit


class Log:
    """Prints each line as it comes and keeps them for the report."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)


def release(base: Path, keep: bool) -> None:
    """Remove the scratch copy (or say where it is kept)."""
    if keep:
        print(f"copy kept in {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)


def main_gpu(args, chosen) -> int:
    """--gpu: the CUDA mutations, each against its targeted GPU selections (see the module docstring)."""
    if not args.cpu_too:
        chosen = [m for m in chosen if m.cuda]
    start_all = time.time()
    base = Path(tempfile.mkdtemp(prefix="jaxconv3d-mutate-"))
    entries, out = {}, Log()
    caught = total = 0
    commit = commit_label()
    try:
        t0 = time.time()
        sandbox = Sandbox(base, cuda=True)
        print(f"sandbox CUDA build: {time.time() - t0:.0f} s", flush=True)
        for m in chosen:  # every mutation applies to the current source before anything runs
            (sandbox.dir / m.path).write_text(apply(sandbox, m))
        # Baseline: every targeted selection once on the unmutated build; one that fails there is dropped (and said).
        selections = list(dict.fromkeys(sel for m in chosen if m.cuda for sel in m.tests))
        bad, base_secs = set(), 0.0
        node_ids = [sel for sel in selections if " " not in sel]
        if node_ids:  # one process for every node id (pytest starts once); junit XML says which passed
            xml = base / "baseline.xml"
            _, _, secs = sandbox.test_selection(" ".join(node_ids) + f" --junitxml={xml}", args.timeout * 4,
                                                stop_first=False)
            base_secs += secs
            passed, failed = set(), set()
            if xml.exists():
                import xml.etree.ElementTree as ET

                for case in ET.parse(xml).iter("testcase"):
                    name = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "")
                    bad_case = any(child.tag in ("failure", "error", "skipped") for child in case)
                    (failed if bad_case else passed).add(name)

            def baseline_passes(sel: str) -> bool:
                """A node id passed, or (a test function named without its parameters) all its parametrisations."""
                if sel in passed:
                    return True
                mine = lambda names: {n for n in names if n.startswith(sel + "[")}  # noqa: E731
                return bool(mine(passed)) and not mine(failed)

            for sel in node_ids:
                if not baseline_passes(sel):
                    bad.add(sel)
                    print(f"baseline: {sel}: failed, skipped or not run", flush=True)
        for sel in (sel for sel in selections if " " in sel):
            status, first, secs = sandbox.test_selection(sel, args.timeout, stop_first=False)
            base_secs += secs
            if status != "passed":
                bad.add(sel)
                print(f"baseline: {sel}: {status} {first}", flush=True)
        try:
            cards = run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"]).stdout.strip().replace("\n", ", ")
        except OSError:
            cards = ""
        header = (f"jaxconv3d mutation report, GPU run, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} "
                  f"UTC, commit {commit}, {cards or 'GPU'} (targeted GPU selections, pytest -x, seed {TEST_SEED}"
                  f"{', then the broad GPU suite' if args.broad else ''}); ids run: {','.join(m.id for m in chosen)}; "
                  f"unmutated selections pass in {base_secs:.0f} s" + (f" ({len(bad)} failing, dropped)" if bad else ""))
        out(header)
        out()
        dirty = None  # a restored file whose object is still the mutated one: rebuilt with the next mutation
        for m in chosen:
            if args.deadline and time.time() - start_all > args.deadline:
                out(f"{m.id:4} not run: past --deadline {args.deadline:.0f} s")
                continue
            tests = [sel for sel in m.tests if sel not in bad] if m.cuda else []
            original = apply(sandbox, m)
            first, secs = "", 0.0
            try:
                if not sandbox.rebuild():
                    result = "build failed"
                    first = sandbox.build_log.strip().splitlines()[-1][:150] if sandbox.build_log.strip() else ""
                elif m.cuda and not tests:
                    result, first = "no test", "every targeted selection failed or skipped on the unmutated build"
                else:
                    build_secs = sandbox.build_seconds
                    result = "no test"
                    runs = tests + ([BROAD] if args.broad else []) if m.cuda else []
                    for sel in runs:
                        status, first1, secs1 = sandbox.test_selection(sel, args.timeout)
                        secs += secs1
                        if status == "empty":
                            first = first1
                            continue
                        result = "SURVIVED"
                        if status != "passed":
                            result = "caught"
                            first = first1 or ("timed out: " + sel if status == "timeout" else sel)
                            break
                    if not m.cuda:
                        status, first, secs = sandbox.test(args.timeout)
                        result = "SURVIVED" if status == "passed" else "caught"
                    first = (first + f" (build {build_secs:.0f} s)").strip() if first else f"(build {build_secs:.0f} s)"
            finally:
                (sandbox.dir / m.path).write_text(original)  # rebuilt together with the next mutation's change
            if result in ("caught", "SURVIVED"):
                total += 1
                caught += result == "caught"
            block = [f"{m.id:4} {result:9} {secs:5.0f}s  {m.path}: {m.what}"] + ([f"{'':16}by {first}"] if first else [])
            for line in block:
                out(line)
            if m.cuda:
                entries[m.id] = block
                report = Path(args.gpu_report)  # after every mutation: a run cut off by a hard limit keeps its results
                report.write_text("\n".join(merge_gpu_report(report, header, entries)) + "\n")
        out()
        out(f"this run: {caught}/{total} caught in {time.time() - start_all:.0f} s")
    finally:
        release(base, args.keep)
    report = Path(args.gpu_report)
    merged = merge_gpu_report(report, header, entries)
    report.write_text("\n".join(merged) + "\n")
    print(merged[-1])
    return 0 if caught == total else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated mutation ids")
    ap.add_argument("--gpu", action="store_true",
                    help="CUDA build (Ninja, CMAKE_ARGS, sm_90 unless CMAKE_ARGS names architectures); evaluate the "
                         "CUDA mutations on their targeted GPU selections; report merged into docs/mutation-report-gpu.txt")
    ap.add_argument("--cpu-too", action="store_true", help="with --gpu: the CPU-side mutations too (full suite each)")
    ap.add_argument("--broad", action="store_true",
                    help="with --gpu: a mutation that survives its targeted selections also faces the broad GPU suite")
    ap.add_argument("--deadline", type=float, default=0,
                    help="with --gpu: start no mutation after this many seconds (the rest are left as they were)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per test run (default 1200; with --gpu 150 per targeted selection)")
    ap.add_argument("--report", default=str(ROOT / "docs" / "mutation-report.txt"))
    ap.add_argument("--gpu-report", default=str(GPU_REPORT))
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = ap.parse_args(argv)
    if args.timeout is None:
        args.timeout = 150 if args.gpu else 1200

    ids = args.only.split(",") if args.only else []
    unknown = [i for i in ids if i not in {m.id for m in MUTATIONS}]
    if unknown:
        raise SystemExit(f"unknown mutation ids: {','.join(unknown)}")
    chosen = [m for m in MUTATIONS if not ids or m.id in ids]
    if args.list:
        for m in chosen:
            print(f"{m.id:4} {m.path:34} {'(CUDA) ' if m.cuda else ''}{m.what}")
            for sel in m.tests:
                print(f"{'':10}gpu: {sel}")
        return 0
    if args.gpu:
        return main_gpu(args, chosen)
    base = Path(tempfile.mkdtemp(prefix="jaxconv3d-mutate-"))
    out = Log()
    caught = total = 0
    commit = commit_label()
    try:
        sandbox = Sandbox(base, cuda=False)
        for m in chosen:  # every mutation applies to the current source before anything runs
            sandbox_text = apply(sandbox, m)
            (sandbox.dir / m.path).write_text(sandbox_text)
        status, first, secs = sandbox.test(args.timeout)
        if status != "passed":
            raise SystemExit(f"the unmutated suite does not pass ({status}: {first}); fix that first")
        out(f"jaxconv3d mutation report, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"commit {commit}, CPU suite (pytest -x, seed {TEST_SEED}); "
            f"unmutated suite passes in {secs:.0f} s")
        out()
        pending = []
        for m in chosen:
            if m.cuda:
                pending.append(m)
                continue
            original = apply(sandbox, m)
            try:
                if m.cxx and not sandbox.rebuild():
                    result, first, secs = "build failed", "", 0.0
                else:
                    status, first, secs = sandbox.test(args.timeout)
                    result = "SURVIVED" if status == "passed" else "caught"
                    if status == "timeout":
                        first = "suite timed out"
            finally:
                (sandbox.dir / m.path).write_text(original)
                if m.cxx:
                    sandbox.rebuild()
            if result != "build failed":
                total += 1
                caught += result == "caught"
            out(f"{m.id:4} {result:9} {secs:5.0f}s  {m.path}: {m.what}")
            if first:
                out(f"{'':16}by {first}")
        for m in pending:
            out(f"{m.id:4} {'pending':9} {'':6} {m.path}: {m.what}  [GPU run: docs/mutation-report-gpu.txt]")
        out()
        gpu_note = f" ({len(pending)} CUDA mutations need a GPU run)" if pending else ""
        out(f"mutation score: {caught}/{total}{gpu_note}")
    finally:
        release(base, args.keep)
    if not args.only:
        Path(args.report).write_text("\n".join(out.lines) + "\n")
    return 0 if caught == total else 1


if __name__ == "__main__":
    sys.exit(main())
