// 16-bit tensor-core helpers the depthwise kernels share (sm80/stencil3_mma.cu, sm80/wgrad_dw3_mma.cu,
// hopper/depthwise_band.cu): m16n8k16 mma.sync with float accumulators, ldmatrix (.x4 and .x4.trans), the banded
// stencils' B fragment, and two floats packed into a 16-bit pair. T (bfloat16 or half) is passed as a null pointer tag.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "device_common.cuh"

namespace jaxconv3d {
namespace sm80 {

__device__ __forceinline__ unsigned pack2(float lo, float hi, __nv_bfloat16*) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&v);
}
__device__ __forceinline__ unsigned pack2(float lo, float hi, __half*) {
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&v);
}

// D += A B on m16n8k16 tiles with float accumulators (A, B: T = bfloat16 or half).
__device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], __nv_bfloat16*) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], __half*) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// D = A B + c on m16n8k16 tiles (C = c everywhere): starts an accumulator tile at a bias without moving it there
// first.
__device__ __forceinline__ void mma_from(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], float c,
                                         __nv_bfloat16*) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%10,%11,%12,%13};\n"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c), "f"(c), "f"(c), "f"(c));
}
__device__ __forceinline__ void mma_from(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], float c,
                                         __half*) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%10,%11,%12,%13};\n"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c), "f"(c), "f"(c), "f"(c));
}

// ldmatrix from a shared-space address (lane l names row l % 8 of matrix l / 8).
__device__ __forceinline__ void ldmatrix_x4_shared(unsigned (&a)[4], unsigned s) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(s));
}
// The same, each 8 x 8 matrix transposed: lane l gets column l / 4, rows 2 (l % 4) and the next of each matrix.
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned (&a)[4], unsigned s) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
               : "r"(s));
}

// The banded depthwise stencils' B (sm80/stencil3_mma.cu, hopper/depthwise_band.cu): this lane's m16n8k16 B
// fragment of channel c's W taps of (kd, kh) = q, B[k][n] = tap[q][k - n] where 0 <= k - n <= 2, else 0. kb = the
// lane's first k (2 (lane % 4), less any window shift) minus its n (lane / 4); w holds 27 taps a channel, read
// flipped for grad-input.
template <typename T>
__device__ __forceinline__ void band_fragment(unsigned (&b)[2], const T* w, long long c, int q, int kb, bool flip) {
  float v[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int kw = kb + (i & 1) + 8 * (i >> 1), tap = q * 3 + kw;
    v[i] = unsigned(kw) <= 2u ? cvt<float>(w[c * 27 + (flip ? 26 - tap : tap)]) : 0.0f;
  }
  b[0] = pack2(v[0], v[1], static_cast<T*>(nullptr));
  b[1] = pack2(v[2], v[3], static_cast<T*>(nullptr));
}

__device__ __forceinline__ void ldmatrix_x4(unsigned (&a)[4], const void* p) {
  ldmatrix_x4_shared(a, static_cast<unsigned>(__cvta_generic_to_shared(p)));
}

}  // namespace sm80
}  // namespace jaxconv3d
