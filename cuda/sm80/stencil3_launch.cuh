// What the two 3x3x3 depthwise stencils (stencil3.cu: bricks; stencil3_stream.cu: streaming along D) share: the
// store of a thread's four W outputs, and the launcher (plan, pointers, aligned-store flag, launch, dtype switch).
#pragma once

#include <type_traits>
#include <utility>

#include "sm80/common.cuh"
#include "sm80/plan.h"

namespace jaxconv3d {
namespace sm80 {

// Outputs ox .. ox + 3 of a row of `width` at o (plus the bias), rounded to T: one aligned vector store where `vec`
// allows and all four exist, else one store each.
template <typename T>
__device__ __forceinline__ void store_four(T* o, const float (&acc)[4], float bv, bool vec, int ox, int width) {
  __align__(16) T v[4];
#pragma unroll
  for (int e = 0; e < 4; ++e) v[e] = cvt<T>(acc[e] + bv);
  if (vec && ox + 4 <= width) {
    using Vec = std::conditional_t<sizeof(T) == 4, uint4, uint2>;  // four outputs
    *reinterpret_cast<Vec*>(o) = *reinterpret_cast<const Vec*>(v);
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (ox + e < width) o[e] = v[e];
  }
}

// The block's output channel, sample and first output position, for outputs of BZ x BY x BX a block (blocks run W
// fastest, then H, D, channel, sample).
struct Stencil3Block {
  i64 n;
  int oc, oz0, oy0, ox0;
};
template <int BZ, int BY, int BX>
__device__ __forceinline__ Stencil3Block stencil3_block(const Stencil3Args& a) {
  i64 b = blockIdx.x;
  const int bx = int(b % a.ntile[2]); b /= a.ntile[2];
  const int by = int(b % a.ntile[1]); b /= a.ntile[1];
  const int bz = int(b % a.ntile[0]); b /= a.ntile[0];
  const int oc = int(b % a.OC);
  return Stencil3Block{b / a.OC, oc, bz * BZ, by * BY, bx * BX};
}

using Stencil3Plan = bool (*)(const ConvProblem&, bool, DType, Stencil3Args*, int64_t*);

// Plans the problem with `plan`, then launches `kernel` (T's instantiation of a 3x3x3 stencil) over its blocks; as
// a programmatic dependent (launch_common.cuh) where `dependent` (the kernel then calls pdl_wait() first).
template <typename T, typename K>
std::string launch_stencil3(Stencil3Plan plan, K kernel, int threads, const ConvProblem& p, DType t, bool dgrad,
                            const void* src, const void* w, const void* bias, void* out, void* stream,
                            const char* what, bool dependent = false) {
  Stencil3Args s;
  int64_t blocks = 0;
  if (!plan(p, dgrad, t, &s, &blocks))
    return std::string("jaxconv3d cuda: the ") + what + " does not apply to this problem";
  if (blocks == 0) return "";
  s.src = src; s.wt = w; s.bias = bias; s.out = out;
  s.vec = s.od[2] % 4 == 0 && reinterpret_cast<uintptr_t>(out) % (4 * sizeof(T)) == 0;
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (dependent)
    launch_dependent(kernel, dim3(unsigned(blocks)), dim3(threads), 0, st, s);
  else
    kernel<<<unsigned(blocks), threads, 0, st>>>(s);
  return launch_error(what);
}

// f(T{}) for the dtypes the 3x3x3 stencils take.
template <typename F>
std::string for_stencil3_dtype(DType t, F&& f) {
  return with_float_dtype(t, std::forward<F>(f),
                          "jaxconv3d cuda: the 3x3x3 depthwise stencil takes float32, bfloat16 and float16");
}

}  // namespace sm80
}  // namespace jaxconv3d
