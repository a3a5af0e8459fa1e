// sm80 depthwise 3x3x3 stencil on tensor cores, for 16-bit tensors (stride 1, dilation 1, channel multiplier 1):
// forward, and grad-input as the same stencil run on dy with the filter flipped. The FFMA stencils issue ~2
// instructions per multiply-add and 16-bit tensors halve the bytes, so they are issue-bound at 2-5x the memory
// floor; here each W tap row is a banded (Toeplitz) matrix and a warp's 16 x 8 output tile takes a source row
// block's three W taps in one mma.sync:
//   out[h][w0 + n] += sum_k  x[h + kh - P1][w0 - S + k] * B[k][n],   B[k][n] = tap[kd][kh][k - n - e] (0 <= . <= 2)
// with k = 0..15 the columns of a 16-column window of the source row (e = S - P2 in 0..3 shifts the window so its
// first column, and every 8-byte copy, is aligned). One mma.sync m16n8k16 does 16 x 8 outputs' 3 taps (19% of its
// products are not zeros of B), ~10x fewer instructions than FFMA per output: the kernel is bound by memory.
//   block   = one warp: one (sample, channel) and a 16 (H) x 32 (W) output window (four 8-column tiles) through a
//             run of D planes: its source planes (18 rows x 40 columns, zero outside the volume) in a three-stage
//             cp.async ring; B fragments of its channel's 9 (kd, kh) taps in registers; three accumulator planes
//             rotated by index (the plane loop unrolled by three). One warp a block keeps the loop's control
//             uniform to the compiler, so the global accesses' memory descriptor and the shared bases stay in
//             uniform registers (four warps a block paid two R2UR a global access: docs/perf.md v28);
//   grid    = one wave of blocks sharing every (sample, channel, H block, W block) column's planes evenly.
// Each output sums its source planes in order (kd = 0, 1, 2), each plane's kh rows in order through the tensor
// core's fixed-order accumulation, from its bias: deterministic, and independent of the grid. A non-finite source value
// reaches the outputs of its 8-column tile row that a zero of B multiplies it into (0 x inf = NaN), as in cuDNN's
// FFT and Winograd algorithms; the float32 and float64 paths keep IEEE propagation.
#include <algorithm>
#include <atomic>
#include <cstdint>

#include "launch_common.cuh"
#include "plane_ring.cuh"
#include "sm80/sm80.h"
#include "sm80/mma16.cuh"
#include "sm80/stencil3_launch.cuh"

