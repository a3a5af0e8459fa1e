#!/usr/bin/env python3
"""Mutation check: does the test suite catch small deliberate bugs?

Each mutation below is one small edit (a sign, an index, a swapped pair, a dropped term) in the kernels, the argument
handling, the autodiff rules or a front. For each, in a temporary copy of the repository (the working tree is never
touched): apply it, rebuild the extension if C++ changed (CPU-only build, JAXCONV3D_CUDA=OFF), run the test suite
(`pytest -x -q`, fast targeted files first, with a timeout), record caught / survived, restore the file. CUDA
mutations need a GPU machine: without --gpu they are listed as "GPU run needed" and not counted.

    scripts/py scripts/mutate.py                      # all CPU-side mutations; report to docs/mutation-report.txt
    scripts/py scripts/mutate.py --only K1,P2         # some of them
    scripts/py scripts/mutate.py --list               # what would be applied
    scripts/py scripts/mutate.py --gpu                # on a GPU machine: CUDA build, CUDA mutations evaluated too

Prints `mutation score: caught/total`. Run on demand, not in CI (about 30-40 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shutil
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


@dataclasses.dataclass(frozen=True)
class Mutation:
    id: str
    path: str
    edits: tuple  # ((find, replace), ...): each `find` must occur exactly once in the file
    what: str
    cuda: bool = False

    @property
    def cxx(self) -> bool:
        return self.path.endswith((".cc", ".h", ".cu"))


def M(id, path, find, replace, what, cuda=False, more=()):
    return Mutation(id, path, ((find, replace), *more), what, cuda)


CPU = "cuda/conv_cpu.cc"
HALF = "cuda/half_convert.h"
PARAMS = "jaxconv3d/_params.py"
AUTODIFF = "jaxconv3d/_autodiff.py"
OPS = "jaxconv3d/torch/_ops.py"
LIB = "jaxconv3d/torch/_library.py"

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
    M("S1", "jaxconv3d/_sharding.py", "return jax.lax.psum(out, reduce_axes) if reduce_axes else out", "return out",
      "sharded jit: batch reductions (grad-weight, grad-bias) not summed across devices"),
    M("Z1", AUTODIFF, "return jnp.zeros(shape_of(cfg), arrays[0].dtype)",
      "return jnp.ones(shape_of(cfg), arrays[0].dtype)",
      "JAX: an empty batch gives ones for the weight and bias gradients"),
    M("H1", "cuda/ffi_handlers.cc", 'read_triple(a.pad_hi, "pad_hi", pad_hi)',
      'read_triple(a.pad_lo, "pad_hi", pad_hi)',
      "JAX door (C++): pad_hi read from pad_lo"),
    M("D1", "cuda/dlpack_adapter.cc", "if (t->shape[a] != 1 && t->strides[a] != expect)",
      "if (false && t->strides[a] != expect)", "torch door (C++): tensors not compact in the layout's order accepted"),
    # ---- torch autodiff rules and front
    M("T1", OPS, "return (dgrad(gy, w, cfg) if need[0] else None,",
      "return (dgrad(gy, w, cfg) if need[0] and need[1] else None,",
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
    M("TF2", "jaxconv3d/torch/_ops.py", "    return _in_format(y, cl)", "    return y",
      "torch forward returns the kernel's memory format, not the input's"),
    # ---- kernel-family rules (plain C++, built everywhere: the CPU build's explain() sees them)
    M("R1", "cuda/hopper/hopper_rules.cc",
      "if (p.stride[0] != 1 || p.stride[1] != 1 || p.stride[2] != 1 || p.out_channels > 64) return false;",
      "if (p.out_channels > 64) return false;", "first-layer grad-input on registers accepts strided problems"),
    M("R2", "cuda/sm80/plan.cc", "if (p.kernel[a] != 3 || p.stride[a] != 1 || p.dilation[a] != 1) return false;",
      "if (p.kernel[a] != 3 || p.stride[a] != 1) return false;", "3x3x3 depthwise kernels accept dilated problems"),
    # ---- CUDA kernels (evaluated only with --gpu on a GPU machine)
    M("C1", "cuda/sm80/wgrad.cu", "for (int s = 0; s < S; ++s) v += ws[(i64)s * wel + e];",
      "for (int s = 1; s < S; ++s) v += ws[(i64)s * wel + e];", "grad-weight split reduction drops split 0", True),
    M("C2", "cuda/sm80/wgrad.cu", "*ke = *kb + chunk < P ? *kb + chunk : P;", "*ke = *kb + chunk;",
      "grad-weight split range not clipped to P", True),
    M("C3", "cuda/sm80/common.cuh", "return __float2bfloat16(static_cast<float>(v));", "return __float2bfloat16_rz(static_cast<float>(v));",
      "CUDA bfloat16 results truncated", True),
    M("C4", "cuda/sm80/plan.cc", "s->base[a] = -(int)p.pad_lo[a];", "s->base[a] = -(int)p.pad_hi[a];",
      "stencil kernel offsets by the high padding", True),
    M("C5", "cuda/sm80/plan.cc", "if (t == DType::kF32) return m == MathMode::kTF32;",
      "if (t == DType::kF32) return true;", "float32 always on TF32 tensor cores", True),
    M("C6", "cuda/sm80/bgrad.cu", "for (int w = 0; w < 8; ++w) s += s_red[w];", "for (int w = 0; w < 7; ++w) s += s_red[w];",
      "grad-bias block reduction drops the last warp", True),
    M("H1", "cuda/hopper/conv_tma.cuh", "Mma<float, BN, 0, 0>::run(part, ab, bs, 1);", "(void)bs;",
      "Hopper 3xTF32 drops the big*small product", True),
    M("H2", "cuda/hopper/conv_wgrad.cuh", "for (int k = 0; k < splits; ++k) s += partial",
      "for (int k = 1; k < splits; ++k) s += partial", "Hopper grad-weight reduction drops split 0", True),
    M("G1", "cuda/sm80/plan.cc", "s->P[a] = int(dgrad ? 2 - p.pad_lo[a] : p.pad_lo[a]);",
      "s->P[a] = int(p.pad_lo[a]);", "3x3x3 depthwise grad-input offset by pad instead of 2 - pad", True),
    M("G2", "cuda/sm80/wgrad_dw3.cu", "for (int w = 0; w < kThreads / 32; ++w) v += red[w][tid];",
      "for (int w = 1; w < kThreads / 32; ++w) v += red[w][tid];",
      "3x3x3 depthwise grad-weight drops the first warp's sums", True),
    M("G3", "cuda/hopper/conv_smallc_dgrad.cuh", "slot -= slot >= a.span[0] ? a.span[0] : 0;", "",
      "first-layer grad-input: the dx ring slot not wrapped", True),
    M("G4", "cuda/sm80/stencil3_stream.cu", "const int z = s - 2;", "const int z = s - 1;",
      "streaming depthwise stencil stores an output plane before its last source plane", True),
    M("H3", "cuda/hopper/conv_tma.cuh", "tile >= a->cls[c + 1].first_tile", "tile > a->cls[c + 1].first_tile",
      "strided grad-input: each residue class's first tile computed as the previous class's", True),
    M("H4", "cuda/hopper/conv_tma.cuh", "res_base + 2 * (iter % a->cls[0].ktiles) * Cfg::kRegionB",
      "res_base + 2 * ((iter + 1) % a->cls[0].ktiles) * Cfg::kRegionB",
      "resident filter: each K-tile multiplied by the next K-tile's taps", True),
    M("H5", "cuda/hopper/conv_wgrad_bf16x3.cuh", "Mma<__nv_bfloat16, BN, 1, 1>::run(acc, a_lo, b_hi, 1);", "",
      "TF32 grad-weight from bf16 parts drops the x_lo * dy_hi product", True),
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

        cmd = ["cmake", "-S", str(self.dir), "-B", str(self.build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
               f"-DJAXCONV3D_CUDA={'ON' if self.cuda else 'OFF'}", f"-DPython_EXECUTABLE={sys.executable}",
               f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"]
        out = run(cmd, env=self.env)
        if out.returncode:
            raise SystemExit(f"cmake configure failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        if not self.rebuild():
            raise SystemExit("the unmutated copy does not build")

    def rebuild(self) -> bool:
        out = run(["cmake", "--build", str(self.build)], env=self.env)
        if out.returncode:
            return False
        for so in self.build.glob("_ext*.so"):
            shutil.copy(so, self.dir / "jaxconv3d" / so.name)
        return True

    def test(self, timeout: float) -> tuple[str, str, float]:
        """('passed' | 'failed' | 'timeout', first failing test, seconds)."""
        tests = sorted(p.name for p in (self.dir / "tests").glob("test_*.py"))
        order = [t for t in FIRST if t in tests] + [t for t in tests if t not in FIRST]
        cmd = [self.python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-W", "ignore::UserWarning",
               *[f"tests/{t}" for t in order]]
        start = time.time()
        try:
            out = run(cmd, cwd=self.dir, env=self.env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", "", time.time() - start
        seconds = time.time() - start
        if out.returncode == 0:
            return "passed", "", seconds
        failed = [line.split(" ", 1)[1] for line in out.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
        first = failed[0] if failed else (out.stdout.strip().splitlines() or ["(crashed)"])[-1]
        if out.returncode < 0:
            first = f"crashed (signal {-out.returncode})"
        return "failed", first[:150], seconds


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated mutation ids")
    ap.add_argument("--gpu", action="store_true", help="CUDA build; evaluate the CUDA mutations too")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per test run (default 1200)")
    ap.add_argument("--report", default=str(ROOT / "docs" / "mutation-report.txt"))
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = ap.parse_args(argv)

    chosen = [m for m in MUTATIONS if not args.only or m.id in args.only.split(",")]
    if args.list:
        for m in chosen:
            print(f"{m.id:4} {m.path:28} {'(CUDA) ' if m.cuda else ''}{m.what}")
        return 0
    base = Path(tempfile.mkdtemp(prefix="jaxconv3d-mutate-"))
    lines = []
    caught = total = 0

    def out(line=""):
        print(line, flush=True)
        lines.append(line)

    commit = run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT).stdout.strip()
    if run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT).stdout.strip():
        commit += " + uncommitted changes"
    try:
        sandbox = Sandbox(base, cuda=args.gpu)
        for m in chosen:  # every mutation applies to the current source before anything runs
            sandbox_text = apply(sandbox, m)
            (sandbox.dir / m.path).write_text(sandbox_text)
        status, first, secs = sandbox.test(args.timeout)
        if status != "passed":
            raise SystemExit(f"the unmutated suite does not pass ({status}: {first}); fix that first")
        out(f"jaxconv3d mutation report, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"commit {commit}, {'GPU' if args.gpu else 'CPU'} suite (pytest -x, seed {TEST_SEED}); "
            f"unmutated suite passes in {secs:.0f} s")
        out()
        pending = []
        for m in chosen:
            if m.cuda and not args.gpu:
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
            out(f"{m.id:4} {'pending':9} {'':6} {m.path}: {m.what}  [GPU run needed]")
        out()
        gpu_note = f" ({len(pending)} CUDA mutations need a GPU run)" if pending else ""
        out(f"mutation score: {caught}/{total}{gpu_note}")
    finally:
        if args.keep:
            print(f"copy kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    if not args.only:
        Path(args.report).write_text("\n".join(lines) + "\n")
    return 0 if caught == total else 1


if __name__ == "__main__":
    sys.exit(main())
