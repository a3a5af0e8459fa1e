// Channel-axis moves between NCDHW and NDHWC on the GPU: a batched 2-D transpose [outer][rows][cols] ->
// [outer][cols][rows]. The torch front uses it when a kernel family's layout differs from the tensors it holds
// (torch's own strided copy moved these bytes 4-5x slower on an H200).
//
// Three forms; the launcher picks by shape and alignment:
//   chunked  where rows and cols are whole 16-byte chunks (rows x E and cols x E multiples of 16) and both tensors
//            are 16-byte aligned: tiles of 8 chunks x 8 chunks (64 x 64 elements of 2 bytes, 32 x 32 of 4, 16 x 16
//            of 8), read and written as 16-byte vectors, every access of a warp coalesced into 128-byte rows. The
//            tile's rows sit in shared memory with their chunks XOR-swizzled by (row / V) % 8 (V = 16 / E elements a
//            chunk), so both the vector stores of a source row and the element gathers of an output chunk (V rows,
//            one column) hit every bank once. Element-wise forms of 2-byte data moved ~2.7x the floor's bytes'
//            time (docs/perf.md v32): a warp's 2-byte accesses keep too few bytes in flight.
//   thin     where either axis is shorter than 8 (first layers' 1-7 channels): a thread a position, its few
//            channels read (or written) in one loop. A 32 x 32 tile would hold 3 rows of 32 there: the element form
//            moved a 3-channel activation at 28-30x the floor's time (docs/perf.md v32).
//   element  anything else (odd sizes): 32 x 32 tiles through a padded 32 x 33 tile, one element a thread and
//            access.
// All walk a linear index (of tiles, or of positions for the thin form): a launch's grid is one-dimensional, at
// most 2^30 blocks a launch, so no size a tensor can have overflows a grid dimension (v31's 2-D grid of 32-row tiles
// refused 2^21 rows: a 128^3 volume back from NDHWC).
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "conv_kernels.h"

namespace jaxconv3d {
namespace {

constexpr int64_t kMaxBlocks = int64_t(1) << 30;  // blocks a launch

// Which tile a block moves: (outer, first row, first column) from its linear index.
struct Tile {
  int64_t outer, r0, c0;
};
__device__ __forceinline__ Tile tile_of(int64_t t, int64_t tiles_c, int64_t tiles_r, int edge) {
  Tile tl;
  tl.c0 = (t % tiles_c) * edge;
  t /= tiles_c;
  tl.r0 = (t % tiles_r) * edge;
  tl.outer = t / tiles_r;
  return tl;
}

constexpr int64_t kThinMax = 7;  // channels the thin form takes
constexpr int kThinThreads = 256;

// The thin form: positions p of [outer][long] with their `few` channels; src and dst strides of a (p, channel)
// element: channel-major side `len` apart, position-major side `few` apart. All of a thread's loads come first.
template <typename E>
__global__ void __launch_bounds__(kThinThreads) thin_kernel(const E* __restrict__ src, E* __restrict__ dst,
                                                            int64_t len, int64_t few, bool few_rows, int64_t first,
                                                            int64_t positions) {
  const int64_t p = first + int64_t(blockIdx.x) * kThinThreads + threadIdx.x;
  if (p >= positions) return;
  const int64_t o = p / len, i = p % len, base = o * len * few;
  const int64_t s0 = base + (few_rows ? i : i * few), sstep = few_rows ? len : 1;
  const int64_t d0 = base + (few_rows ? i * few : i), dstep = few_rows ? 1 : len;
  E v[kThinMax];
#pragma unroll
  for (int j = 0; j < kThinMax; ++j)
    if (j < few) v[j] = src[s0 + j * sstep];
#pragma unroll
  for (int j = 0; j < kThinMax; ++j)
    if (j < few) dst[d0 + j * dstep] = v[j];
}

template <typename E>
__global__ void __launch_bounds__(256) element_kernel(const E* __restrict__ src, E* __restrict__ dst, int64_t rows,
                                                     int64_t cols, int64_t tiles_c, int64_t tiles_r, int64_t first) {
  __shared__ E tile[32][33];
  const Tile tl = tile_of(first + blockIdx.x, tiles_c, tiles_r, 32);
  const E* s = src + tl.outer * rows * cols;
  E* d = dst + tl.outer * rows * cols;
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int64_t r = tl.r0 + i, c = tl.c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = s[r * cols + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += 8) {
    const int64_t c = tl.c0 + i, r = tl.r0 + threadIdx.x;
    if (r < rows && c < cols) d[c * rows + r] = tile[threadIdx.x][i];
  }
}

constexpr int kChunkThreads = 128;

// 16 bytes of elements as one vector (so the store is one 16-byte access).
template <typename E>
__device__ __forceinline__ uint4 chunk_of(const E (&e)[16 / sizeof(E)]) {
  unsigned w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    if constexpr (sizeof(E) == 2)
      w[k] = unsigned(e[2 * k]) | unsigned(e[2 * k + 1]) << 16;
    else if constexpr (sizeof(E) == 4)
      w[k] = e[k];
    else
      w[k] = unsigned(e[k / 2] >> (32 * (k % 2)));
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}
// One 16-byte global store (the compiler split a plain uint4 store of packed elements into four).
__device__ __forceinline__ void store16(void* p, uint4 v) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}

// The chunked form: a tile of 8 V rows x 8 chunks (8 V columns). Load k = thread + 128 j: source row k / 8, chunk
// k % 8. Store k: output row (tile column) k / 8, chunk k % 8 of it = source rows V (k % 8) ..; a lane gathers its
// chunk's V elements from V tile rows, whose swizzle (row / V) % 8 is its own k % 8.
template <typename E>
__global__ void __launch_bounds__(kChunkThreads) chunk_kernel(const E* __restrict__ src, E* __restrict__ dst,
                                                              int64_t rows, int64_t cols, int64_t tiles_c,
                                                              int64_t tiles_r, int64_t first) {
  constexpr int V = 16 / int(sizeof(E)), T = 8 * V, kPer = 8 * T / kChunkThreads;
  static_assert(kPer >= 1 && 8 * T == kPer * kChunkThreads, "whole chunks a thread");
  __shared__ uint4 tile[T][8];
  const Tile tl = tile_of(first + blockIdx.x, tiles_c, tiles_r, T);
  const E* s = src + tl.outer * rows * cols;
  E* d = dst + tl.outer * rows * cols;
  uint4 v[kPer];
#pragma unroll
  for (int j = 0; j < kPer; ++j) {  // every load issued before the first shared store
    const int k = threadIdx.x + kChunkThreads * j;
    const int64_t r = tl.r0 + (k >> 3), c = tl.c0 + V * (k & 7);
    if (r < rows && c < cols) v[j] = *reinterpret_cast<const uint4*>(s + r * cols + c);
  }
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int k = threadIdx.x + kChunkThreads * j, row = k >> 3;
    if (tl.r0 + row < rows && tl.c0 + V * (k & 7) < cols) tile[row][(k & 7) ^ ((row / V) & 7)] = v[j];
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const int k = threadIdx.x + kChunkThreads * j, cc = k >> 3, q = k & 7;
    const int64_t c = tl.c0 + cc, r = tl.r0 + V * q;
    if (c < cols && r < rows) {
      E e[V];
#pragma unroll
      for (int i = 0; i < V; ++i) e[i] = reinterpret_cast<const E*>(&tile[V * q + i][(cc / V) ^ q])[cc % V];
      store16(d + c * rows + r, chunk_of(e));
    }
  }
}

