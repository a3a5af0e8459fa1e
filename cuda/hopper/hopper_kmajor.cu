// Launchers of the Hopper family's K-major implicit GEMM: forward, and grad-input at stride 1 (a forward
// convolution of dy with the transposed filter, read backwards: source coordinate i + pad_lo - j * dilation).
#include <algorithm>
#include <cstdlib>
#include <string>

#include "hopper/conv_kmajor.cuh"
#include "hopper/conv_tma.cuh"
#include "hopper/fold.cuh"
#include "hopper/hopper_rules.h"
#include "launch_common.cuh"

namespace jaxconv3d {
namespace hopper {
namespace {

template <typename T, int BN>
std::string launch(const KMajorArgs& a, cudaStream_t stream) {
  using Cfg = KMajorCfg<T, BN>;
  auto kernel = conv_kmajor_kernel<T, BN>;
  static std::atomic<uint64_t> smem_set{0};
  cudaError_t e = allow_smem(kernel, Cfg::kSmem, smem_set);
  if (e != cudaSuccess) return std::string("hopper: cannot raise shared memory: ") + cudaGetErrorString(e);
  const dim3 grid(unsigned((a.M + 127) / 128), unsigned((a.Ng + BN - 1) / BN));
  kernel<<<grid, kThreads, Cfg::kSmem, stream>>>(a);
  e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("hopper: kernel launch failed: ") + cudaGetErrorString(e);
}

template <typename T>
std::string launch_bn(const KMajorArgs& a, int bn, cudaStream_t stream) {
  return bn == 64 ? launch<T, 64>(a, stream) : launch<T, 128>(a, stream);
}

std::string launch_dtype(DType t, const KMajorArgs& a, int bn, cudaStream_t stream) {
  switch (t) {
    case DType::kBF16: return launch_bn<__nv_bfloat16>(a, bn, stream);
    case DType::kF16: return launch_bn<__half>(a, bn, stream);
    case DType::kF32: return launch_bn<float>(a, bn, stream);
    default: return "hopper: unsupported dtype";
  }
}

KMajorArgs common(const ConvProblem& p, DType t, int cs, int ng) {
  KMajorArgs a{};
  a.Cs = cs;
  a.Ng = ng;
  const int bk = 128 / int(dtype_size(t));
  a.cblocks = (cs + bk - 1) / bk;
  a.ktiles = int(p.taps()) * a.cblocks;
  for (int d = 0; d < 3; ++d) a.k[d] = int(p.kernel[d]);
  return a;
}

// wt[c][tap][o] = w[o][tap][c] (w ODHWI): the grad-input GEMM's K-major filter. One 32 x 32 (o, c) tile of one tap
// per block, through shared memory, so both the reads (along c) and the writes (along o) are coalesced.
template <typename T>
__global__ void transpose_filter_kernel(const T* __restrict__ w, T* __restrict__ wt, int O, int taps, int C) {
  __shared__ T tile[32][33];
  const int c0 = blockIdx.x * 32;
  const int tx = threadIdx.x, ty = threadIdx.y;  // 32 x 8
  for (int tap = blockIdx.z; tap < taps; tap += gridDim.z)
  for (int o0 = blockIdx.y * 32; o0 < O; o0 += gridDim.y * 32) {
#pragma unroll
    for (int i = 0; i < 32; i += 8) {
      const int o = o0 + ty + i, c = c0 + tx;
      if (o < O && c < C) tile[ty + i][tx] = w[(i64(o) * taps + tap) * C + c];
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 32; i += 8) {
      const int c = c0 + ty + i, o = o0 + tx;
      if (o < O && c < C) wt[(i64(c) * taps + tap) * O + o] = tile[tx][ty + i];
    }
    __syncthreads();
  }
}

std::string transpose_filter(const ConvProblem& p, DType t, const void* w, void* wt, cudaStream_t stream) {
  const int O = int(p.out_channels), C = int(p.in_channels), taps = int(p.taps());
  const dim3 grid(unsigned((C + 31) / 32), unsigned(std::min((O + 31) / 32, 65535)),
                  unsigned(std::min(taps, 65535))), block(32, 8);
  switch (t) {
    case DType::kBF16: case DType::kF16:
      transpose_filter_kernel<uint16_t><<<grid, block, 0, stream>>>(static_cast<const uint16_t*>(w),
                                                                     static_cast<uint16_t*>(wt), O, taps, C);
      break;
    case DType::kF32:
      transpose_filter_kernel<float><<<grid, block, 0, stream>>>(static_cast<const float*>(w),
                                                                  static_cast<float*>(wt), O, taps, C);
      break;
    default: return "hopper: unsupported dtype";
  }
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("hopper: filter transpose failed: ") + cudaGetErrorString(e);
}

// ---- TMA path

template <typename T, int BN, bool SPLIT = false, int TG = 1, bool RES = false>
std::string launch_tma(const CUtensorMap& ma, const CUtensorMap& mb, const CUtensorMap& mc, const TmaArgs& a,
                       cudaStream_t stream) {
  using Cfg = TmaCfg<T, BN, SPLIT, TG, RES>;
  auto kernel = conv_tma_kernel<T, BN, SPLIT, TG, RES>;
  static std::atomic<uint64_t> smem_set{0};
  cudaError_t e = allow_smem(kernel, Cfg::kSmem, smem_set);
  if (e != cudaSuccess) return std::string("hopper: cannot raise shared memory: ") + cudaGetErrorString(e);
  kernel<<<unsigned(std::min<i64>(a.total_tiles, sm_count())), kPersistentThreads, Cfg::kSmem, stream>>>(ma, mb, mc,
                                                                                                       a);
  e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("hopper: kernel launch failed: ") + cudaGetErrorString(e);
}

// Where a K-major GEMM's results go and which filter taps it walks. Identity for the forward pass and stride-1
// grad-input; a stride residue class of grad-input otherwise (see conv_tma.cuh).
struct ResultMap {
  int full[3], ostride[3], ooff[3];
  int tap0[3], tapstep[3], kfull[3];
  bool identity = true;
};
ResultMap identity_map(const KMajorArgs& k) {
  ResultMap r;
  for (int d = 0; d < 3; ++d) {
    r.full[d] = k.out[d]; r.ostride[d] = 1; r.ooff[d] = 0;
    r.tap0[d] = 0; r.tapstep[d] = 1; r.kfull[d] = k.k[d];
  }
  return r;
}

// K-major GEMMs over one channels-last source, filter and result, in one launch: `n` classes (one for the forward
// pass and stride-1 grad-input, identity map; the stride residue classes of grad-input otherwise, at most
// kMaxClasses, sharing the source, filter, channel counts and strides). The TMA kernel where a brick fits its box
// limits, else (one identity class only) the cp.async gather kernel.
std::string run_kmajor(DType t, MathMode m, const KMajorArgs* ks, const ResultMap* rms, int n, int batch,
                       cudaStream_t stream) {
  const KMajorArgs& k = ks[0];  // the first class has the largest grid: its brick serves all
  const ResultMap& rm = rms[0];
  if (n < 1 || n > kMaxClasses || (n > 1 && rm.identity)) return "hopper: bad class count";
  const bool split = t == DType::kF32 && m == MathMode::kAccurate;  // 3xTF32: TMA path, 64-wide N tiles only
  const int bn = (k.Ng <= 64 || split) ? 64 : 128;
  Brick br;
  static const bool no_tma = std::getenv("JAXCONV3D_HOPPER_NO_TMA") != nullptr;  // test switch: gather path
  if ((no_tma && rm.identity && !split) || !brick_for(k.out, k.mstride, &br)) {
    if (!rm.identity || split) return "hopper: no TMA brick for this problem";
    return launch_dtype(t, k, bn, stream);
  }
  const uint64_t es = uint64_t(dtype_size(t));
  const int tg = tap_group(t, m, k.Cs);  // taps per K-tile (conv_tma.cuh)
  const int bk = 128 / tg / int(es);
  const int swizzle = 128 / tg;
  const int taps = rm.kfull[0] * rm.kfull[1] * rm.kfull[2];
  const int bw = 1 << br.bw_log, bh = 1 << br.bh_log, bd = 128 >> (br.bw_log + br.bh_log);
  CUtensorMap ma, mb;
  const uint64_t adims[5] = {uint64_t(k.Cs), uint64_t(k.src_ext[2]), uint64_t(k.src_ext[1]), uint64_t(k.src_ext[0]),
                             uint64_t(batch)};
  const uint64_t astr[4] = {adims[0] * es, adims[0] * adims[1] * es, adims[0] * adims[1] * adims[2] * es,
                            adims[0] * adims[1] * adims[2] * adims[3] * es};
  const uint32_t abox[5] = {uint32_t(bk), uint32_t(bw * k.mstride[2]), uint32_t(bh * k.mstride[1]),
                            uint32_t(bd * k.mstride[0]), 1};
  const uint32_t astep[5] = {1, uint32_t(k.mstride[2]), uint32_t(k.mstride[1]), uint32_t(k.mstride[0]), 1};
  std::string err = make_tensor_map(&ma, tma_type(t), 5, k.src, adims, astr, abox, astep, swizzle);
  if (!err.empty()) return err;
  const uint64_t bdims[3] = {uint64_t(k.Cs), uint64_t(taps), uint64_t(k.Ng)};
  const uint64_t bstr[2] = {bdims[0] * es, bdims[0] * bdims[1] * es};
  const uint32_t bbox[3] = {uint32_t(bk), 1, uint32_t(bn)};
  const uint32_t bstep[3] = {1, 1, 1};
  if (!(err = make_tensor_map(&mb, tma_type(t), 3, k.wgt, bdims, bstr, bbox, bstep, swizzle)).empty()) return err;
  TmaArgs a{};
  a.bias = k.bias; a.dst = k.dst; a.Ng = k.Ng; a.batch = batch;
  a.ntn = (k.Ng + bn - 1) / bn;
  a.bw_log = br.bw_log; a.bh_log = br.bh_log;
  a.cblocks = k.cblocks;
  for (int d = 0; d < 3; ++d) {
    a.mstride[d] = k.mstride[d];
    a.full[d] = rm.full[d]; a.ostride[d] = rm.ostride[d]; a.kfull[d] = rm.kfull[d];
  }
  const int ext[3] = {bd, bh, bw};
  a.nclass = n;
  i64 total = 0;
  for (int c = 0; c < n; ++c) {
    TmaClass& cl = a.cls[c];
    const KMajorArgs& kc = ks[c];
    const ResultMap& rc = rms[c];
    for (int d = 0; d < 3; ++d) {
      cl.out[d] = kc.out[d];
      cl.tiles[d] = (kc.out[d] + ext[d] - 1) / ext[d];
      cl.base[d] = kc.base[d]; cl.jstep[d] = kc.jstep[d]; cl.k[d] = kc.k[d];
      cl.tap0[d] = rc.tap0[d]; cl.tapstep[d] = rc.tapstep[d]; cl.ooff[d] = rc.ooff[d];
    }
    cl.ktiles = tg > 1 ? (kc.k[0] * kc.k[1] * kc.k[2] + tg - 1) / tg : kc.ktiles;
    cl.first_tile = int(total);
    total += i64(cl.tiles[0]) * cl.tiles[1] * cl.tiles[2] * batch * a.ntn;
  }
  if (total >= (i64(1) << 31)) return "hopper: too many tiles for one launch";
  a.total_tiles = int(total);
  // The TMA-store epilogue where results are a plain box grid (not a residue class) with 16-byte rows.
  CUtensorMap mc{};
  a.tma_store = rm.identity && !no_tma && (uint64_t(k.Ng) * es) % 16 == 0 &&
                reinterpret_cast<uintptr_t>(k.dst) % 16 == 0;
  if (a.tma_store) {
    const int bwid = std::min(bw, 64), bhgt = std::min(bh, 64 / bwid), bdep = 64 / (bwid * bhgt);
    const uint64_t cdims[5] = {uint64_t(k.Ng), uint64_t(k.out[2]), uint64_t(k.out[1]), uint64_t(k.out[0]),
                               uint64_t(batch)};
    const uint64_t cstr[4] = {cdims[0] * es, cdims[0] * cdims[1] * es, cdims[0] * cdims[1] * cdims[2] * es,
                              cdims[0] * cdims[1] * cdims[2] * cdims[3] * es};
    const uint32_t cbox[5] = {uint32_t(128 / es), uint32_t(bwid), uint32_t(bhgt), uint32_t(bdep), 1};
    const uint32_t cstep[5] = {1, 1, 1, 1, 1};
    if (!(err = make_tensor_map(&mc, tma_type(t), 5, k.dst, cdims, cstr, cbox, cstep)).empty()) return err;
  }
  // The whole filter resident in shared memory (tap pairs, one column tile, at most 28 taps: hopper_rules.h).
  if (n == 1 && rm.identity && resident_filter(t, m, k.Cs, k.Ng, taps))
    return t == DType::kBF16 ? launch_tma<__nv_bfloat16, 64, false, 2, true>(ma, mb, mc, a, stream)
                             : launch_tma<__half, 64, false, 2, true>(ma, mb, mc, a, stream);
  if (tg == 2)
    return t == DType::kBF16 ? (bn == 64 ? launch_tma<__nv_bfloat16, 64, false, 2>(ma, mb, mc, a, stream)
                                         : launch_tma<__nv_bfloat16, 128, false, 2>(ma, mb, mc, a, stream))
                             : (bn == 64 ? launch_tma<__half, 64, false, 2>(ma, mb, mc, a, stream)
                                         : launch_tma<__half, 128, false, 2>(ma, mb, mc, a, stream));
  switch (t) {
    case DType::kBF16: return bn == 64 ? launch_tma<__nv_bfloat16, 64>(ma, mb, mc, a, stream)
                                       : launch_tma<__nv_bfloat16, 128>(ma, mb, mc, a, stream);
    case DType::kF16: return bn == 64 ? launch_tma<__half, 64>(ma, mb, mc, a, stream)
                                      : launch_tma<__half, 128>(ma, mb, mc, a, stream);
    case DType::kF32:
      if (split) return launch_tma<float, 64, true>(ma, mb, mc, a, stream);
      return bn == 64 ? launch_tma<float, 64>(ma, mb, mc, a, stream)
                      : launch_tma<float, 128>(ma, mb, mc, a, stream);
    default: return "hopper: unsupported dtype";
  }
}

// One identity-map GEMM (forward, stride-1 grad-input).
std::string run_identity(DType t, MathMode m, const KMajorArgs& k, int batch, cudaStream_t stream) {
  const ResultMap rm = identity_map(k);
  return run_kmajor(t, m, &k, &rm, 1, batch, stream);
}

}  // namespace

std::string fwd(const ConvProblem& p, DType t, MathMode m, const void* x, const void* w, const void* bias, void* y,
                void* workspace, size_t workspace_bytes, void* stream) {
  if (!accepts_fwd(p, t, m)) return "hopper: forward problem not accepted";
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  Fold f;
  if (first_layer_fold(p, t, m, &f)) {  // a first layer: run the folded convolution on the folded copies
    if (workspace == nullptr || workspace_bytes < fwd_workspace_bytes(p, t, m))
      return "hopper: forward workspace too small";
    const FoldSpace ws = fold_space(f, t, workspace);
    std::string err = fold_source(p, t, f, x, ws.source, s);
    if (err.empty()) err = fold_filter(t, f, w, ws.filter, s);
    if (!err.empty()) return err;
    return fwd(f.folded, t, m, ws.source, ws.filter, bias, y, nullptr, 0, stream);
  }
  KMajorArgs a = common(p, t, int(p.in_channels), int(p.out_channels));
  a.src = x; a.wgt = w; a.bias = bias; a.dst = y;
  a.M = p.batch * p.out_spatial();
  for (int d = 0; d < 3; ++d) {
    a.out[d] = int(p.out[d]);
    a.src_ext[d] = int(p.in[d]);
    a.mstride[d] = int(p.stride[d]);
    a.base[d] = -int(p.pad_lo[d]);
    a.jstep[d] = int(p.dilation[d]);
  }
  if (a.M == 0) return "";
  return run_identity(t, m, a, int(p.batch), s);
}

std::string dgrad(const ConvProblem& p, DType t, MathMode m, const void* dy, const void* w, void* dx,
                  void* workspace, size_t workspace_bytes, void* stream) {
  if (!accepts_dgrad(p, t, m)) return "hopper: grad-input problem not accepted";
  if (workspace_bytes < dgrad_workspace_bytes(p, t, m) || workspace == nullptr)
    return "hopper: grad-input workspace too small";
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  Fold f;
  // A first layer: the folded grad-input, then each x element summed over its copies.
  if (first_layer_fold(p, t, m, &f)) {
    const ConvProblem& q = f.folded;
    const FoldSpace ws = fold_space(f, t, workspace);  // source: the folded dx
    std::string err = fold_filter(t, f, w, ws.filter, s);
    if (err.empty()) err = dgrad(q, t, m, dy, ws.filter, ws.source, ws.inner, dgrad_workspace_bytes(q, t, m), stream);
    if (err.empty()) err = unfold_source(p, t, f, ws.source, dx, s);
    return err;
  }
  std::string err = transpose_filter(p, t, w, workspace, s);
  if (!err.empty()) return err;
  if (p.batch == 0) return "";
  bool unit = true;
  for (int d = 0; d < 3; ++d) unit = unit && p.stride[d] == 1;
  if (unit) {
    KMajorArgs a = common(p, t, int(p.out_channels), int(p.in_channels));
    a.src = dy; a.wgt = workspace; a.bias = nullptr; a.dst = dx;
    a.M = p.batch * p.in_spatial();
    for (int d = 0; d < 3; ++d) {
      a.out[d] = int(p.in[d]);
      a.src_ext[d] = int(p.out[d]);
      a.mstride[d] = 1;
      a.base[d] = int(p.pad_lo[d]);
      a.jstep[d] = -int(p.dilation[d]);
    }
    return run_identity(t, m, a, int(p.batch), s);
  }
  // Stride > 1: one GEMM per residue class r (per axis r in [0, stride)), over positions i = r + q * stride and
  // the taps k = k0 + j * step with (r + pad - k * dilation) divisible by the stride; dy's coordinate for
  // (q, j) is q + (r + pad - k0 * dilation) / stride - j * step * dilation / stride.
  // Up to kMaxClasses classes share one launch (run_kmajor).
  const int classes = int(p.stride[0] * p.stride[1] * p.stride[2]);
  KMajorArgs ks[kMaxClasses];
  ResultMap rms[kMaxClasses];
  int pending = 0;
  for (int cls = 0; cls < classes; ++cls) {
    const int r[3] = {int(cls / (p.stride[1] * p.stride[2])), int((cls / p.stride[2]) % p.stride[1]),
                      int(cls % p.stride[2])};
    KMajorArgs a = common(p, t, int(p.out_channels), int(p.in_channels));
    a.src = dy; a.wgt = workspace; a.bias = nullptr; a.dst = dx;
    ResultMap rm;
    rm.identity = false;
    bool empty_grid = false, no_taps = false;
    for (int d = 0; d < 3; ++d) {
      const int st = int(p.stride[d]), dil = int(p.dilation[d]), pad = int(p.pad_lo[d]), K = int(p.kernel[d]);
      const int q = int((p.in[d] - r[d] + st - 1) / st);
      if (q <= 0) empty_grid = true;
      int k0 = 0;
      while (k0 < K && ((r[d] + pad - k0 * dil) % st + st) % st != 0) ++k0;
      int g = st, h = dil;
      while (h) { const int tmp = g % h; g = h; h = tmp; }
      const int step = st / g;
      const int count = k0 < K ? (K - 1 - k0) / step + 1 : 0;
      if (count == 0) no_taps = true;
      a.out[d] = q;
      a.src_ext[d] = int(p.out[d]);
      a.mstride[d] = 1;
      a.base[d] = k0 < K ? (r[d] + pad - k0 * dil) / st : 0;
      a.jstep[d] = -(step * dil) / st;
      a.k[d] = count;
      rm.full[d] = int(p.in[d]); rm.ostride[d] = st; rm.ooff[d] = r[d];
      rm.tap0[d] = k0; rm.tapstep[d] = step; rm.kfull[d] = K;
    }
    if (empty_grid) continue;
    if (no_taps)  // these positions receive nothing: the GEMM runs with no K-tiles and writes zeros
      for (int d = 0; d < 3; ++d) a.k[d] = 0;
    a.ktiles = a.k[0] * a.k[1] * a.k[2] * a.cblocks;
    a.M = p.batch * i64(a.out[0]) * a.out[1] * a.out[2];
    ks[pending] = a;
    rms[pending] = rm;
    if (++pending == kMaxClasses) {
      if (!(err = run_kmajor(t, m, ks, rms, pending, int(p.batch), s)).empty()) return err;
      pending = 0;
    }
  }
  return pending > 0 ? run_kmajor(t, m, ks, rms, pending, int(p.batch), s) : "";
}

}  // namespace hopper
}  // namespace jaxconv3d
