// Grad-weight of a channels-last first layer with unit W stride, from a halo'd brick of x in shared memory:
//   dW^T[k][o] = sum over output positions m of A[m][k] * dy[m][o]   (A: smallc_geom.cuh's im2col of x),
// the same GEMM and split plan as conv_smallc_wgrad.cuh's register form, with what made that form slow removed:
//   - a tile is a bh x 32 brick of one output plane (128 positions for 16-bit, 64 for float32) instead of 32
//     positions: one or two barriers per brick;
//   - x's halo'd brick (channels x span_d x hh x hw, planar) is in shared memory, copied through a per-element table
//     of offsets built once (no index arithmetic per tile, no bounds checks for bricks whose halo lies inside x);
//     every fragment element is then a shared load at a per-thread base plus a constant, instead of a global
//     gather with 64-bit addresses;
//   - dy's rows (a position's channels, 16-byte chunks) are copied with cp.async: 16-bit as they are, into a
//     128-byte-swizzled tile that wgmma reads MN-major; float32 into a staging tile, then split (3xTF32) and
//     transposed into K-major tiles by the block (TF32 reads K-major only);
//   - the next tile's dy rows and halo are loaded into free buffers while this tile's fragments and products run.
// 16-bit: a split walks its bricks along D and keeps the halo as a ring of D planes, so a brick copies only the
// planes the brick below it did not (one of three for a 3x3x3 stride-1 layer: ncu kb54 -16 %, docs/perf.md v16);
// each plane is kept twice, as it is and shifted by one element, so a fragment word (two positions adjacent along
// W) is one aligned 32-bit load. float32: two whole halos, bricks walked W fastest. A^T rows (columns k of A) past
// K read nothing (zeros); positions past the plane's H or W edge are masked to zero in the fragment (their dy rows
// are zero-filled too), so an Inf in x never meets a padded position.
#pragma once

#include "hopper/conv_smallc_wgrad.cuh"