template <typename E>
void launch_thin(const E* src, E* dst, int64_t outer, int64_t rows, int64_t cols, cudaStream_t stream) {
  const bool few_rows = rows <= cols;
  const int64_t len = few_rows ? cols : rows, positions = outer * len, step = kMaxBlocks * kThinThreads;
  for (int64_t first = 0; first < positions; first += step) {
    const int64_t n = positions - first < step ? positions - first : step;
    thin_kernel<E><<<unsigned((n + kThinThreads - 1) / kThinThreads), kThinThreads, 0, stream>>>(
        src, dst, len, few_rows ? rows : cols, few_rows, first, positions);
  }
}

// The tiled forms: chunked where both axes are whole 16-byte chunks and the tensors aligned, else element.
template <typename E>
void launch_tiles(const E* src, E* dst, int64_t outer, int64_t rows, int64_t cols, cudaStream_t stream) {
  constexpr int64_t V = 16 / int64_t(sizeof(E));
  const bool chunked = rows % V == 0 && cols % V == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  const int64_t edge = chunked ? 8 * V : 32;
  const int64_t tiles_c = (cols + edge - 1) / edge, tiles_r = (rows + edge - 1) / edge;
  const int64_t tiles = outer * tiles_r * tiles_c;
  for (int64_t first = 0; first < tiles; first += kMaxBlocks) {
    const dim3 grid(unsigned(tiles - first < kMaxBlocks ? tiles - first : kMaxBlocks));
    if (chunked)
      chunk_kernel<E><<<grid, kChunkThreads, 0, stream>>>(src, dst, rows, cols, tiles_c, tiles_r, first);
    else
      element_kernel<E><<<grid, dim3(32, 8), 0, stream>>>(src, dst, rows, cols, tiles_c, tiles_r, first);
  }
}

template <typename E>
std::string launch(const void* src, void* dst, int64_t outer, int64_t rows, int64_t cols, cudaStream_t stream) {
  const E* s = static_cast<const E*>(src);
  E* d = static_cast<E*>(dst);
  if (rows <= kThinMax || cols <= kThinMax)
    launch_thin(s, d, outer, rows, cols, stream);
  else
    launch_tiles(s, d, outer, rows, cols, stream);
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("layout conversion failed: ") + cudaGetErrorString(e);
}

}  // namespace

std::string cuda_transpose_batched(const void* src, void* dst, int64_t outer, int64_t rows, int64_t cols,
                                   int64_t elem_bytes, void* stream) {
  if (outer == 0 || rows == 0 || cols == 0) return "";
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (elem_bytes) {
    case 2: return launch<uint16_t>(src, dst, outer, rows, cols, s);
    case 4: return launch<uint32_t>(src, dst, outer, rows, cols, s);
    case 8: return launch<uint64_t>(src, dst, outer, rows, cols, s);
    default: return "layout conversion: element size must be 2, 4 or 8 bytes";
  }
}

}  // namespace jaxconv3d
