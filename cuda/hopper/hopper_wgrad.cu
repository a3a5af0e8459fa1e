// Launcher of the Hopper family's grad-weight: split-K MN-major wgmma GEMM, then a fixed-order split reduction.
#include <algorithm>
#include <cstdlib>
#include <string>

#include "hopper/conv_wgrad.cuh"
#include "hopper/conv_wgrad_bf16x3.cuh"
#include "hopper/conv_wgrad_tf32.cuh"
#include "hopper/fold.cuh"
#include "hopper/hopper_rules.h"
#include "launch_common.cuh"

namespace jaxconv3d {
namespace hopper {
namespace {

// After a grad-weight kernel: dw = the fixed-order sum of its split partials; reports either launch's failure.
template <typename T>
std::string reduce_splits(const float* partial, void* dw, int Ntot, int O, int splits, cudaStream_t stream) {
  const dim3 grid(unsigned((Ntot + 31) / 32), unsigned(std::min((O + 31) / 32, 65535)));
  if (reduce_chunks(int64_t(grid.x) * grid.y) == 4)
    wgrad_reduce_kernel<T, 4><<<grid, dim3(32, 8, 4), 0, stream>>>(partial, static_cast<T*>(dw), Ntot, O, splits);
  else
    wgrad_reduce_kernel<T, 1><<<grid, dim3(32, 8, 1), 0, stream>>>(partial, static_cast<T*>(dw), Ntot, O, splits);
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("hopper: grad-weight launch failed: ") + cudaGetErrorString(e);
}

template <typename T, int BN>
std::string launch(const WgradArgs& a, int splits, void* dw, cudaStream_t stream) {
  using Cfg = WgradCfg<BN>;
  auto kernel = conv_wgrad_kernel<T, BN>;
  static std::atomic<uint64_t> smem_set{0};
  cudaError_t e = allow_smem(kernel, Cfg::kSmem, smem_set);
  if (e != cudaSuccess) return std::string("hopper: cannot raise shared memory: ") + cudaGetErrorString(e);
  const dim3 grid(unsigned((a.Ntot + 127) / 128), unsigned((a.O + BN - 1) / BN), unsigned(splits));
  kernel<<<grid, kThreads, Cfg::kSmem, stream>>>(a);
  return reduce_splits<T>(a.partial, dw, a.Ntot, a.O, splits, stream);
}

template <typename T>
std::string launch_bn(const WgradArgs& a, int bn, int splits, void* dw, cudaStream_t stream) {
  return bn == 64 ? launch<T, 64>(a, splits, dw, stream) : launch<T, 128>(a, splits, dw, stream);
}

// The persistent TMA kernel `kernel(maps..., a)` (smem bytes `smem`, BN-wide output-channel tiles), then the split
// reduction into dw of type T.
template <typename T, int BN, typename K, typename... Maps>
std::string launch_persistent(K kernel, int smem, std::atomic<uint64_t>& smem_set, const WgradTmaArgs& a, void* dw,
                              cudaStream_t stream, const Maps&... maps) {
  cudaError_t e = allow_smem(kernel, smem, smem_set);
  if (e != cudaSuccess) return std::string("hopper: cannot raise shared memory: ") + cudaGetErrorString(e);
  const i64 tiles = i64((a.Ntot + 127) / 128) * ((a.O + BN - 1) / BN) * a.splits;
  kernel<<<unsigned(std::min<i64>(tiles, sm_count())), kPersistentThreads, smem, stream>>>(maps..., a);
  return reduce_splits<T>(a.partial, dw, a.Ntot, a.O, a.splits, stream);
}

template <typename T, int BN>
std::string launch_tma(const CUtensorMap& mx, const CUtensorMap& mdy, const WgradTmaArgs& a, void* dw,
                       cudaStream_t stream) {
  static std::atomic<uint64_t> smem_set{0};
  return launch_persistent<T, BN>(conv_wgrad_tma_kernel<T, BN>, WgradCfg<BN>::kSmem, smem_set, a, dw, stream, mx, mdy);
}

template <int BN>
std::string launch_tf32(const CUtensorMap& mx, const CUtensorMap& mdy, const WgradTmaArgs& a, void* dw,
                        cudaStream_t stream) {
  static std::atomic<uint64_t> smem_set{0};
  return launch_persistent<float, BN>(conv_wgrad_tf32_kernel<BN>, WgradTf32Cfg<BN>::kSmem, smem_set, a, dw, stream, mx,
                                      mdy);
}

// float32 results from bfloat16 parts: maps x_hi, dy_hi, x_lo, dy_lo.
template <int BN>
std::string launch_bf16x3(const CUtensorMap (&m)[4], const WgradTmaArgs& a, void* dw, cudaStream_t stream) {
  static std::atomic<uint64_t> smem_set{0};
  return launch_persistent<float, BN>(conv_wgrad_bf16x3_kernel<BN>, WgradBf16x3Cfg<BN>::kSmem, smem_set, a, dw, stream,
                                      m[0], m[1], m[2], m[3]);
}

// The TMA boxes of x and dy for a brick `br` (5-D NDHWC maps; boxes of one 128-byte row of channels).
std::string wgrad_maps(const ConvProblem& p, DType t, const Brick& br, const void* x, const void* dy, CUtensorMap* mx,
                       CUtensorMap* mdy) {
  const uint64_t es = uint64_t(dtype_size(t));
  const uint32_t box_channels = uint32_t(128 / es);  // one 128-byte swizzled row
  const CUtensorMapDataType type = tma_type(t);
  const int bw = 1 << br.bw_log, bh = 1 << br.bh_log, bd = 1 << br.bd_log;
  const uint64_t xd[5] = {uint64_t(p.in_channels), uint64_t(p.in[2]), uint64_t(p.in[1]), uint64_t(p.in[0]),
                          uint64_t(p.batch)};
  const uint64_t xs[4] = {xd[0] * es, xd[0] * xd[1] * es, xd[0] * xd[1] * xd[2] * es, xd[0] * xd[1] * xd[2] * xd[3] * es};
  const uint32_t xbox[5] = {box_channels, uint32_t(bw * p.stride[2]), uint32_t(bh * p.stride[1]), uint32_t(bd * p.stride[0]), 1};
  const uint32_t xstep[5] = {1, uint32_t(p.stride[2]), uint32_t(p.stride[1]), uint32_t(p.stride[0]), 1};
  std::string err = make_tensor_map(mx, type, 5, x, xd, xs, xbox, xstep);
  if (!err.empty()) return err;
  const uint64_t yd[5] = {uint64_t(p.out_channels), uint64_t(p.out[2]), uint64_t(p.out[1]), uint64_t(p.out[0]),
                          uint64_t(p.batch)};
  const uint64_t ys[4] = {yd[0] * es, yd[0] * yd[1] * es, yd[0] * yd[1] * yd[2] * es, yd[0] * yd[1] * yd[2] * yd[3] * es};
  const uint32_t ybox[5] = {box_channels, uint32_t(bw), uint32_t(bh), uint32_t(bd), 1};
  const uint32_t ystep[5] = {1, 1, 1, 1, 1};
  return make_tensor_map(mdy, type, 5, dy, yd, ys, ybox, ystep);
}

WgradTmaArgs wgrad_tma_args(const ConvProblem& p, DType t, const Brick& br, float* partial) {
  const WgradSplit sp = wgrad_split(p, t);
  const int bw = 1 << br.bw_log, bh = 1 << br.bh_log, bd = 1 << br.bd_log;
  WgradTmaArgs a{};
  a.partial = partial;
  a.O = int(p.out_channels);
  a.C = int(p.in_channels);
  a.taps = int(p.taps());
  a.Ntot = int(p.taps() * p.in_channels);
  for (int d = 0; d < 3; ++d) {
    a.k[d] = int(p.kernel[d]);
    a.stride[d] = int(p.stride[d]);
    a.pad[d] = int(p.pad_lo[d]);
    a.dil[d] = int(p.dilation[d]);
  }
  a.bw_log = br.bw_log; a.bh_log = br.bh_log; a.bd_log = br.bd_log;
  a.tiles[0] = int((p.out[0] + bd - 1) / bd);
  a.tiles[1] = int((p.out[1] + bh - 1) / bh);
  a.tiles[2] = int((p.out[2] + bw - 1) / bw);
  a.ktiles = int(sp.ktiles);
  a.tiles_per_split = int(sp.tiles_per_split);
  a.splits = int(sp.splits);
  return a;
}

std::string run_tma(const ConvProblem& p, DType t, const Brick& br, const void* x, const void* dy, void* dw,
                    float* partial, cudaStream_t stream) {
  CUtensorMap mx, mdy;
  const std::string err = wgrad_maps(p, t, br, x, dy, &mx, &mdy);
  if (!err.empty()) return err;
  const WgradTmaArgs a = wgrad_tma_args(p, t, br, partial);
  const int bn = wgrad_bn(p);
  if (t == DType::kF32)
    return bn == 64 ? launch_tf32<64>(mx, mdy, a, dw, stream) : launch_tf32<128>(mx, mdy, a, dw, stream);
  if (t == DType::kBF16)
    return bn == 64 ? launch_tma<__nv_bfloat16, 64>(mx, mdy, a, dw, stream)
                    : launch_tma<__nv_bfloat16, 128>(mx, mdy, a, dw, stream);
  return bn == 64 ? launch_tma<__half, 64>(mx, mdy, a, dw, stream) : launch_tma<__half, 128>(mx, mdy, a, dw, stream);
}

// x = hi + lo in bfloat16 (split_bf16_kernel), into the workspace after the partial sums.
std::string split_bf16(const void* v, i64 n, __nv_bfloat16* hi, __nv_bfloat16* lo, cudaStream_t stream) {
  const i64 blocks = std::min<i64>((n + 255) / 256, i64(sm_count()) * 16);
  split_bf16_kernel<<<unsigned(std::max<i64>(blocks, 1)), 256, 0, stream>>>(static_cast<const float*>(v), hi, lo, n);
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("hopper: grad-weight split launch failed: ") + cudaGetErrorString(e);
}

// TF32-mode grad-weight from bfloat16 parts (conv_wgrad_bf16x3.cuh). Workspace: the partial sums, then x_hi, x_lo,
// dy_hi, dy_lo (wgrad_workspace_bytes).
std::string run_bf16x3(const ConvProblem& p, const Brick& br, const void* x, const void* dy, void* dw,
                       void* workspace, cudaStream_t stream) {
  const Bf16x3Parts parts = bf16x3_parts(p, workspace);
  using B = __nv_bfloat16;
  std::string err = split_bf16(x, p.x_elements(), static_cast<B*>(parts.x_hi), static_cast<B*>(parts.x_lo), stream);
  if (err.empty())
    err = split_bf16(dy, p.y_elements(), static_cast<B*>(parts.dy_hi), static_cast<B*>(parts.dy_lo), stream);
  CUtensorMap m[4];
  if (err.empty()) err = wgrad_maps(p, DType::kBF16, br, parts.x_hi, parts.dy_hi, &m[0], &m[1]);
  if (err.empty()) err = wgrad_maps(p, DType::kBF16, br, parts.x_lo, parts.dy_lo, &m[2], &m[3]);
  if (!err.empty()) return err;
  // The split count and K-tiles of the float32 problem (wgrad_split is keyed on the dtype that sized the workspace).
  const WgradTmaArgs a = wgrad_tma_args(p, DType::kF32, br, static_cast<float*>(workspace));
  return wgrad_bn(p) == 64 ? launch_bf16x3<64>(m, a, dw, stream) : launch_bf16x3<128>(m, a, dw, stream);
}

}  // namespace

std::string wgrad(const ConvProblem& p, DType t, MathMode m, const void* x, const void* dy, void* dw,
                  void* workspace, size_t workspace_bytes, void* stream) {
  if (!accepts_wgrad(p, t, m)) return "hopper: grad-weight problem not accepted";
  if (workspace_bytes < wgrad_workspace_bytes(p, t, m) || workspace == nullptr)
    return "hopper: grad-weight workspace too small";
  Brick br;
  static const bool no_tma = std::getenv("JAXCONV3D_HOPPER_NO_TMA") != nullptr;  // test switch: gather path
  if (p.batch == 0) {  // no positions: the gradient is zero
    const cudaError_t e =
        cudaMemsetAsync(dw, 0, size_t(p.w_elements()) * dtype_size(t), static_cast<cudaStream_t>(stream));
    return e == cudaSuccess ? "" : std::string("hopper: ") + cudaGetErrorString(e);
  }
  Fold f;
  // A first layer: the folded grad-weight on the folded source, keeping each row's first f.raw channels.
  if (first_layer_fold(p, t, m, &f)) {
    const ConvProblem& q = f.folded;
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    const FoldSpace ws = fold_space(f, t, workspace);  // filter: the folded dw
    std::string err = fold_source(p, t, f, x, ws.source, s);
    if (err.empty()) err = wgrad(q, t, m, ws.source, dy, ws.filter, ws.inner, wgrad_workspace_bytes(q, t, m), stream);
    if (err.empty()) err = unfold_filter(t, f, ws.filter, dw, s);
    return err;
  }
  // TF32: from bfloat16 parts where the channels fill 128-byte bf16 rows, else transposed in shared memory; on
  // TMA only (accepts_wgrad). The test switch moves the 16-bit kinds to the gather path.
  if (wgrad_bf16x3(p, t, m) && wgrad_tma(p, DType::kBF16, &br))
    return run_bf16x3(p, br, x, dy, dw, workspace, static_cast<cudaStream_t>(stream));
  if ((t == DType::kF32 || !no_tma) && wgrad_tma(p, t, &br))
    return run_tma(p, t, br, x, dy, dw, static_cast<float*>(workspace), static_cast<cudaStream_t>(stream));
  if (t == DType::kF32) return "hopper: TF32 grad-weight needs the TMA path";
  const WgradSplit sp = wgrad_split(p, t);
  WgradArgs a{};
  a.x = x; a.dy = dy; a.partial = static_cast<float*>(workspace);
  a.M = p.batch * p.out_spatial();
  a.O = int(p.out_channels);
  a.C = int(p.in_channels);
  a.Ntot = int(p.taps() * p.in_channels);
  for (int d = 0; d < 3; ++d) {
    a.in[d] = int(p.in[d]);
    a.stride[d] = int(p.stride[d]);
    a.pad[d] = int(p.pad_lo[d]);
    a.dil[d] = int(p.dilation[d]);
    a.k[d] = int(p.kernel[d]);
  }
  a.spatial = uint32_t(p.out_spatial());
  a.div_spatial = FastDiv(a.spatial);
  a.out1 = int(p.out[1]);
  a.out2 = int(p.out[2]);
  a.div_out2 = FastDiv(uint32_t(p.out[2]));
  a.div_out1 = FastDiv(uint32_t(p.out[1]));
  // The gather path walks 64 consecutive positions per K-tile (the split count sized the workspace).
  const i64 ktiles = (a.M + 63) / 64, per_split = (ktiles + sp.splits - 1) / sp.splits;
  const int splits = int((ktiles + per_split - 1) / per_split);
  a.ktiles = int(ktiles);
  a.tiles_per_split = int(per_split);
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kBF16: return launch_bn<__nv_bfloat16>(a, wgrad_bn(p), splits, dw, s);
    case DType::kF16: return launch_bn<__half>(a, wgrad_bn(p), splits, dw, s);
    default: return "hopper: unsupported dtype";
  }
}

}  // namespace hopper
}  // namespace jaxconv3d
