// 16-bit tensor-core helpers the depthwise kernels share (sm80/stencil3_mma.cu, sm80/wgrad_dw3_mma.cu,
// sm80/dw3_bwd_mma.cu, hopper/depthwise_band.cu): m16n8k16 mma.sync with float accumulators, ldmatrix (.x4, .x2 and
// .x4.trans), the banded stencils' B fragment, A tiles from shared column blocks and plane store, the packed
// grad-weight's A fragments and tap sums, and two floats packed into a 16-bit pair. T (bfloat16 or half) is passed as
// a null pointer tag.
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
// Two 8 x 8 matrices (lanes 0-15 give the row addresses).
__device__ __forceinline__ void ldmatrix_x2_shared(unsigned (&a)[2], unsigned s) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(a[0]), "=r"(a[1]) : "r"(s));
}

// The banded stencils' A tiles of one 16-row source block: tile j is the 16 x 16 window at columns 8 j .. 8 j + 15,
// so tiles j and j + 1 share an 8-column block (tile j's k 8..15 are tile j + 1's k 0..7). The kTiles + 1 column
// blocks are read once each, two a ldmatrix.x4 (the last alone by .x2 when kTiles is even): 2.5 matrices a tile
// instead of 4. `s`: this lane's shared address of column 0 (lane l names row l % 16, columns 8 (l / 16)). Used by
// the fused backward's grad-input (L1-bound); the stencils keep one .x4 a tile, cheaper in their instructions
// (docs/perf.md v31).
template <int kTiles>
__device__ __forceinline__ void band_a_tiles(unsigned (&a)[kTiles][4], unsigned s) {
  unsigned blk[kTiles + 1][2];  // column block b: rows 0-7 and 8-15
#pragma unroll
  for (int b = 0; b + 1 <= kTiles; b += 2) {
    unsigned v[4];
    ldmatrix_x4_shared(v, s + 2u * 8 * b);
    blk[b][0] = v[0], blk[b][1] = v[1], blk[b + 1][0] = v[2], blk[b + 1][1] = v[3];
  }
  if (kTiles % 2 == 0) {
    unsigned v[2];
    ldmatrix_x2_shared(v, s + 2u * 8 * kTiles);
    blk[kTiles][0] = v[0], blk[kTiles][1] = v[1];
  }
#pragma unroll
  for (int j = 0; j < kTiles; ++j) {
    a[j][0] = blk[j][0], a[j][1] = blk[j][1], a[j][2] = blk[j + 1][0], a[j][3] = blk[j + 1][1];
  }
}

// The banded stencils' plane store: a warp's 16 x 32 accumulator plane (four 8-column tiles, this lane's rows g and
// g + 8) as 16-bit pairs from `op` (the lane's first output), rows `pitch` elements apart, where bit 4 half + j of
// `store` is set.
template <typename T>
__device__ __forceinline__ void store_plane(T* op, long long pitch, unsigned store, const float (&acc)[4][4]) {
#pragma unroll
  for (int half = 0; half < 2; ++half)
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (store >> (4 * half + j) & 1u)
        *reinterpret_cast<unsigned*>(op + half * (8 * pitch) + 8 * j) =
            pack2(acc[j][2 * half], acc[j][2 * half + 1], static_cast<T*>(nullptr));
}

// The packed depthwise grad-weight (sm80/wgrad_dw3_mma.cu, sm80/dw3_bwd_mma.cu): one mma.sync takes 16 x columns
// as K against the 15 (kw, dy row r') pairs p = 5 kw + r' as M rows m (kPackedRows), so C[m][r' + kh] is tap
// (kd, kh, kw). Lane (g, t) holds rows m = g and g + 8 (m = 15 repeats row 0's pair: its C row is never read, and an
// mma's rows are independent); row m reads staged dy row row0 + r' from element shift e0 + 2 - kw: 32-bit words
// (that) / 2 + k / 2 and the next, permuted where the shift is odd. `pitch`: the staged rows' elements.
// Which pair a row takes decides the banks of packed_a's loads: eight rows of a load, each reading the four or five
// words its shift and t cover. With m = 5 kw + r' and 20-word rows (dw3_bwd_mma.cu's pitch, which its ldmatrix
// needs) half the loads were two-way conflicts (docs/perf.md v31: 1.42 M conflicts in the fused kernel); this order
// is conflict-free for every shift at 20- and 26-word rows (scripts/packed_rows.py searched and checks it).
constexpr unsigned long long kPackedRows = 0xcb08673e92a51d4cull;  // 4 bits a row m: its pair p = 5 kw + r'
constexpr unsigned long long kPackedRowOf = 0x820e57cab41963dull;  // 4 bits a pair p: its row m
__device__ __forceinline__ void packed_a_setup(int (&aword)[2], unsigned (&asel)[2], int lane, int row0, int pitch,
                                               int e0) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int p = int(kPackedRows >> (4 * (g + 8 * h)) & 15u), kw = p / 5, r = p % 5, sh = e0 + 2 - kw;
    asel[h] = (sh & 1) ? 0x5432u : 0x3210u;
    aword[h] = (row0 + r) * (pitch / 2) + (sh >> 1) + t;
  }
}
// The A fragments of one group of five dy rows (`words`: the group's first staged row as 32-bit words), for the
// two 16-column windows w: k = 2 t (+ 8) + 16 w are words 8 w (+ 4) past the lane's first, and the next.
__device__ __forceinline__ void packed_a(unsigned (&av)[2][4], const unsigned* words, const int (&aword)[2],
                                         const unsigned (&asel)[2]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const unsigned* ap = words + aword[h];
#pragma unroll
    for (int w = 0; w < 2; ++w) {
      av[w][h] = __byte_perm(ap[8 * w], ap[8 * w + 1], asel[h]);
      av[w][h + 2] = __byte_perm(ap[8 * w + 4], ap[8 * w + 5], asel[h]);
    }
  }
}
// Its C fragments (acc[kd]) of a block's kWarps warps summed in a fixed order (warp, then r') into tap
// 9 kd + 3 kh + kw, returned to thread (that tap) < 27 (others get 0). `red` holds kWarps x 3 x 16 x 8 floats; call
// after a __syncthreads() that frees it (this syncs once more).
template <int kWarps>
__device__ __forceinline__ float packed_tap_sum(float* red, const float (&acc)[3][4], int warp, int lane) {
  const int g = lane >> 2, t2 = 2 * (lane & 3);
#pragma unroll
  for (int kd = 0; kd < 3; ++kd)
#pragma unroll
    for (int i = 0; i < 4; ++i) red[((warp * 3 + kd) * 16 + g + 8 * (i >> 1)) * 8 + t2 + (i & 1)] = acc[kd][i];
  __syncthreads();
  float s = 0.0f;
  if (threadIdx.x < 27) {
    const int kd = threadIdx.x / 9, kh = threadIdx.x / 3 % 3, kw = threadIdx.x % 3;
#pragma unroll
    for (int w = 0; w < kWarps; ++w)
#pragma unroll
      for (int r = 0; r < 5; ++r) {
        const int m = int(kPackedRowOf >> (4 * (5 * kw + r)) & 15u);  // the row of pair (kw, r)
        s += red[((w * 3 + kd) * 16 + m) * 8 + r + kh];
      }
  }
  return s;
}

}  // namespace sm80
}  // namespace jaxconv3d
