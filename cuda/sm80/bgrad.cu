// sm80 grad-bias: one block per output channel, fixed-order reduction over the batch and positions (NCDHW dy).
#include "sm80/common.cuh"
#include "sm80/sm80.h"

namespace jaxconv3d {
namespace sm80 {
namespace {

template <typename T, typename Acc>
__global__ void __launch_bounds__(256) bgrad_kernel(const T* __restrict__ dy, T* __restrict__ db, i64 batch, int O,
                                                    i64 Osp, int o0) {
  __shared__ Acc s_red[8];
  const int o = blockIdx.x + o0;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  Acc v = 0;
  for (i64 n = 0; n < batch; ++n) {
    const T* p = dy + (n * O + o) * Osp;
    for (i64 i = tid; i < Osp; i += 256) v += cvt<Acc>(p[i]);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  if (lane == 0) s_red[warp] = v;
  __syncthreads();
  if (tid == 0) {
    Acc s = 0;
#pragma unroll
    for (int w = 0; w < 8; ++w) s += s_red[w];
    db[o] = cvt<T>(s);
  }
}

template <typename T>
std::string bgrad_impl(const ConvProblem& p, const void* dy, void* db, cudaStream_t st) {
  using Acc = typename AccOf<T>::type;
  for (i64 o0 = 0; o0 < p.out_channels; o0 += INT_MAX / 2) {
    const i64 nb = std::min<i64>(INT_MAX / 2, p.out_channels - o0);
    bgrad_kernel<T, Acc><<<(unsigned)nb, 256, 0, st>>>(static_cast<const T*>(dy), static_cast<T*>(db), p.batch,
                                                      (int)p.out_channels, p.out_spatial(), (int)o0);
    const std::string e = launch_error("bgrad");
    if (!e.empty()) return e;
  }
  return "";
}

}  // namespace

std::string bgrad(const ConvProblem& p, DType t, const void* dy, void* db, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return bgrad_impl<float>(p, dy, db, st);
    case DType::kF64: return bgrad_impl<double>(p, dy, db, st);
    case DType::kBF16: return bgrad_impl<__nv_bfloat16>(p, dy, db, st);
    case DType::kF16: return bgrad_impl<__half>(p, dy, db, st);
  }
  return "jaxconv3d cuda: unknown dtype";
}

}  // namespace sm80
}  // namespace jaxconv3d