namespace jaxconv3d {
namespace hopper {

// The register form's arguments (x and dy NDHWC, dy 16-byte aligned with rows of whole 16-byte chunks; the same
// partial-sum layout), plus the brick grid and the halo.
struct SmallCWgradHaloArgs : SmallCWgradArgs {
  int tiles_h, tiles_w;
  int hd, hh, hw;       // halo extents: D (span), H, W (even)
  uint32_t halo;        // elements of one copy: C * hd * hh * hw (<= kSmallCHaloElems)
  uint32_t copy_bytes;  // one copy of the halo, rounded to 16 bytes (16-bit: hd planes of plane_bytes)
  FastDiv div_tw, div_th, div_od, div_hw;  // decode a tile (by tiles_w, tiles_h, out[0]) and a halo element (by hw)
  uint32_t plane;        // 16-bit: elements of one D plane of the halo, C * hh * hw
  uint32_t plane_bytes;  // one copy of a plane, rounded to 16 bytes
};

// Shared memory of the two forms (bytes past the 1024-byte-aligned base).
template <int ES>
struct SmallCHaloCfg {
  static constexpr int kBH = ES == 2 ? kSmallCHaloBH : kSmallCHaloBH / 2, kBW = kSmallCHaloBW, kTile = kBH * kBW;
  // Halo buffers: 2 kCopies copies of copy_bytes. 16-bit: the ring's 2 hd plane slots, each the plane and its
  // one-element shift; float32: two halos.
  static constexpr int kCopies = ES == 2 ? 2 : 1;
  // 16-bit: two dy tiles, a 128-byte row per position. float32: two staging tiles (a 256-byte row per position,
  // padded by 16 bytes: conflict-free column reads) and the split K-major tiles (big, small), 32 positions a row.
  // The offset table follows the halo buffers: one entry per element of a plane (16-bit) or of the halo.
  static constexpr int kStageRow = 64 * 4 + 16;
  static constexpr int kDyBytes = ES == 2 ? 2 * kTile * kRowBytes : 2 * kTile * kStageRow + 2 * (kTile / 32) * 64 * kRowBytes;
  __host__ __device__ static constexpr int halo_offset() { return kDyBytes; }
  __host__ __device__ static int table_offset(uint32_t copy_bytes) { return kDyBytes + 2 * kCopies * int(copy_bytes); }
  __host__ __device__ static int smem_bytes(uint32_t copy_bytes, uint32_t halo) { return table_offset(copy_bytes) + int(halo) * 8 + 1024; }
};

struct HaloBrick { int n, od, oh0, ow0; };

__device__ __forceinline__ HaloBrick halo_brick(const SmallCWgradHaloArgs& a, uint32_t t, int bh, int bw) {
  HaloBrick b;
  const uint32_t t1 = a.div_tw.div(t), t2 = a.div_th.div(t1), n = a.div_od.div(t2);
  b.ow0 = int(t - t1 * uint32_t(a.tiles_w)) * bw;
  b.oh0 = int(t1 - t2 * uint32_t(a.tiles_h)) * bh;
  b.od = int(t2 - n * uint32_t(a.g.out[0]));
  b.n = int(n);
  return b;
}

// Each halo element's offset in x from the brick's window origin and its (d, h, w) for the bounds: the same for
// every tile, so a tile's copy is a table read, an add and a load per element.
// `planes`: the D planes the table covers, `count` its entries: a.hd and a.halo (the whole halo), or 1 and a.plane
// (one plane, for the ring of planes).
__device__ __forceinline__ void halo_table(const SmallCWgradHaloArgs& a, uint32_t table, int tid, int nt,
                                           int planes, uint32_t count) {
  const SmallCGeom& g = a.g;
  for (uint32_t e = tid; e < count; e += nt) {
    const uint32_t row = a.div_hw.div(e);
    const int ww = int(e - row * uint32_t(a.hw)), hh = int(row % uint32_t(a.hh)), dd = int((row / a.hh) % planes),
              c = int(row / uint32_t(a.hh * planes));
    const int off = c * g.xs_c + dd * g.xs_d + hh * g.xs_h + ww * g.xs_w, where = dd | (hh << 8) | (ww << 16);
    asm volatile("st.shared.v2.b32 [%0], {%1, %2};\n" ::"r"(table + e * 8), "r"(off), "r"(where) : "memory");
  }
}

// The block's split of the tiles, [begin, end), once the element table is built and visible.
__device__ __forceinline__ uint2 halo_start(const SmallCWgradHaloArgs& a, uint32_t table, int tid, int nt,
                                            int planes, uint32_t count) {
  halo_table(a, table, tid, nt, planes, count);
  const uint32_t begin = blockIdx.x * a.tiles_per_split;
  __syncthreads();
  return make_uint2(begin, min(a.tiles, begin + a.tiles_per_split));
}

// Brick bk's halo'd x (zeros outside x) into the halo buffer at hb (float32), consecutive threads on consecutive
// elements of a halo row.
template <typename E>
__device__ __forceinline__ void halo_copy(const SmallCWgradHaloArgs& a, const HaloBrick& bk, uint32_t table,
                                          uint32_t hb, int tid, int nt) {
  const SmallCGeom& g = a.g;
  const int id0 = bk.od * g.stride[0] - g.pad[0], ih0 = bk.oh0 * g.stride[1] - g.pad[1], iw0 = bk.ow0 - g.pad[2];
  const E* origin = static_cast<const E*>(a.x) +
                    (i64(bk.n) * g.xs_n + i64(id0) * g.xs_d + i64(ih0) * g.xs_h + i64(iw0) * g.xs_w);
  const bool inside = id0 >= 0 && ih0 >= 0 && iw0 >= 0 && id0 + a.hd <= g.in[0] && ih0 + a.hh <= g.in[1] &&
                      iw0 + a.hw <= g.in[2];
  auto copy = [&](auto checked) {
    for (uint32_t e = tid; e < a.halo; e += nt) {
      int off, where;
      asm volatile("ld.shared.v2.b32 {%0, %1}, [%2];\n" : "=r"(off), "=r"(where) : "r"(table + e * 8));
      bool ok = true;
      if constexpr (decltype(checked)::value)
        ok = unsigned(id0 + (where & 0xFF)) < unsigned(g.in[0]) &&
             unsigned(ih0 + ((where >> 8) & 0xFF)) < unsigned(g.in[1]) && unsigned(iw0 + (where >> 16)) < unsigned(g.in[2]);
      const E v = ok ? __ldg(origin + off) : E(0);
      st_shared(hb + e * sizeof(E), v);
    }
  };
  if (inside) {
    copy(std::false_type{});
  } else {
    copy(std::true_type{});
  }
}

// Row k = (tap, channel) of A^T (ODHWI order): its element offset in the halo (0 past K).
__device__ __forceinline__ int halo_row_offset(const SmallCWgradHaloArgs& a, int k) {
  const SmallCGeom& g = a.g;
  if (k >= g.K) return 0;
  const int c = k % g.C, tap = k / g.C;
  const int j2 = tap % g.k[2], j1 = (tap / g.k[2]) % g.k[1], j0 = tap / (g.k[2] * g.k[1]);
  return c * a.hd * a.hh * a.hw + j0 * g.dil[0] * a.hh * a.hw + j1 * g.dil[1] * a.hw + j2 * g.dil[2];
}

// dy chunks (16 bytes of a position's channels): chunk i = tid + j NT of a tile, at an element offset from the
// brick's first position that depends on i alone. CPR: chunks per position row of dy.
template <int KT, int BW, int CPR, int NT>
struct DyChunks {
  static constexpr int kChunks = KT * CPR, kPer = (kChunks + NT - 1) / NT, kEl = 64 / CPR;
  // Copies brick bk's chunks: chunk (r, q) to dst(r, q); zeros past the plane's edges and past O.
  template <typename E, typename Dst>
  __device__ __forceinline__ static void load(const SmallCGeom& g, const E* dy, const HaloBrick& bk, int tid, Dst dst) {
    const i64 first = (((i64(bk.n) * g.out[0] + bk.od) * g.out[1] + bk.oh0) * g.out[2] + bk.ow0) * g.O;
    const int vh = g.out[1] - bk.oh0, vw = g.out[2] - bk.ow0;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int i = tid + j * NT, r = i / CPR, q = i % CPR, ph = r / BW, pw = r % BW;
      if (kChunks % NT != 0 && i >= kChunks) break;
      const bool ok = ph < vh && pw < vw && q * kEl < g.O;
      const i64 at = first + (ph * g.out[2] + pw) * g.O + q * kEl;  // computed either way: no branch
      cp_async16(dst(r, q), dy + (ok ? at : 0), ok);
    }
    cp_async_commit();
  }
};

// A thread's place: its warpgroup rb (a 64-row block of A^T), warp, and fragment row / column groups.
struct HaloLane {
  int tid, rb, warp, gid, tig;
  __device__ __forceinline__ HaloLane()
      : tid(threadIdx.x), rb(tid / 128), warp((tid % 128) >> 5), gid((tid & 31) >> 2), tig(tid & 3) {}
  __device__ __forceinline__ int row(int h) const { return rb * 64 + warp * 16 + gid + 8 * h; }  // A^T row
};

// A block's partial sums: accumulator element i is row lane.row((i / 2) % 2), column 8 * (i / 4) + 2 tig + i % 2
// (the register form's layout).
template <int RB>
__device__ __forceinline__ void halo_store_partials(float* partial, const float* sum, const HaloLane& l) {
  float* out = partial + i64(blockIdx.x) * (RB * 64) * 64;
#pragma unroll
  for (int i = 0; i < 32; i += 2) {
    const int r = l.row((i / 2) % 2), c = 8 * (i / 4) + 2 * l.tig;
    *reinterpret_cast<float2*>(out + r * 64 + c) = make_float2(sum[i], sum[i + 1]);
  }
}

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define JAXCONV3D_HALO_SM90 1
#endif

// ---- 16-bit: the halo as a ring of D planes, tiles walked along D
// A split's tiles run D fastest (halo_brick_d): the brick above in D (stride s_d < span_d) needs all but s_d of the
// planes this one has, so only the new planes are copied. Plane slots: a ring of 2 span_d, each slot two copies
// (as it is, and shifted by one element). A tile's plane j (input plane od s_d - pad_d + j) sits in slot
// (vb + j) mod 2 span_d; the next tile's vb moves by s_d along the same column (its planes past span_d - s_d are
// new) and by span_d at a new column (every plane new). The new planes' slots never hold the current tile's.

// Tile t, D fastest: t = ((n tiles_h + th) tiles_w + tw) out[0] + od.
__device__ __forceinline__ HaloBrick halo_brick_d(const SmallCWgradHaloArgs& a, uint32_t t, int bh, int bw) {
  HaloBrick b;
  const uint32_t t1 = a.div_od.div(t), t2 = a.div_tw.div(t1), n = a.div_th.div(t2);
  b.od = int(t - t1 * uint32_t(a.g.out[0]));
  b.ow0 = int(t1 - t2 * uint32_t(a.tiles_w)) * bw;
  b.oh0 = int(t2 - n * uint32_t(a.tiles_h)) * bh;
  b.n = int(n);
  return b;
}

// Planes j0 .. span_d - 1 of brick bk's halo into their ring slots (vb + j) mod ring: zeros outside x.
__device__ __forceinline__ void halo_copy_planes(const SmallCWgradHaloArgs& a, const HaloBrick& bk, uint32_t table,
                                                 uint32_t ring_base, int vb, int j0, int tid, int nt) {
  const SmallCGeom& g = a.g;
  const int ring = 2 * a.hd;
  const int id0 = bk.od * g.stride[0] - g.pad[0], ih0 = bk.oh0 * g.stride[1] - g.pad[1], iw0 = bk.ow0 - g.pad[2];
  const bool inside_hw = ih0 >= 0 && iw0 >= 0 && ih0 + a.hh <= g.in[1] && iw0 + a.hw <= g.in[2];
  for (int j = j0; j < a.hd; ++j) {
    int slot = vb + j;
    slot -= slot >= ring ? ring : 0;
    const uint32_t dst = ring_base + uint32_t(slot) * 2 * a.plane_bytes;
    const int ip = id0 + j;
    const bool plane_ok = unsigned(ip) < unsigned(g.in[0]);  // else a padding plane: zeros
    const uint16_t* origin = static_cast<const uint16_t*>(a.x) +
                             (i64(bk.n) * g.xs_n + i64(ip) * g.xs_d + i64(ih0) * g.xs_h + i64(iw0) * g.xs_w);
    auto copy = [&](auto checked) {
      for (uint32_t e = tid; e < a.plane; e += nt) {
        int off, where;
        asm volatile("ld.shared.v2.b32 {%0, %1}, [%2];\n" : "=r"(off), "=r"(where) : "r"(table + e * 8));
        bool ok = true;
        if constexpr (decltype(checked)::value)
          ok = plane_ok && unsigned(ih0 + ((where >> 8) & 0xFF)) < unsigned(g.in[1]) &&
               unsigned(iw0 + (where >> 16)) < unsigned(g.in[2]);
        const uint16_t v = ok ? __ldg(origin + off) : uint16_t(0);
        st_shared(dst + e * 2, v);
        if (e > 0) st_shared(dst + a.plane_bytes + (e - 1) * 2, v);
      }
    };
    if (inside_hw && plane_ok) {
      copy(std::false_type{});
    } else {
      copy(std::true_type{});
    }
  }
}

// Row k = (tap, channel) of A^T (ODHWI order): its D plane (j0 dil_d) and its element offset within a plane of the
// halo (0 past K).
__device__ __forceinline__ int2 halo_row_plane_offset(const SmallCWgradHaloArgs& a, int k) {
  const SmallCGeom& g = a.g;
  if (k >= g.K) return make_int2(0, 0);
  const int c = k % g.C, tap = k / g.C;
  const int j2 = tap % g.k[2], j1 = (tap / g.k[2]) % g.k[1], j0 = tap / (g.k[2] * g.k[1]);
  return make_int2(j0 * g.dil[0], c * a.hh * a.hw + j1 * g.dil[1] * a.hw + j2 * g.dil[2]);
}

template <typename T, int RB>
__global__ void __launch_bounds__(128 * RB, RB == 3 ? 1 : 2)
    conv_smallc_wgrad_halo_kernel(const __grid_constant__ SmallCWgradHaloArgs a) {
#ifdef JAXCONV3D_HALO_SM90
  using Cfg = SmallCHaloCfg<2>;
  constexpr int BH = Cfg::kBH, BW = Cfg::kBW, KT = Cfg::kTile, KS = KT / 16, NT = 128 * RB;
  static_assert(BW == 32 && KS == 2 * BH, "a k-step is half a brick row");
  const SmallCGeom& g = a.g;
  const uint32_t base = dynamic_smem_base();
  auto dy_tile = [&](int b) { return base + uint32_t(b) * KT * kRowBytes; };
  const uint32_t ring_base = base + Cfg::halo_offset();
  const uint32_t table = base + Cfg::table_offset(a.copy_bytes);
  const int ring = 2 * a.hd;
  const HaloLane l;
  const int tid = l.tid, tig = l.tig;
  const uint16_t* dyb = static_cast<const uint16_t*>(a.dy);

  // This thread's two A^T rows: their byte offset within a slot, in the copy where a word starting at the row's
  // element is 4-byte aligned (position offsets are even; below 2^24), and their D plane (the top 8 bits).
  uint32_t rowaddr[2];
  const bool rowok[2] = {l.row(0) < g.K, l.row(1) < g.K};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int2 po = halo_row_plane_offset(a, l.row(h));
    rowaddr[h] = ((po.y % 2 == 0 ? uint32_t(po.y) * 2 : a.plane_bytes + uint32_t(po.y - 1) * 2) + 4 * tig) |
                 (uint32_t(po.x) << 24);
  }
  const uint32_t prow = uint32_t(g.stride[1] * a.hw) * 2;  // bytes between the halo rows of brick rows
  using Chunks = DyChunks<KT, BW, 8, NT>;
  auto load_dy = [&](const HaloBrick& bk, int b) {
    Chunks::load(g, dyb, bk, tid, [&](int r, int q) { return dy_tile(b) + swz(r, q); });
  };