namespace jaxconv3d {
namespace sm80 {
namespace {

constexpr int kRows = kS3MY;                  // output rows a warp (the mma's M)
constexpr int kCols = kS3MX;                  // output columns a warp: four n-tiles of 8
constexpr int kSrcRows = kRows + 2;           // staged source rows
constexpr int kRowElems = 40;                 // staged row: 16 + 24 columns; 80 bytes, so ldmatrix rows hit every bank
constexpr int kChunks = kRowElems / 4;        // 8-byte copies a row
constexpr int kStages = kRingStages;
constexpr int kStageElems = kSrcRows * kRowElems;
constexpr int kCopies = (kSrcRows * kChunks + 31) / 32;  // 8-byte copies a lane a plane
static_assert(kRowElems == 4 * kChunks, "copy q lands at element 4 q");
constexpr int kMinPlanes = 8;                 // output planes a block at least
static_assert(kCols == 32 && kRows == 16, "four 16 x 8 mma tiles a plane");

// Where a warp's column lies: sample, channel, first output row and column.
struct Column {
  i64 n;
  int c, oy0, ox0;
};
__device__ __forceinline__ Column column_of(const Stencil3Args& a, i64 col) {
  Column cl;
  cl.ox0 = int(col % a.ntile[2]) * kCols;
  col /= a.ntile[2];
  cl.oy0 = int(col % a.ntile[1]) * kRows;
  col /= a.ntile[1];
  cl.c = int(col % a.OC);
  cl.n = col / a.OC;
  return cl;
}

// Sixteen one-warp blocks an SM (128 registers, no spill): the warps of v18's four four-warp blocks, which measured
// 2 % faster than three (docs/perf.md v18).
template <typename T>
__global__ void __launch_bounds__(32, 16) stencil3_mma_kernel(const Stencil3Args a, i64 columns, i64 per) {
  __shared__ __align__(16) T stage[kStages][kStageElems];
  const T* __restrict__ src = static_cast<const T*>(a.src);
  const T* __restrict__ wt = static_cast<const T*>(a.wt);
  T* __restrict__ out = static_cast<T*>(a.out);
  const int lane = threadIdx.x;
  const int S = (a.P[2] + 3) & ~3, e = S - a.P[2];  // the window's shift: 8-byte aligned copies
  const i64 sHW = i64(a.sd[1]) * a.sd[2], oHW = i64(a.od[1]) * a.od[2];
  // this lane's B element (k, n) pairs: k = 2 (lane % 4) + {0, 1} (+ 8), n = lane / 4; tap k - n - e when in 0..2
  const int kb = 2 * (lane & 3) - (lane >> 2) - e;
  // ldmatrix: lane l names row l % 16, columns 8 (l / 16) .. + 7 of the A tile (rows kh.., columns 8 j..)
  const int a_off = (lane & 15) * kRowElems + 8 * (lane >> 4);
  const int g = lane >> 2, t2 = 2 * (lane & 3);  // accumulator rows g, g + 8, columns t2, t2 + 1 of a tile
  // this lane's first copy's shared address in stage 0 (copy i of a plane lands 128 i elements further)
  const unsigned ssm = unsigned(__cvta_generic_to_shared(&stage[0][0])) + unsigned(sizeof(T) * 4 * lane);

  i64 cur = i64(blockIdx.x) * per;
  const i64 end = min(columns * a.od[0], cur + per);
  pdl_wait();  // launched as a dependent: nothing read or written before the kernels before it are done
#pragma unroll 1
  while (cur < end) {
    const int z = int(cur % a.od[0]), len = int(min(i64(a.od[0] - z), end - cur));
    const Column cl = column_of(a, cur / a.od[0]);
    cur += len;
    const T* chan = src + (cl.n * a.SC + cl.c) * (sHW * a.sd[0]);
    T* ochan = out + (cl.n * a.OC + cl.c) * (oHW * a.od[0]);

    unsigned b[9][2];  // the channel's taps as B fragments, (kd, kh) = 3 kd + kh
#pragma unroll
    for (int q = 0; q < 9; ++q) band_fragment(b[q], wt, cl.c, q, kb, a.dgrad);
    const T* bias = static_cast<const T*>(a.bias);
    const float bv = bias != nullptr ? cvt<float>(bias[cl.c]) : 0.0f;
    // this lane's outputs: rows oy0 + g (+ 8), columns ox0 + 8 j + t2 and the next (od[2] is even: both or neither)
    T* orow = ochan + i64(cl.oy0 + g) * a.od[2] + cl.ox0 + t2;
    unsigned store = 0;
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (cl.oy0 + g + 8 * half < a.od[1] && cl.ox0 + 8 * j + t2 < a.od[2]) store |= 1u << (4 * half + j);

    // Source plane js = output plane z + js - 2's last D tap: rows oy0 - P1 .., columns ox0 - S .. of depth
    // z - P0 + js, 8-byte copies (every chunk wholly inside or outside a row: W % 4 == 0, S % 4 == 0); a plane
    // outside the volume is only zero-filled, and multiplied like any other (no branch in the plane loop). Copy
    // q = lane + 32 i (row q / kChunks, chunk q % kChunks) lands at element 4 q of the stage; its byte offset in
    // the plane (0 outside it: nothing is read there) and whether it lies inside are fixed per column, so a copy
    // costs one 64-bit add.
    const int sy0 = cl.oy0 - a.P[1], sx0 = cl.ox0 - S;
    unsigned off[kCopies];  // bytes
    unsigned inside = 0;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int q = lane + 32 * i, y = sy0 + q / kChunks, x = sx0 + 4 * (q % kChunks);
      const bool in = q < kSrcRows * kChunks && unsigned(y) < unsigned(a.sd[1]) && unsigned(x) < unsigned(a.sd[2]);
      off[i] = in ? unsigned(y * a.sd[2] + x) * unsigned(sizeof(T)) : 0u;  // < 2^32: the plan bounds H x W
      inside |= unsigned(in) << i;
    }
    const char* chanb = reinterpret_cast<const char*>(chan);
    auto issue = [&](int js, auto st) {
      if (js < len + 2) {
        const int sz = z - a.P[0] + js;
        const bool pin = unsigned(sz) < unsigned(a.sd[0]);
        const char* pl = chanb + (pin ? i64(sz) * (sHW * i64(sizeof(T))) : i64(0));
        const unsigned ins = pin ? inside : 0u;
        const unsigned dst = ssm + unsigned(sizeof(T) * decltype(st)::value * kStageElems);
#pragma unroll
        for (int i = 0; i < kCopies; ++i)
          if (i + 1 < kCopies || lane + 32 * i < kSrcRows * kChunks)
            cp_async_shared<8>(dst + unsigned(sizeof(T) * 128 * i), pl + off[i], ins >> i & 1u);
      }
      cp_async_commit();
    };

    float acc[3][4][4];
#pragma unroll
    for (int s = 0; s < 3; ++s)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[s][j][i] = bv;

    // a warp barrier each plane. Output plane js's slot (js % 3) starts at its bias with its first product (kd = 0,
    // kh = 0: D = A B + bias); the slot's previous output plane (js - 3) was stored at step js - 1.
    plane_ring(len, [] { __syncwarp(); }, issue, [&](int js, auto phase) {
      constexpr int PH = decltype(phase)::value;  // js % 3: the stage and the accumulator rotation
      const T* base = stage[PH] + a_off;
#pragma unroll
      for (int kh = 0; kh < 3; ++kh) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          unsigned av[4];
          ldmatrix_x4(av, base + kh * kRowElems + 8 * j);
          // unconditional: a product for an output plane outside 0 .. len - 1 lands in a slot that starts over
          // (at its bias) before that slot's next output plane, or after its output plane was stored
          if (kh == 0)
            mma_from(acc[PH][j], av, b[0], bv, static_cast<T*>(nullptr));
          else
            mma(acc[PH][j], av, b[kh], static_cast<T*>(nullptr));
#pragma unroll
          for (int kd = 1; kd < 3; ++kd)
            mma(acc[(PH - kd + 3) % 3][j], av, b[kd * 3 + kh], static_cast<T*>(nullptr));
        }
      }
      // output plane js - 2 is complete: store it
      constexpr int SO = (PH + 1) % 3;
      if (js >= 2) store_plane(orow + i64(z + js - 2) * oHW, a.od[2], store, acc[SO]);
    });
    __syncwarp();  // the next column's first copies overwrite stages this one's last plane was read from
  }
  pdl_release();
}

