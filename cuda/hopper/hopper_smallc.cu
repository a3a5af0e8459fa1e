// Launcher of the first-layer forward on registers (conv_smallc.cuh): the problem's strides for either layout, and
// a persistent grid of as many blocks as fit on the device at once (each stages the filter once).
#include <atomic>
#include <string>

#include "hopper/conv_smallc.cuh"
#include "hopper/hopper_conv.h"
#include "hopper/hopper_rules.h"
#include "hopper/tma.cuh"
#include "launch_common.cuh"

namespace jaxconv3d {
namespace hopper {
namespace {

template <typename T, bool SPLIT, int NKS = kSmallCSteps>
std::string launch(const SmallCArgs& a, const CUtensorMap& ymap, cudaStream_t stream) {
  if constexpr (NKS > 1) {
    if (a.nks < NKS) return launch<T, SPLIT, NKS - 1>(a, ymap, stream);
  }
  auto kernel = conv_smallc_kernel<T, SPLIT, NKS>;
  using Cfg = SmallCCfg<T, SPLIT>;
  const bool stage = a.planar_vec || a.tma_store;
  const int smem = Cfg::smem_bytes(a.nblocks, stage);
  static std::atomic<uint64_t> smem_set{0};
  cudaError_t e = allow_smem(kernel, Cfg::smem_bytes(kSmallCMaxBlocks, true), smem_set);
  if (e != cudaSuccess) return std::string("hopper: cannot raise shared memory: ") + cudaGetErrorString(e);
  static std::atomic<int> per_sm_cache[64][2 * (kSmallCMaxBlocks + 1)];  // slot: the smem size's (blocks, stage)
  const int per_sm =
      resident_blocks(kernel, 128, smem, size_t(2 * a.nblocks + stage), per_sm_cache);
  if (per_sm <= 0) return "hopper: the first-layer kernel does not fit a multiprocessor";
  const unsigned grid = unsigned(std::min<int64_t>(a.tiles, int64_t(per_sm) * sm_count()));
  kernel<<<grid, 128, smem, stream>>>(a, ymap);
  e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("hopper: kernel launch failed: ") + cudaGetErrorString(e);
}

// 16-bit results leave by TMA stores of whole 64 x 64 tiles (a.tma_store, conv_smallc.cuh) where a map can describe
// y: rows of a multiple of 16 bytes, y 16-byte aligned, coordinates inside int32. Elsewhere the results are stored
// from the accumulators (NDHWC) or through the staged 16-byte stores (NCDHW).
std::string result_map(const ConvProblem& p, DType t, void* y, SmallCArgs* a, CUtensorMap* map) {
  a->tma_store = 0;
  const uint64_t O = uint64_t(p.out_channels), S = uint64_t(p.out_spatial()), N = uint64_t(p.batch), M = a->g.M;
  if (dtype_size(t) != 2 || reinterpret_cast<uintptr_t>(y) % 16 != 0) return "";
  const CUtensorMapDataType type = tma_type(t);
  const uint32_t box[3] = {64, 64, 1}, step[3] = {1, 1, 1};
  if (p.layout == Layout::kNDHWC && O % 8 == 0 && M < (1ull << 31)) {
    const uint64_t dims[2] = {O, M}, strides[1] = {O * 2};
    a->tma_store = 1;
    return make_tensor_map(map, type, 2, y, dims, strides, box, step);
  }
  if (p.layout == Layout::kNCDHW && S % 8 == 0 && S < (1ull << 31)) {
    const uint64_t dims[3] = {S, O, N}, strides[2] = {S * 2, O * S * 2};
    a->tma_store = 2;
    return make_tensor_map(map, type, 3, y, dims, strides, box, step);
  }
  return "";
}

}  // namespace

std::string fwd_smallc(const ConvProblem& p, DType t, MathMode m, const void* x, const void* w, const void* bias,
                       void* y, void* stream) {
  SmallC s;
  if (!smallc_plan(p, t, m, &s)) return "hopper: first-layer forward problem not accepted";
  if (p.batch == 0) return "";
  SmallCArgs a{};
  a.g = smallc_geom(p);
  a.x = x; a.w = w; a.bias = bias; a.y = y;
  a.tiles = (a.g.M + 63) / 64;
  a.nks = s.steps; a.nblocks = s.nblocks;
  const int64_t S = p.out_spatial();
  const bool last = p.layout == Layout::kNDHWC;
  a.pairs = last && p.out_channels % 2 == 0 && reinterpret_cast<uintptr_t>(y) % (2 * dtype_size(t)) == 0;
  a.S = uint32_t(S);
  a.div_s = FastDiv(uint32_t(S));
  a.planar_vec = !last && (S * dtype_size(t)) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0;
  CUtensorMap ymap{};
  const std::string err = result_map(p, t, y, &a, &ymap);
  if (!err.empty()) return err;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return s.split ? launch<float, true>(a, ymap, st) : launch<float, false>(a, ymap, st);
    case DType::kBF16: return launch<__nv_bfloat16, false>(a, ymap, st);
    case DType::kF16: return launch<__half, false>(a, ymap, st);
    default: return "hopper: unsupported dtype";
  }
}

}  // namespace hopper
}  // namespace jaxconv3d