  float sum[32] = {};
  const auto [t_begin, t_end] = halo_start(a, table, tid, NT, 1, a.plane);
  HaloBrick bk = halo_brick_d(a, t_begin, BH, BW);
  int vb = 0;  // the current tile's plane 0 slot
  if (t_begin < t_end) {
    load_dy(bk, 0);
    halo_copy_planes(a, bk, table, ring_base, vb, 0, tid, NT);
  }
  cp_async_wait<0>();
  fence_proxy_async();  // cp.async and st.shared are generic-proxy writes; wgmma reads through the async proxy
  __syncthreads();
  int buf = 0;
  for (uint32_t t = t_begin; t < t_end; ++t, buf ^= 1) {
    // This tile's plane slots, then the next tile's dy into the other buffer and its new planes into slots this
    // tile does not read (before this tile's fragments, so that the copy does not hold registers beside them).
    const int vh = g.out[1] - bk.oh0, vw = g.out[2] - bk.ow0;  // positions inside the plane: ph < vh, pw < vw
    uint32_t rb[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      int slot = vb + int(rowaddr[h] >> 24);
      slot -= slot >= ring ? ring : 0;
      rb[h] = ring_base + uint32_t(slot) * 2 * a.plane_bytes + (rowaddr[h] & 0xFFFFFFu);
    }
    if (t + 1 < t_end) {
      const HaloBrick nb = halo_brick_d(a, t + 1, BH, BW);
      const bool column = nb.od == bk.od + 1 && g.stride[0] < a.hd;  // same (n, H, W) brick, sharing planes
      const int shift = column ? g.stride[0] : a.hd;
      vb += shift;
      vb -= vb >= ring ? ring : 0;
      load_dy(nb, buf ^ 1);
      halo_copy_planes(a, nb, table, ring_base, vb, a.hd - shift, tid, NT);
    }
    // The fragment: per k-step, brick row ks / 2, this thread's positions 16 (ks % 2) + 2 tig + {0, 1} and + 8.
    uint32_t af[KS][4];
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const uint32_t koff = uint32_t(ks / 2) * prow + uint32_t(ks % 2) * 32;
#pragma unroll
      for (int q = 0; q < 4; ++q) {  // q: row h = q % 2, positions + 8 (q / 2)
        const int h = q % 2;
        uint32_t v = 0;
        if (rowok[h]) asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(rb[h] + koff + (q / 2) * 16));
        af[ks][q] = v;
      }
    }
    if (vh < BH || vw < BW) {  // positions past the plane's edges read zero: a mask per brick row and position pair
      uint32_t mw[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int pw = 8 * e + 2 * tig;  // e = 2 (ks % 2) + q / 2
        mw[e] = (pw < vw ? 0xFFFFu : 0u) | (pw + 1 < vw ? 0xFFFF0000u : 0u);
      }
#pragma unroll
      for (int ks = 0; ks < KS; ++ks)
#pragma unroll
        for (int q = 0; q < 4; ++q) af[ks][q] &= ks / 2 < vh ? mw[2 * (ks % 2) + q / 2] : 0u;
    }
    fence_regs(af);
    wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      const uint64_t desc = smem_desc(dy_tile(buf) + ks * 16 * kRowBytes, 64 * kRowBytes, 1024);
      if constexpr (std::is_same<T, __nv_bfloat16>::value) {
        wgmma_Bf16_rs<64, 1>(sum, af[ks], desc, 1);
      } else {
        wgmma_F16_rs<64, 1>(sum, af[ks], desc, 1);
      }
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(sum);
    fence_regs(af);  // the products read af until here
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();  // the next tile's dy and planes are written and visible; this tile's dy buffer is free
    if (t + 1 < t_end) bk = halo_brick_d(a, t + 1, BH, BW);
  }
  halo_store_partials<RB>(a.partial, sum, l);
