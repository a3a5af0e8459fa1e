// Launcher of the first-layer grad-weight (conv_smallc_wgrad.cuh's register form, conv_smallc_wgrad_halo.cuh's
// halo'd form for channels-last layers): one block per split of the positions, then the fixed-order
// reduction of the splits' partial sums into dw.
#include <atomic>
#include <string>

#include "hopper/conv_smallc_wgrad_halo.cuh"
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

// The halo'd form: RB warpgroups, buffers sized by the halo.
// `table`: the offset table's entries (the whole halo, or one plane for the 16-bit ring); the ring's slots round each
// plane to 16 bytes, so the bound allows for that.
template <typename Kernel>
std::string launch_halo(Kernel kernel, int es, int rb, const SmallCWgradHaloArgs& a, uint32_t table, int splits,
                        std::atomic<uint64_t>& smem_set, cudaStream_t stream) {
  const auto bytes = [es](uint32_t copy, uint32_t halo) {
    return es == 2 ? SmallCHaloCfg<2>::smem_bytes(copy, halo) : SmallCHaloCfg<4>::smem_bytes(copy, halo);
  };
  const uint32_t most = uint32_t(kSmallCHaloElems * es + 16 * kSmallCHaloElems / kSmallCHaloBW);
  cudaError_t e = allow_smem(kernel, bytes(most, uint32_t(kSmallCHaloElems)), smem_set);
  if (e != cudaSuccess) return std::string("hopper: cannot raise shared memory: ") + cudaGetErrorString(e);
  kernel<<<unsigned(splits), 128 * rb, bytes(a.copy_bytes, table), stream>>>(a);
  e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("hopper: kernel launch failed: ") + cudaGetErrorString(e);
}

template <typename T, int RB>
std::string launch_halo_rb(const SmallCWgrad& s, const SmallCWgradHaloArgs& a, cudaStream_t stream) {
  static std::atomic<uint64_t> smem_set[2] = {0, 0};
  if constexpr (sizeof(T) == 2) {
    return launch_halo(conv_smallc_wgrad_halo_kernel<T, RB>, 2, RB, a, a.plane, int(s.splits), smem_set[0], stream);
  } else {
    return s.split ? launch_halo(conv_smallc_wgrad_halo_f32_kernel<true, RB>, 4, RB, a, a.halo, int(s.splits), smem_set[1], stream)
                   : launch_halo(conv_smallc_wgrad_halo_f32_kernel<false, RB>, 4, RB, a, a.halo, int(s.splits), smem_set[0], stream);
  }
}

template <typename T>
std::string launch_halo_blocks(const SmallCWgrad& s, const SmallCWgradHaloArgs& a, cudaStream_t stream) {
  if constexpr (sizeof(T) == 2) {  // three row blocks: K > 128, 16-bit only (float32 stops at 96)
    if (s.rb == 3) return launch_halo_rb<T, 3>(s, a, stream);
  }
  if (s.rb == 2) return launch_halo_rb<T, 2>(s, a, stream);
  return launch_halo_rb<T, 1>(s, a, stream);
}

template <typename T>
std::string reduce(const SmallCWgrad& s, const ConvProblem& p, const float* partial, void* dw, cudaStream_t stream) {
  const int O = int(p.out_channels), K = int(p.in_channels * p.taps());
  smallc_wgrad_reduce_kernel<T><<<unsigned(K), 64 * kReduceChunks, 0, stream>>>(
      partial, static_cast<T*>(dw), int(s.splits), O, K, s.rb * 64);
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("hopper: kernel launch failed: ") + cudaGetErrorString(e);
}

}  // namespace

std::string wgrad_smallc(const ConvProblem& p, DType t, MathMode m, const void* x, const void* dy, void* dw,
                         void* workspace, size_t workspace_bytes, void* stream) {
  SmallCWgrad s;
  // The halo'd form copies dy's rows 16 bytes at a time: a dy that is not 16-byte aligned takes the register form
  // (the workspace covers both).
  const bool aligned = reinterpret_cast<uintptr_t>(dy) % 16 == 0;
  if (!smallc_wgrad_plan(p, t, m, &s, aligned)) return "hopper: first-layer grad-weight problem not accepted";
  if (workspace_bytes < smallc_wgrad_workspace_bytes(p, t, m) || (s.splits > 0 && workspace == nullptr))
    return "hopper: first-layer grad-weight workspace too small";
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  SmallCWgradArgs a{};  // the register form
  a.g = smallc_geom(p);
  a.x = x; a.dy = dy;
  a.partial = static_cast<float*>(workspace);
  a.tiles = uint32_t(s.tiles);
  a.tiles_per_split = uint32_t(s.tiles_per_split);
  SmallCWgradHaloArgs h{};  // the halo'd form: the same, with its bricks and halo
  if (s.halo) {
    static_cast<SmallCWgradArgs&>(h) = a;
    h.tiles_h = int(s.tiles_h); h.tiles_w = int(s.tiles_w);
    h.hd = s.hd; h.hh = s.hh; h.hw = s.hw;
    h.halo = uint32_t(p.in_channels * s.hd * s.hh * s.hw);
    h.plane = uint32_t(p.in_channels * s.hh * s.hw);
    h.plane_bytes = uint32_t(h.plane * dtype_size(t) + 15) / 16 * 16;
    // 16-bit: the ring of planes (conv_smallc_wgrad_halo.cuh) where float32 keeps whole halos
    h.copy_bytes = dtype_size(t) == 2 ? uint32_t(s.hd) * h.plane_bytes : uint32_t(h.halo * dtype_size(t) + 15) / 16 * 16;
    h.div_tw = FastDiv(uint32_t(s.tiles_w));
    h.div_th = FastDiv(uint32_t(s.tiles_h));
    h.div_od = FastDiv(uint32_t(p.out[0]));
    h.div_hw = FastDiv(uint32_t(s.hw));
  }
  return with_float_dtype(t, [&](auto tag) -> std::string {
    using T = decltype(tag);
    std::string err;
    if (s.splits > 0 && s.halo) {
      err = launch_halo_blocks<T>(s, h, st);
    } else if (s.splits > 0) {  // no positions (batch 0): dw is only zeroed by the reduction
      if constexpr (sizeof(T) == 4) {
        err = s.split ? launch_blocks<float, true>(s, a, st) : launch_blocks<float, false>(s, a, st);
      } else {
        err = launch_blocks<T, false>(s, a, st);
      }
    }
    return err.empty() ? reduce<T>(s, p, a.partial, dw, st) : err;
  }, "hopper: unsupported dtype");
}

}  // namespace hopper
}  // namespace jaxconv3d
