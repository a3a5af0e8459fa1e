// The sm80 family's choices (see plan.h): pure host functions of the problem, used by the dispatcher and the
// launchers alike, so what `explain()` reports is what runs.
#include "sm80/plan.h"

#include <algorithm>
#include <climits>

namespace jaxconv3d {
namespace sm80 {

const char* kernel_name(Kernel k) {
  switch (k) {
    case Kernel::kStencil: return "stencil";
    case Kernel::kStencil3: return "stencil_3x3x3_regs";
    case Kernel::kWgradDw3: return "wgrad_depthwise_3x3x3_regs";
    case Kernel::kStencil3Stream: return "stencil_3x3x3_stream";
    case Kernel::kStencil3Mma: return "stencil_3x3x3_mma";
    case Kernel::kWgradDw3Mma: return "wgrad_depthwise_3x3x3_mma";
    case Kernel::kDw3BwdMma: return "depthwise_3x3x3_backward_mma";
    case Kernel::kWgradDw3Stream: return "wgrad_depthwise_3x3x3_stream";
    case Kernel::kDw3BwdStream: return "depthwise_3x3x3_backward_stream";
    case Kernel::kGemmWmma: return "gemm_wmma_128x64";
    case Kernel::kGemmFfma64: return "gemm_ffma_128x64";
    case Kernel::kGemmFfma32: return "gemm_ffma_128x32";
    case Kernel::kGemmFfma16: return "gemm_ffma_128x16";
    case Kernel::kWgradDepthwise: return "wgrad_depthwise";
    case Kernel::kWgradPipeWmma: return "wgrad_pipe_wmma_64x128";
    case Kernel::kWgradPipeFfma: return "wgrad_pipe_ffma_64x128";
    case Kernel::kWgrad64: return "wgrad_64x128";
    case Kernel::kWgrad32: return "wgrad_32x256";
    case Kernel::kWgrad16: return "wgrad_16x256";
  }
  return "unknown";
}

bool stencil_plan(const ConvProblem& p, bool dgrad, DType t, StencilArgs* s, int64_t* smem, int64_t* blocks) {
  const int64_t acc_size = t == DType::kF64 ? 8 : 4;
  const int64_t Cg = p.in_per_group();
  if (!dgrad && Cg != 1) return false;
  if (dgrad && Cg > 4) return false;
  const int64_t CO = dgrad ? Cg : 1;
  *s = StencilArgs{};
  s->dgrad = dgrad ? 1 : 0;
  s->Og = (int)p.out_per_group();
  const int OT[3] = {kSTZ, kSTY, kSTX};
  int64_t tiles = 1;
  int64_t elems = 1;
  for (int a = 0; a < 3; ++a) {
    if (dgrad && p.stride[a] != 1) return false;
    s->k[a] = (int)p.kernel[a];
    if (!dgrad) {
      s->od[a] = (int)p.out[a]; s->sd[a] = (int)p.in[a]; s->st[a] = (int)p.stride[a];
      s->base[a] = -(int)p.pad_lo[a]; s->tstep[a] = (int)p.dilation[a];
    } else {
      s->od[a] = (int)p.in[a]; s->sd[a] = (int)p.out[a]; s->st[a] = 1;
      s->base[a] = (int)p.pad_lo[a]; s->tstep[a] = -(int)p.dilation[a];
    }
    const int64_t span = (int64_t)(s->k[a] - 1) * s->tstep[a];
    s->lo[a] = (int)(span < 0 ? span : 0);
    const int64_t E = (int64_t)(OT[a] - 1) * s->st[a] + (span < 0 ? -span : span) + 1;
    if (E > 4096) return false;
    s->E[a] = (int)E;
    elems *= E;
    s->ntile[a] = (s->od[a] + OT[a] - 1) / OT[a];
    tiles *= s->ntile[a];
  }
  *smem = (elems + CO * p.taps()) * acc_size;
  if (*smem > 48 * 1024) return false;
  s->OC = (int)(dgrad ? p.in_channels : p.out_channels);
  s->SC = (int)(dgrad ? p.out_channels : p.in_channels);
  s->OCB = (int)(dgrad ? p.groups : p.out_channels);
  s->nsrc = dgrad ? s->Og : 1;
  *blocks = p.batch * s->OCB * tiles;
  return *blocks <= INT_MAX;
}

// Both 3x3x3 stencils: `s` and the block count for output blocks of ot (D, H, W) positions.
static bool plan_3x3x3(const ConvProblem& p, bool dgrad, DType t, const int (&ot)[3], Stencil3Args* s,
                       int64_t* blocks) {
  if (t == DType::kF64 || p.in_per_group() != 1) return false;
  *s = Stencil3Args{};
  int64_t tiles = 1;
  for (int a = 0; a < 3; ++a) {
    if (p.kernel[a] != 3 || p.stride[a] != 1 || p.dilation[a] != 1) return false;
    if (p.in[a] >= (int64_t(1) << 30) || p.out[a] >= (int64_t(1) << 30) || p.pad_lo[a] >= (int64_t(1) << 20))
      return false;
    s->od[a] = int(dgrad ? p.in[a] : p.out[a]);
    s->sd[a] = int(dgrad ? p.out[a] : p.in[a]);
    // forward: y[q] = sum_t w[t] x[q + t - pad]; grad-input: dx[q] = sum_t w[2 - t] dy[q + t - (2 - pad)]
    s->P[a] = int(dgrad ? 2 - p.pad_lo[a] : p.pad_lo[a]);
    s->ntile[a] = int((s->od[a] + ot[a] - 1) / ot[a]);
    tiles *= s->ntile[a];
  }
  s->dgrad = dgrad ? 1 : 0;
  s->Og = int(p.out_per_group());
  s->OC = int(dgrad ? p.in_channels : p.out_channels);
  s->SC = int(dgrad ? p.out_channels : p.in_channels);
  *blocks = p.batch * s->OC * tiles;
  return *blocks <= INT_MAX;
}

bool stencil3_plan(const ConvProblem& p, bool dgrad, DType t, Stencil3Args* s, int64_t* blocks) {
  return plan_3x3x3(p, dgrad, t, {kS3Z, kS3Y, kS3X}, s, blocks);
}

bool stencil3_stream_plan(const ConvProblem& p, bool dgrad, DType t, Stencil3Args* s, int64_t* blocks) {
  if (dgrad && p.out_per_group() != 1) return false;
  if (t != DType::kF32) return plan_3x3x3(p, dgrad, t, {kS3SZ, kS3SY, kS3SX}, s, blocks);
  // float32: a copy's byte offset inside a source plane in 32 unsigned bits (stencil3_stream.cuh's RingWindow):
  // H x W x 4 <= 2^32
  return plan_3x3x3(p, dgrad, t, {kS3SZ, stream_rows_f32(dgrad ? p.in[1] : p.out[1]), kS3SX}, s, blocks) &&
         int64_t(s->sd[1]) * s->sd[2] <= (int64_t(1) << 30);
}

bool stencil3_mma_plan(const ConvProblem& p, bool dgrad, DType t, Stencil3Args* s, int64_t* units) {
  if ((t != DType::kBF16 && t != DType::kF16) || p.out_per_group() != 1) return false;
  if (!plan_3x3x3(p, dgrad, t, {1, kS3MY, kS3MX}, s, units)) return false;
  // 32-bit offsets inside a plane (a copy's, up to one row and 40 columns past it)
  return s->sd[2] % 4 == 0 && s->od[2] % 2 == 0 && (int64_t(s->sd[1]) + 2) * (s->sd[2] + 64) < (int64_t(1) << 31);
}

// x and dy of the same extents (padding totals 2 an axis for a 3x3x3 stride-1 layer).
static bool same_extents(const ConvProblem& p) {
  for (int a = 0; a < 3; ++a)
    if (p.in[a] != p.out[a]) return false;
  return true;
}

bool dw3_stream_plan(const ConvProblem& p, DType t, Stencil3Args* s, int64_t* units) {
  if (t != DType::kF32 || !same_extents(p)) return false;
  int64_t blocks = 0;
  if (!stencil3_stream_plan(p, true, t, s, &blocks)) return false;
  *units = p.batch * int64_t(s->ntile[0]) * s->ntile[1] * s->ntile[2];
  return true;
}

// A channel's `units` cut into `want` (>= 1) contiguous runs of *per_split; the split count those runs make (1 without
// units). Fixed by the problem, so the order of the sums never depends on the device.
static int runs_of(int64_t units, int64_t want, int64_t* per_split) {
  *per_split = (units + want - 1) / want;
  return int(units > 0 ? (units + *per_split - 1) / *per_split : 1);
}

// The same for about 2 x kTargetBlocks (channel, split) blocks over `channels`.
static int contiguous_splits(int64_t units, int64_t channels, int64_t* per_split) {
  return runs_of(units, std::max<int64_t>(1, std::min<int64_t>(units, 2 * kTargetBlocks / channels)), per_split);
}

WgPlan wg_plan(const ConvProblem& p, DType t) {
  WgPlan pl{};
  const int64_t accsz = t == DType::kF64 ? 8 : 4;
  const int64_t P = p.batch * p.out_spatial();
  const int64_t Og = p.out_per_group(), Ncol = p.in_per_group() * p.taps();
  Stencil3Args s3;
  int64_t blocks3 = 0;
  if (stencil3_plan(p, false, t, &s3, &blocks3)) {
    // dw3: about 2 x kTargetBlocks blocks (channel, split), each over a contiguous run of one channel's bricks
    pl.depthwise = pl.dw3 = true;
    pl.bricks = p.batch * int64_t(s3.ntile[0]) * s3.ntile[1] * s3.ntile[2];
    pl.S = contiguous_splits(pl.bricks, p.out_channels, &pl.per_split);
    pl.blocks_per_split = p.out_channels;
    // tensor-core form: runs of at least ~8 dy planes a warp (four warps a split), at most ~2 x kTargetBlocks
    // blocks; 32-bit offsets inside a plane (a copy's, up to 18 rows and 40 columns past it)
    pl.mma = (t == DType::kBF16 || t == DType::kF16) && p.in[2] % 4 == 0 && p.out[2] % 4 == 0 &&
             (p.in[1] + 18) * (p.in[2] + 64) < (int64_t(1) << 31) &&
             (p.out[1] + 16) * (p.out[2] + 64) < (int64_t(1) << 31);
    if (pl.mma) {
      pl.mma_units = p.batch * ((p.out[1] + kWgMY - 1) / kWgMY) * ((p.in[2] + kWgMX - 1) / kWgMX) * p.out[0];
      const int64_t most = std::max<int64_t>(1, (2 * kTargetBlocks + p.out_channels - 1) / p.out_channels);
      pl.mma_S = runs_of(pl.mma_units, std::max<int64_t>(1, std::min<int64_t>(most, pl.mma_units / 32)),
                         &pl.mma_per_split);
    }
    // float32 streaming form: about 2 x kTargetBlocks blocks (channel, split), each over a contiguous run of one
    // channel's strips
    Stencil3Args ss;
    if (dw3_stream_plan(p, t, &ss, &pl.stream_units)) {
      pl.stream = true;
      pl.stream_S = contiguous_splits(pl.stream_units, p.out_channels, &pl.stream_per_split);
    }
  } else if (p.in_per_group() == 1 && p.taps() <= kDwMaxT) {
    pl.depthwise = true;
    const int64_t R = p.batch * p.out[0] * p.out[1];
    int64_t S = (kTargetBlocks + p.out_channels - 1) / p.out_channels;
    if (S > R) S = R;
    if (S < 1) S = 1;
    pl.S = (int)S;
    pl.blocks_per_split = p.out_channels;
  } else {
    pl.depthwise = false;
    pl.bmo = Og > 32 ? 64 : (Og > 16 ? 32 : 16);
    const int64_t BN = pl.bmo == 16 ? 256 : 8192 / pl.bmo;
    const int64_t tiles = p.groups * ((Og + pl.bmo - 1) / pl.bmo) * ((Ncol + BN - 1) / BN);
    int64_t S = (kTargetBlocks + tiles - 1) / tiles;
    const int64_t maxS = (P + 255) / 256;  // at least ~256 positions per split
    if (S > maxS) S = maxS;
    if (S > 65535) S = 65535;
    if (S < 1) S = 1;
    pl.S = (int)S;
    pl.blocks_per_split = tiles;
  }
  pl.ws_bytes = pl.S > 1 ? (size_t)(pl.S * p.w_elements() * accsz) : 0;
  if (pl.mma && pl.mma_S > 1) pl.ws_bytes = std::max(pl.ws_bytes, size_t(pl.mma_S * p.w_elements() * accsz));
  if (pl.stream && pl.stream_S > 1)
    pl.ws_bytes = std::max(pl.ws_bytes, size_t(pl.stream_S * p.w_elements() * accsz));
  return pl;
}

bool fused_grads(const ConvProblem& p, DType t, const WgPlan& pl) {
  if (t == DType::kF32) return pl.stream;
  Stencil3Args s;
  int64_t units = 0;
  return pl.mma && same_extents(p) && stencil3_mma_plan(p, true, t, &s, &units);
}

bool fused_grads(const ConvProblem& p, DType t) { return fused_grads(p, t, wg_plan(p, t)); }

namespace {

// Tensor cores: float32 only with TF32 math, bf16/f16 always, float64 never.
bool tensor_cores(DType t, MathMode m) {
  if (t == DType::kF32) return m == MathMode::kTF32;
  return t != DType::kF64;
}

Kernel gemm_kernel(int64_t ncols, DType t, MathMode m) {
  if (tensor_cores(t, m) && ncols > 32) return Kernel::kGemmWmma;
  if (ncols > 32) return Kernel::kGemmFfma64;
  if (ncols > 16) return Kernel::kGemmFfma32;
  return Kernel::kGemmFfma16;
}

Kernel wgrad_kernel(const WgPlan& pl, DType t, MathMode m) {
  if (pl.dw3) return pl.mma ? Kernel::kWgradDw3Mma : (pl.stream ? Kernel::kWgradDw3Stream : Kernel::kWgradDw3);
  if (pl.depthwise) return Kernel::kWgradDepthwise;
  const bool f32 = t == DType::kF32, h16 = t == DType::kBF16 || t == DType::kF16;
  if (pl.bmo == 64 && kWgradPipeTF32 && f32 && m == MathMode::kTF32) return Kernel::kWgradPipeWmma;
  if (pl.bmo == 64 && kWgradPipeF32 && f32 && m == MathMode::kAccurate) return Kernel::kWgradPipeFfma;
  if (pl.bmo == 64 && kWgradPipe16 && h16) return Kernel::kWgradPipeWmma;
  return pl.bmo == 64 ? Kernel::kWgrad64 : (pl.bmo == 32 ? Kernel::kWgrad32 : Kernel::kWgrad16);
}

}  // namespace

Choice choose(Op op, const ConvProblem& p, DType t, MathMode m) {
  StencilArgs s;
  Stencil3Args s3;
  int64_t smem = 0, blocks = 0;
  switch (op) {
    case Op::kFwd:
      if (stencil3_mma_plan(p, false, t, &s3, &blocks)) return {Kernel::kStencil3Mma, 0};
      if (stencil3_stream_plan(p, false, t, &s3, &blocks)) return {Kernel::kStencil3Stream, 0};
      if (stencil3_plan(p, false, t, &s3, &blocks)) return {Kernel::kStencil3, 0};
      if (stencil_plan(p, false, t, &s, &smem, &blocks)) return {Kernel::kStencil, 0};
      return {gemm_kernel(p.out_per_group(), t, m), 0};
    case Op::kDgrad:
      if (stencil3_mma_plan(p, true, t, &s3, &blocks)) return {Kernel::kStencil3Mma, 0};
      if (stencil3_stream_plan(p, true, t, &s3, &blocks)) return {Kernel::kStencil3Stream, 0};
      if (stencil3_plan(p, true, t, &s3, &blocks)) return {Kernel::kStencil3, 0};
      if (stencil_plan(p, true, t, &s, &smem, &blocks)) return {Kernel::kStencil, 0};
      return {gemm_kernel(p.in_per_group(), t, m), 0};
    case Op::kWgrad: {
      const WgPlan pl = wg_plan(p, t);
      return {wgrad_kernel(pl, t, m), pl.ws_bytes};
    }
  }
  return {Kernel::kGemmFfma16, 0};
}

}  // namespace sm80
}  // namespace jaxconv3d