#endif
}

// float32: 64-position bricks, eight TF32 k-steps in two halves of four (SPLIT: 3xTF32, each half's products in a
// zeroed block added to the sum in fp32, as the register form does per 32 positions).
template <bool SPLIT, int RB>
__global__ void __launch_bounds__(128 * RB, 2) conv_smallc_wgrad_halo_f32_kernel(const __grid_constant__ SmallCWgradHaloArgs a) {
#ifdef JAXCONV3D_HALO_SM90
  using Cfg = SmallCHaloCfg<4>;
  constexpr int BH = Cfg::kBH, BW = Cfg::kBW, KT = Cfg::kTile, KS = KT / 8, NT = 128 * RB, SR = Cfg::kStageRow;
  constexpr int KB = KT / 32, PART = KB * 64 * kRowBytes;  // K-major: 32 positions a 128-byte row, KB row blocks
  static_assert(BW == 32 && KS == 4 * BH, "a k-step is a quarter of a brick row");
  const SmallCGeom& g = a.g;
  const uint32_t base = dynamic_smem_base();
  auto stage = [&](int b) { return base + uint32_t(b) * KT * SR; };
  const uint32_t split0 = base + 2 * KT * SR;  // [part: big, small][KB][64 channel rows x 128 bytes, swizzled]
  auto halo_of = [&](int b) { return base + Cfg::halo_offset() + uint32_t(b) * a.copy_bytes; };
  const uint32_t table = base + Cfg::table_offset(a.copy_bytes);
  const HaloLane l;
  const int tid = l.tid, tig = l.tig;
  const float* dyf = static_cast<const float*>(a.dy);

  // This thread's two A^T rows: their byte offset in a halo buffer (positions tig and tig + 4 of each k-step).
  const bool rowok[2] = {l.row(0) < g.K, l.row(1) < g.K};
  const uint32_t rowaddr[2] = {uint32_t(halo_row_offset(a, l.row(0)) + tig) * 4,
                               uint32_t(halo_row_offset(a, l.row(1)) + tig) * 4};
  const uint32_t prow = uint32_t(g.stride[1] * a.hw) * 4;
  using Chunks = DyChunks<KT, BW, 16, NT>;
  auto load = [&](const HaloBrick& bk, int b) {
    Chunks::load(g, dyf, bk, tid, [&](int r, int q) { return stage(b) + r * SR + q * 16; });
    halo_copy<float>(a, bk, table, halo_of(b), tid, NT);
  };
  // Staging tile b -> the K-major split tiles: a lane per position p, a warp per four channels at a time (channel
  // groups o4 = warp + i NW keep the warp's parity, so a channel row's swizzle term is fixed per thread and j).
  constexpr int NW = NT / 32, GROUPS = 16 / NW;
  const int p = tid % 32, w = tid / 32;
  uint32_t toff[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) toff[j] = j * kRowBytes + (uint32_t((p / 4) ^ (4 * (w & 1) + j)) << 4) + (p % 4) * 4;
  auto transpose = [&](int b) {
    static_assert(SR % 16 == 0, "staging rows hold whole 16-byte chunks");
    const uint32_t src = stage(b) + p * SR + w * 16, dst = split0 + w * 4 * kRowBytes;
#pragma unroll
    for (int i = 0; i < GROUPS; ++i) {
#pragma unroll
      for (int ph = 0; ph < KB; ++ph) {
        const float4 v = shared_ptr<float4>(src)[(ph * 32 * SR + i * NW * 16) / 16];
        const float e[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int j = 0; j < 4; ++j)
          st_operand<SPLIT>(dst + toff[j] + (ph * 64 * kRowBytes + i * NW * 4 * kRowBytes), e[j], PART);
      }
    }
  };

  float sum[32] = {};
  const auto [t_begin, t_end] = halo_start(a, table, tid, NT, a.hd, a.halo);
  HaloBrick bk = halo_brick(a, t_begin, BH, BW);
  if (t_begin < t_end) load(bk, 0);
  cp_async_wait<0>();
  __syncthreads();  // staging 0 and halo 0 visible
  if (t_begin < t_end) transpose(0);
  fence_proxy_async();
  __syncthreads();
  int buf = 0;
  for (uint32_t t = t_begin; t < t_end; ++t, buf ^= 1) {
    const int vh = g.out[1] - bk.oh0, vw = g.out[2] - bk.ow0;
    const bool edge = vh < BH || vw < BW;
    const uint32_t hb = halo_of(buf);
    uint32_t colmask = 0xFFu;  // edge tiles: bit 2 s + q / 2 set where position 8 s + tig + 4 (q / 2) is inside
    if (edge) {
      colmask = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) colmask |= uint32_t(8 * (j / 2) + tig + 4 * (j % 2) < vw) << j;
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      // k-steps 4 half .. 4 half + 3: brick row `half`, positions 8 s + tig and + 4 (s = ks % 4).
      const uint32_t row_base[2] = {hb + rowaddr[0] + half * prow, hb + rowaddr[1] + half * prow};
      const uint32_t mask = half < vh ? colmask : 0u;
      uint32_t ab[4][4], as[SPLIT ? 4 : 1][4];
#pragma unroll
      for (int s = 0; s < 4; ++s) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {  // q: row h = q % 2, position + 4 (q / 2)
          const int h = q % 2;
          float v = rowok[h] ? shared_ptr<float>(row_base[h])[s * 8 + (q / 2) * 4] : 0.0f;
          if (edge) v = (mask >> (2 * s + q / 2)) & 1u ? v : 0.0f;
          uint32_t small;
          tf32_split(v, ab[s][q], small);
          if constexpr (SPLIT) as[s][q] = small;
        }
      }
      fence_regs(ab);
      if constexpr (SPLIT) fence_regs(as);
      float part[SPLIT ? 32 : 1];
      wgmma_fence();
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        const int ks = 4 * half + s;
        const uint32_t off = uint32_t(ks / 4) * 64 * kRowBytes + (ks % 4) * 32;
        const uint64_t big = smem_desc(split0 + off, 16, 1024);
        const uint64_t small = SPLIT ? smem_desc(split0 + PART + off, 16, 1024) : 0;
        smallc_mma<float, SPLIT, 64>(SPLIT ? part : sum, ab[s], as[SPLIT ? s : 0], big, small, SPLIT && s == 0 ? 0 : 1);
      }
      wgmma_commit();
      if (half == 0 && t + 1 < t_end) {  // into the other staging and halo buffers while the products run
        bk = halo_brick(a, t + 1, BH, BW);
        load(bk, buf ^ 1);
      }
      wgmma_wait<0>();
      fence_regs(sum);
      fence_regs(ab);
      if constexpr (SPLIT) {
        fence_regs(as);
        fence_regs(part);
#pragma unroll
        for (int i = 0; i < 32; ++i) sum[i] += part[i];
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // the next staging tile is visible; every warpgroup's products have read the split tiles
    if (t + 1 < t_end) transpose(buf ^ 1);
    fence_proxy_async();
    __syncthreads();
  }
  halo_store_partials<RB>(a.partial, sum, l);
#endif
}

}  // namespace hopper
}  // namespace jaxconv3d
