// Launcher of the first-layer grad-input on registers (conv_smallc_dgrad.cuh): one block per (sample, D chunk,
// dx brick), the plan's shared-memory layout, either layout's strides.
#include <atomic>
#include <string>

#include "hopper/conv_smallc_dgrad.cuh"
#include "hopper/hopper_conv.h"
#include "hopper/hopper_rules.h"
#include "launch_common.cuh"

namespace jaxconv3d {
namespace hopper {
namespace {

// One kernel (OVERLAP: two P buffers), its own shared-memory flag: the attribute belongs to the function, so two
// kernels behind one flag would leave the second at the default 48 KB (a launch error for whichever a process met
// second; found by a fresh-seed GPU pass).
template <typename T, bool SPLIT, int NR, bool OVERLAP>
std::string launch_kernel(const SmallCDgradArgs& a, const SmallCDgrad& s, cudaStream_t stream) {
  auto kernel = conv_smallc_dgrad_kernel<T, SPLIT, NR, OVERLAP>;
  static std::atomic<uint64_t> smem_set{0};
  cudaError_t e = allow_smem(kernel, kSmallCDgradSmemLimit, smem_set);
  if (e != cudaSuccess) return std::string("hopper: cannot raise shared memory: ") + cudaGetErrorString(e);
  kernel<<<unsigned(s.blocks), SmallCDgradCfg<T>::kThreads, s.smem, stream>>>(a);
  e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("hopper: kernel launch failed: ") + cudaGetErrorString(e);
}

template <typename T, bool SPLIT, int NR>
std::string launch(const SmallCDgradArgs& a, const SmallCDgrad& s, cudaStream_t stream) {
  if constexpr (sizeof(T) == 2) {  // two P buffers: the next plane's products overlap this plane's tap sums
    if (s.pbufs == 2) return launch_kernel<T, SPLIT, NR, true>(a, s, stream);
  }
  return launch_kernel<T, SPLIT, NR, false>(a, s, stream);
}

template <typename T, bool SPLIT>
std::string launch_nr(const SmallCDgradArgs& a, const SmallCDgrad& s, cudaStream_t stream) {
  switch (s.nr) {
    case 32: return launch<T, SPLIT, 32>(a, s, stream);
    case 64: return launch<T, SPLIT, 64>(a, s, stream);
    case 88: return launch<T, SPLIT, 88>(a, s, stream);
    default: return launch<T, SPLIT, 128>(a, s, stream);
  }
}

}  // namespace

std::string dgrad_smallc(const ConvProblem& p, DType t, MathMode m, const void* dy, const void* w, void* dx,
                         void* stream) {
  SmallCDgrad s;
  if (!smallc_dgrad_plan(p, t, m, &s)) return "hopper: first-layer grad-input problem not accepted";
  if (p.batch == 0) return "";
  const bool last = p.layout == Layout::kNDHWC;
  const int64_t O = p.out_channels, C = p.in_channels, So = p.out_spatial(), Si = p.in_spatial();
  SmallCDgradArgs a{};
  a.dy = dy; a.w = w; a.dx = dx;
  a.O = int(O); a.C = int(C); a.K = int(C * p.taps());
  a.channels_last = last ? 1 : 0;
  a.vec = last && O % 16 == 0 && reinterpret_cast<uintptr_t>(dy) % 16 == 0;
  for (int d = 0; d < 3; ++d) {
    a.in[d] = int(p.in[d]); a.out[d] = int(p.out[d]); a.pad[d] = int(p.pad_lo[d]);
    a.dil[d] = int(p.dilation[d]); a.k[d] = int(p.kernel[d]);
    a.span[d] = int(p.span(d));
  }
  a.th = s.th; a.tw = s.tw;
  a.thd = s.th + a.span[1] - 1; a.twd = s.tw + a.span[2] - 1;
  a.tiles_h = int(s.tiles_h); a.tiles_w = int(s.tiles_w); a.dz = int(s.dz); a.dchunks = int(s.dchunks);
  a.ys_n = O * So; a.ys_c = last ? 1 : So;
  a.ys_d = (last ? O : 1) * p.out[1] * p.out[2]; a.ys_h = (last ? O : 1) * p.out[2]; a.ys_w = last ? O : 1;
  a.xs_n = C * Si; a.xs_c = last ? 1 : Si;
  a.xs_d = (last ? C : 1) * p.in[1] * p.in[2]; a.xs_h = (last ? C : 1) * p.in[2]; a.xs_w = last ? C : 1;
  a.p_off = int(smallc_dgrad_filter_bytes(s.nr, s.split, dtype_size(t)));
  a.ring_off = a.p_off + s.pbufs * int(smallc_dgrad_p_bytes(s.ps));
  a.ps = s.ps;
  a.pbufs = s.pbufs;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return s.split ? launch_nr<float, true>(a, s, st) : launch_nr<float, false>(a, s, st);
    case DType::kBF16: return launch_nr<__nv_bfloat16, false>(a, s, st);
    case DType::kF16: return launch_nr<__half, false>(a, s, st);
    default: return "hopper: unsupported dtype";
  }
}

}  // namespace hopper
}  // namespace jaxconv3d
