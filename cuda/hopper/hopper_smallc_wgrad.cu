// Launcher of the first-layer grad-weight on registers (conv_smallc_wgrad.cuh): one block per split of the
// positions, then the fixed-order reduction of the splits' partial sums into dw.
#include <atomic>
#include <string>

#include "hopper/conv_smallc_wgrad.cuh"
#include "hopper/hopper_conv.h"
#include "hopper/hopper_rules.h"
#include "launch_common.cuh"

namespace jaxconv3d {
namespace hopper {
namespace {

template <typename T, bool SPLIT, int RB>
std::string launch(const SmallCWgradArgs& a, int splits, cudaStream_t stream) {
  auto kernel = conv_smallc_wgrad_kernel<T, SPLIT, RB>;
  const int smem = SmallCWgradCfg<T, SPLIT>::kSmem;
  static std::atomic<uint64_t> smem_set{0};
  cudaError_t e = allow_smem(kernel, smem, smem_set);
  if (e != cudaSuccess) return std::string("hopper: cannot raise shared memory: ") + cudaGetErrorString(e);
  kernel<<<unsigned(splits), 128 * RB, smem, stream>>>(a);  // a warpgroup per row block
  e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("hopper: kernel launch failed: ") + cudaGetErrorString(e);
}

template <typename T, bool SPLIT>
std::string launch_blocks(const SmallCWgrad& s, const SmallCWgradArgs& a, cudaStream_t stream) {
  const int splits = int(s.splits);
  if constexpr (sizeof(T) == 2) {  // three row blocks: K > 128, 16-bit only (float32 stops at 96)
    if (s.rb == 3) return launch<T, SPLIT, 3>(a, splits, stream);
  }
  if (s.rb == 2) return launch<T, SPLIT, 2>(a, splits, stream);
  return launch<T, SPLIT, 1>(a, splits, stream);
}

template <typename T>
std::string reduce(const SmallCWgrad& s, const ConvProblem& p, const float* partial, void* dw, cudaStream_t stream) {
  const int O = int(p.out_channels), K = int(p.in_channels * p.taps());
  smallc_wgrad_reduce_kernel<T><<<unsigned((O * K + 255) / 256), 256, 0, stream>>>(
      partial, static_cast<T*>(dw), int(s.splits), O, K, s.rb * 64);
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("hopper: kernel launch failed: ") + cudaGetErrorString(e);
}

}  // namespace

std::string wgrad_smallc(const ConvProblem& p, DType t, MathMode m, const void* x, const void* dy, void* dw,
                         void* workspace, size_t workspace_bytes, void* stream) {
  SmallCWgrad s;
  if (!smallc_wgrad_plan(p, t, m, &s)) return "hopper: first-layer grad-weight problem not accepted";
  if (workspace_bytes < smallc_wgrad_workspace_bytes(p, t, m) || (s.splits > 0 && workspace == nullptr))
    return "hopper: first-layer grad-weight workspace too small";
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  SmallCWgradArgs a{};
  a.g = smallc_geom(p);
  a.x = x; a.dy = dy;
  a.partial = static_cast<float*>(workspace);
  a.tiles = uint32_t(s.tiles);
  a.tiles_per_split = uint32_t(s.tiles_per_split);
  std::string err;
  if (s.splits > 0) {  // no positions (batch 0): dw is only zeroed by the reduction
    switch (t) {
      case DType::kF32:
        err = s.split ? launch_blocks<float, true>(s, a, st) : launch_blocks<float, false>(s, a, st);
        break;
      case DType::kBF16: err = launch_blocks<__nv_bfloat16, false>(s, a, st); break;
      case DType::kF16: err = launch_blocks<__half, false>(s, a, st); break;
      default: return "hopper: unsupported dtype";
    }
  }
  if (!err.empty()) return err;
  switch (t) {
    case DType::kF32: return reduce<float>(s, p, a.partial, dw, st);
    case DType::kBF16: return reduce<__nv_bfloat16>(s, p, a.partial, dw, st);
    case DType::kF16: return reduce<__half>(s, p, a.partial, dw, st);
    default: return "hopper: unsupported dtype";
  }
}

}  // namespace hopper
}  // namespace jaxconv3d