template <typename T>
std::string launch(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w, const void* bias,
                   void* out, cudaStream_t st) {
  Stencil3Args s;
  int64_t units = 0;
  if (!stencil3_mma_plan(p, dgrad, t, &s, &units))
    return "jaxconv3d cuda: the tensor-core 3x3x3 depthwise stencil does not apply to this problem";
  if (units == 0) return "";
  s.src = src; s.wt = w; s.bias = bias; s.out = out;
  static std::atomic<int> per_sm[64][1];
  const int slots = resident_blocks(stencil3_mma_kernel<T>, 32, 0, 0, per_sm) * sm_count();
  if (slots <= 0) {
    cudaGetLastError();
    return "jaxconv3d cuda: cannot read how many blocks of the tensor-core depthwise stencil the device holds";
  }
  const i64 columns = units / s.od[0], planes = units;  // (sample, channel, H block, W block) columns x D planes
  const i64 blocks = std::min<i64>(slots, (planes + kMinPlanes - 1) / kMinPlanes);
  const i64 per = (planes + blocks - 1) / blocks;
  launch_dependent(stencil3_mma_kernel<T>, dim3(unsigned(blocks)), dim3(32), 0, st, s, columns, per);
  return launch_error(dgrad ? "tensor-core 3x3x3 depthwise stencil (grad-input)"
                            : "tensor-core 3x3x3 depthwise stencil (forward)");
}

}  // namespace

std::string stencil3_mma(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w, const void* bias,
                         void* out, void* stream) {
  // 8-byte source copies and 4-byte output stores: tensors off that alignment take the FFMA streaming stencil
  const bool aligned = reinterpret_cast<uintptr_t>(src) % 8 == 0 && reinterpret_cast<uintptr_t>(out) % 4 == 0;
  if (!aligned) return stencil3_stream(p, t, dgrad, src, w, bias, out, stream);
  const cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (t == DType::kBF16) return launch<__nv_bfloat16>(p, t, dgrad, src, w, bias, out, st);
  if (t == DType::kF16) return launch<__half>(p, t, dgrad, src, w, bias, out, st);
  return "jaxconv3d cuda: the tensor-core 3x3x3 depthwise stencil takes bfloat16 and float16";
}

}  // namespace sm80
}  // namespace jaxconv3d
