// sm80 grad-weight: wgrad_kernel (GEMM M = O/groups, N = (C/groups)*taps, K = N*Do*Ho*Wo split over blocks);
// wgrad_pipe_kernel (O/groups > 32): same tiles and splits, pipelined, WMMA for tf32/bf16/f16, FFMA for fp32;
// dw_wgrad_kernel: depthwise grad-weight; splits_reduce_kernel sums the split partials in ascending order (no
// atomics). The split plan and the kernel are chosen by wg_plan() / choose() in plan.cc.
#include "sm80/common.cuh"
#include "sm80/sm80.h"

namespace jaxconv3d {
namespace sm80 {
namespace {

// ----------------------------------------------------------------------------------------------------------
// Grad-weight GEMM: M = O/groups (o), N = (C/groups)*taps (ct), K = batch*Do*Ho*Wo split into S chunks.
struct WgArgs {
  const void* x;
  const void* dy;
  void* dw;     // final output when S == 1
  void* ws;     // partials [S][w_elements] when S > 1
  i64 batch;
  int C, O, Cg, Og, T, Ncol;
  int S;
  i64 wel;
  int g0;
  ConvGeo geo;
};

template <typename Acc> struct WgCfg { static constexpr int BK = 16; };

// Shared by both grad-weight kernels: for the block's BN columns (c, tap) of the filter, the tap's input offset
// per axis (s_coff; kInvalid past the last column) and its linear offset in one (n, group) input volume (s_clin).
template <int NT, int BN>
__device__ __forceinline__ void wgrad_column_table(const WgArgs& a, int n0, int tid, int k12, i64 HW, i64 DHW, int W,
                                                   int4* s_coff, i64* s_clin) {
  const ConvGeo& G = a.geo;
  for (int cl = tid; cl < BN; cl += NT) {
    const int ct = n0 + cl;
    if (ct < a.Ncol) {
      const int c = ct / a.T, tap = ct - c * a.T;
      const int td = tap / k12, r = tap - td * k12, th = r / G.k[2], tw = r - th * G.k[2];
      const int oz = td * G.dl[0], oy = th * G.dl[1], ox = tw * G.dl[2];
      s_coff[cl] = make_int4(oz, oy, ox, 0);
      s_clin[cl] = (i64)c * DHW + (i64)oz * HW + (i64)oy * W + ox;
    } else {
      s_coff[cl] = make_int4(kInvalid, kInvalid, kInvalid, 0); s_clin[cl] = 0;
    }
  }
}

// Reduction position p = (n, zo, yo, xo) of group g: its offset in dy, the offset in x of the input corner that tap
// (0, 0, 0) reads, and that corner per axis (taps add their offsets to it, and bounds are tested on it).
struct WgPos {
  i64 pdy, px;
  int bz, by, bx;
};
__device__ __forceinline__ WgPos wgrad_position(const WgArgs& a, int g, i64 p, i64 Osp, i64 OHW, i64 HW, i64 DHW,
                                                int W) {
  const ConvGeo& G = a.geo;
  i64 n, sp, zo, r, yo, xo;
  divmod64(p, Osp, n, sp);
  divmod64(sp, OHW, zo, r);
  divmod64(r, G.yd[2], yo, xo);
  WgPos q;
  q.bz = (int)zo * G.s[0] - G.pl[0];
  q.by = (int)yo * G.s[1] - G.pl[1];
  q.bx = (int)xo * G.s[2] - G.pl[2];
  q.pdy = (n * a.O + (i64)g * a.Og) * Osp + sp;
  q.px = (n * a.C + (i64)g * a.Cg) * DHW + (i64)q.bz * HW + (i64)q.by * W + q.bx;
  return q;
}

// The split's slice [kb, ke) of the reduction over P = N*Do*Ho*Wo positions: S equal chunks rounded up to BK.
template <int BK>
__device__ __forceinline__ void wgrad_split_range(i64 P, int S, int split, i64* kb, i64* ke) {
  i64 chunk = (P + S - 1) / S;
  chunk = (chunk + BK - 1) / BK * BK;
  *kb = (i64)split * chunk;
  *ke = *kb + chunk < P ? *kb + chunk : P;
}


template <int BMO> struct WgTile {
  static constexpr int BN = BMO == 16 ? 256 : 8192 / BMO;   // 64 -> 128, 32 -> 256, 16 -> 256
  static constexpr int NT = (BMO / 8) * (BN / 8);            // 128, 128, 64
};
template <typename T, typename Acc, int BMO>
__global__ void __launch_bounds__(WgTile<BMO>::NT) wgrad_kernel(const WgArgs a) {
  constexpr int BN = WgTile<BMO>::BN;
  constexpr int NT = WgTile<BMO>::NT;
  constexpr int BK = WgCfg<Acc>::BK;
  constexpr int APER = BK * BMO / NT;
  constexpr int BPER = BK * BN / NT;
  static_assert(APER >= 1 && APER * NT == BK * BMO, "A per thread");
  __shared__ __align__(16) Acc As[BK][BMO];
  __shared__ __align__(16) Acc Bs[BK][BN];
  __shared__ i64 s_clin[BN];
  __shared__ int4 s_coff[BN];
  __shared__ i64 s_pdy[BK], s_px[BK];
  __shared__ int4 s_pc[BK];

  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  const int tid = threadIdx.x;
  const int g = blockIdx.z + a.g0;
  const int split = blockIdx.y;
  const int ntn = (a.Ncol + BN - 1) / BN;
  const int mtile = blockIdx.x / ntn, ntile = blockIdx.x - mtile * ntn;
  const int m0 = mtile * BMO, n0 = ntile * BN;
  const ConvGeo& G = a.geo;
  const int D = G.xd[0], H = G.xd[1], W = G.xd[2];
  const i64 HW = (i64)H * W, DHW = HW * D;
  const i64 Osp = (i64)G.yd[0] * G.yd[1] * G.yd[2];
  const i64 OHW = (i64)G.yd[1] * G.yd[2];
  const int k12 = G.k[1] * G.k[2];

  wgrad_column_table<NT, BN>(a, n0, tid, k12, HW, DHW, W, s_coff, s_clin);
  const i64 P = a.batch * Osp;
  i64 kb, ke;
  wgrad_split_range<BK>(P, a.S, split, &kb, &ke);

  const int tn = tid % (BN / 8), tm = tid / (BN / 8);
  Acc acc[8][8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[i][j] = 0;

  for (i64 kt = kb; kt < ke; kt += BK) {
    if (tid < BK) {
      const i64 p = kt + tid;
      if (p < ke) {
        const WgPos q = wgrad_position(a, g, p, Osp, OHW, HW, DHW, W);
        s_pdy[tid] = q.pdy;
        s_px[tid] = q.px;
        s_pc[tid] = make_int4(q.bz, q.by, q.bx, 0);
      } else {
        s_pdy[tid] = -1; s_px[tid] = 0;
        s_pc[tid] = make_int4(kInvalid, kInvalid, kInvalid, 0);
      }
    }
    __syncthreads();
#pragma unroll
    for (int e = 0; e < APER; ++e) {
      const int idx = tid + NT * e;
      const int kl = idx % BK, ol = idx / BK;
      const i64 pdy = s_pdy[kl];
      const int o = m0 + ol;
      As[kl][ol] = (pdy >= 0 && o < a.Og) ? cvt<Acc>(dy[pdy + (i64)o * Osp]) : Acc(0);
    }
#pragma unroll 4
    for (int e = 0; e < BPER; ++e) {
      const int idx = tid + NT * e;
      const int kl = idx % BK, cl = idx / BK;
      const int4 pc = s_pc[kl], co = s_coff[cl];
      const int iz = pc.x + co.x, iy = pc.y + co.y, ix = pc.z + co.z;
      const bool ok = (unsigned)iz < (unsigned)D && (unsigned)iy < (unsigned)H && (unsigned)ix < (unsigned)W;
      Bs[kl][cl] = ok ? cvt<Acc>(x[s_px[kl] + s_clin[cl]]) : Acc(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      Acc av[8], bv[8], t4[4];
      lds_vec(t4, &As[kk][tm * 4]);
#pragma unroll
      for (int i = 0; i < 4; ++i) av[i] = t4[i];
      lds_vec(t4, &As[kk][BMO / 2 + tm * 4]);
#pragma unroll
      for (int i = 0; i < 4; ++i) av[4 + i] = t4[i];
      lds_vec(t4, &Bs[kk][tn * 4]);
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = t4[j];
      lds_vec(t4, &Bs[kk][BN / 2 + tn * 4]);
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[4 + j] = t4[j];
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int o = m0 + (i < 4 ? tm * 4 + i : BMO / 2 + tm * 4 + (i - 4));
    if (o >= a.Og) continue;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int ct = n0 + (j < 4 ? tn * 4 + j : BN / 2 + tn * 4 + (j - 4));
      if (ct >= a.Ncol) continue;
      const i64 e = ((i64)g * a.Og + o) * a.Ncol + ct;
      if (a.S == 1) static_cast<T*>(a.dw)[e] = cvt<T>(acc[i][j]);
      else static_cast<Acc*>(a.ws)[(i64)split * a.wel + e] = acc[i][j];
    }
  }
}

// Pipelined grad-weight GEMM for Og > 32: 64 (o) x 128 (c*taps) tile, double-buffered shared memory with a register
// prefetch of the next k-tile (one barrier per k-tile). Every thread owns one position k = tid % BK of each k-tile
// (so it decodes that position itself; no per-tile table and no extra barrier) and the rows tid / BK + (NT / BK) * e.
//  * MMA = false: FFMA, 128 threads, 8x8 register micro-tile (float32 accurate).
//  * MMA = true: WMMA, 256 threads = 2 (o) x 4 (ct) warps of 32x32 (tf32 m16n16k8 with operands rounded to tf32
//    when they are staged; bf16/f16 m16n16k16), fp32 accumulate.
// The summation order of every output element is fixed by the tile loop (deterministic); the split partials are
// summed by splits_reduce_kernel exactly as for wgrad_kernel (same plan, same workspace size).
template <bool MMA> struct WgPipe {
  static constexpr int BMO = 64, BN = 128;
  static constexpr int NT = MMA ? 256 : 128;
};
template <typename T, typename ST, int BK, bool MMA>
__global__ void __launch_bounds__(WgPipe<MMA>::NT, MMA ? 2 : 3) wgrad_pipe_kernel(const WgArgs a) {
  constexpr int BMO = WgPipe<MMA>::BMO, BN = WgPipe<MMA>::BN, NT = WgPipe<MMA>::NT;
  static_assert(NT % BK == 0, "k mapping");
  constexpr int KSTEP = NT / BK;  // row stride of one thread's elements
  constexpr int APER = BMO / KSTEP, BPER = BN / KSTEP;
  static_assert(APER * KSTEP == BMO && BPER * KSTEP == BN, "per-thread elements");
  constexpr int PAD = (MMA && sizeof(ST) == 2) ? 8 : 4;
  constexpr int LDA = BMO + PAD, LDB = BN + PAD;
  constexpr int TILE_BYTES = 2 * BK * (LDA + LDB) * (int)sizeof(ST);
  constexpr int LDC = BN + 4;
  constexpr int C_BYTES = MMA ? BMO * LDC * 4 : 0;
  constexpr int RAW = TILE_BYTES > C_BYTES ? TILE_BYTES : C_BYTES;
  __shared__ __align__(128) unsigned char raw[RAW];
  __shared__ i64 s_clin[BN];
  __shared__ int4 s_coff[BN];
  ST* As = reinterpret_cast<ST*>(raw);
  ST* Bs = As + 2 * BK * LDA;

  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  const int tid = threadIdx.x;
  const int g = blockIdx.z + a.g0;
  const int split = blockIdx.y;
  const int ntn = (a.Ncol + BN - 1) / BN;
  const int mtile = blockIdx.x / ntn, ntile = blockIdx.x - mtile * ntn;
  const int m0 = mtile * BMO, n0 = ntile * BN;
  const ConvGeo& G = a.geo;
  const int D = G.xd[0], H = G.xd[1], W = G.xd[2];
  const i64 HW = (i64)H * W, DHW = HW * D;
  const i64 Osp = (i64)G.yd[0] * G.yd[1] * G.yd[2];
  const i64 OHW = (i64)G.yd[1] * G.yd[2];
  const int k12 = G.k[1] * G.k[2];

  wgrad_column_table<NT, BN>(a, n0, tid, k12, HW, DHW, W, s_coff, s_clin);
  const i64 P = a.batch * Osp;
  i64 kb, ke;
  wgrad_split_range<BK>(P, a.S, split, &kb, &ke);
  const int nk = ke > kb ? (int)((ke - kb + BK - 1) / BK) : 0;

  const int kl = tid % BK, rl = tid / BK;
  ST ra[APER], rb[BPER];

  auto gload = [&](int it) {
    const i64 p = kb + (i64)it * BK + kl;
    i64 pdy = -1, px = 0;
    int bz = kInvalid, by = kInvalid, bx = kInvalid;
    if (p < ke) {
      const WgPos q = wgrad_position(a, g, p, Osp, OHW, HW, DHW, W);
      bz = q.bz; by = q.by; bx = q.bx;
      pdy = q.pdy;
      px = q.px;
    }
#pragma unroll
    for (int e = 0; e < APER; ++e) {
      const int o = m0 + rl + KSTEP * e;
      ra[e] = (pdy >= 0 && o < a.Og) ? cvt<ST>(dy[pdy + (i64)o * Osp]) : zero_of<ST>();
    }
#pragma unroll
    for (int e = 0; e < BPER; ++e) {
      const int cl = rl + KSTEP * e;
      const int4 co = s_coff[cl];
      const int iz = bz + co.x, iy = by + co.y, ix = bx + co.z;
      const bool ok = (unsigned)iz < (unsigned)D && (unsigned)iy < (unsigned)H && (unsigned)ix < (unsigned)W;
      rb[e] = ok ? cvt<ST>(x[px + s_clin[cl]]) : zero_of<ST>();
    }
  };
  auto sstore = [&](int buf) {
    ST* A = As + buf * BK * LDA + kl * LDA + rl;
    ST* B = Bs + buf * BK * LDB + kl * LDB + rl;
#pragma unroll
    for (int e = 0; e < APER; ++e) {
      if constexpr (MMA && std::is_same<ST, float>::value) A[KSTEP * e] = nvcuda::wmma::__float_to_tf32(ra[e]);
      else A[KSTEP * e] = ra[e];
    }
#pragma unroll
    for (int e = 0; e < BPER; ++e) {
      if constexpr (MMA && std::is_same<ST, float>::value) B[KSTEP * e] = nvcuda::wmma::__float_to_tf32(rb[e]);
      else B[KSTEP * e] = rb[e];
    }
  };

  __syncthreads();  // s_coff / s_clin
  if constexpr (!MMA) {
    using Acc = ST;
    const int tn = tid % (BN / 8), tm = tid / (BN / 8);
    Acc acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[i][j] = 0;
    if (nk > 0) {
      gload(0); sstore(0);
      __syncthreads();
      for (int it = 0; it < nk; ++it) {
        const bool more = it + 1 < nk;
        if (more) gload(it + 1);
        const Acc* A = As + (it & 1) * BK * LDA;
        const Acc* B = Bs + (it & 1) * BK * LDB;
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
          Acc av[8], bv[8], t4[4];
          lds_vec(t4, A + kk * LDA + tm * 4);
#pragma unroll
          for (int i = 0; i < 4; ++i) av[i] = t4[i];
          lds_vec(t4, A + kk * LDA + BMO / 2 + tm * 4);
#pragma unroll
          for (int i = 0; i < 4; ++i) av[4 + i] = t4[i];
          lds_vec(t4, B + kk * LDB + tn * 4);
#pragma unroll
          for (int j = 0; j < 4; ++j) bv[j] = t4[j];
          lds_vec(t4, B + kk * LDB + BN / 2 + tn * 4);
#pragma unroll
          for (int j = 0; j < 4; ++j) bv[4 + j] = t4[j];
#pragma unroll
          for (int i = 0; i < 8; ++i)
#pragma unroll
            for (int j = 0; j < 8; ++j) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
        if (more) sstore((it + 1) & 1);
        __syncthreads();
      }
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int o = m0 + (i < 4 ? tm * 4 + i : BMO / 2 + tm * 4 + (i - 4));
      if (o >= a.Og) continue;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int ct = n0 + (j < 4 ? tn * 4 + j : BN / 2 + tn * 4 + (j - 4));
        if (ct >= a.Ncol) continue;
        const i64 e = ((i64)g * a.Og + o) * a.Ncol + ct;
        if (a.S == 1) static_cast<T*>(a.dw)[e] = cvt<T>(acc[i][j]);
        else static_cast<Acc*>(a.ws)[(i64)split * a.wel + e] = acc[i][j];
      }
    }
  } else {
    using namespace nvcuda;
    constexpr bool TF32 = std::is_same<ST, float>::value;
    constexpr int WK = TF32 ? 8 : 16;
    static_assert(BK % WK == 0, "k steps");
    using AType = typename std::conditional<TF32, wmma::precision::tf32, ST>::type;
    const int warp = tid >> 5;
    const int wm = warp & 1, wn = warp >> 1;  // 2 x 4 warps, 32 x 32 each
    wmma::fragment<wmma::accumulator, 16, 16, WK, float> cf[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(cf[i][j], 0.0f);
    if (nk > 0) {
      gload(0); sstore(0);
      __syncthreads();
      for (int it = 0; it < nk; ++it) {
        const bool more = it + 1 < nk;
        if (more) gload(it + 1);
        const ST* A = As + (it & 1) * BK * LDA;
        const ST* B = Bs + (it & 1) * BK * LDB;
#pragma unroll
        for (int kk = 0; kk < BK; kk += WK) {
          wmma::fragment<wmma::matrix_a, 16, 16, WK, AType, wmma::col_major> fa[2];
          wmma::fragment<wmma::matrix_b, 16, 16, WK, AType, wmma::row_major> fb[2];
#pragma unroll
          for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], A + kk * LDA + wm * 32 + i * 16, LDA);
#pragma unroll
          for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], B + kk * LDB + wn * 32 + j * 16, LDB);
#pragma unroll
          for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::mma_sync(cf[i][j], fa[i], fb[j], cf[i][j]);
        }
        if (more) sstore((it + 1) & 1);
        __syncthreads();
      }
    }
    float* Cs = reinterpret_cast<float*>(raw);  // tiles are dead: the k loop ended with a barrier (or never ran)
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::store_matrix_sync(Cs + (wm * 32 + i * 16) * LDC + wn * 32 + j * 16, cf[i][j], LDC,
                                wmma::mem_row_major);
    __syncthreads();
#pragma unroll 4
    for (int e = 0; e < BMO * BN / NT; ++e) {
      const int idx = tid + NT * e;
      const int cl = idx % BN, ol = idx / BN;
      const int o = m0 + ol, ct = n0 + cl;
      if (o < a.Og && ct < a.Ncol) {
        const float v = Cs[ol * LDC + cl];
        const i64 el = ((i64)g * a.Og + o) * a.Ncol + ct;
        if (a.S == 1) static_cast<T*>(a.dw)[el] = cvt<T>(v);
        else static_cast<float*>(a.ws)[(i64)split * a.wel + el] = v;
      }
    }
  }
}

// Depthwise grad-weight (C/groups == 1, taps <= 32): block = (output channel, split of the rows n*Do*Ho).
// KD, KH, KW > 0: compile-time kernel extents (every tap loop unrolled); 0: any extents with taps <= 32.
template <typename T, typename Acc, int KD, int KH, int KW>
__global__ void __launch_bounds__(256) dw_wgrad_kernel(const WgArgs a) {
  constexpr bool FIXED = KD > 0;
  __shared__ int s_t[3][kDwMaxT];
  __shared__ Acc s_red[8][kDwMaxT];
  const T* __restrict__ x = static_cast<const T*>(a.x);
  const T* __restrict__ dy = static_cast<const T*>(a.dy);
  const ConvGeo& G = a.geo;
  const int o = (int)(blockIdx.x % a.O);
  const int split = (int)(blockIdx.x / a.O);
  const int c = o / a.Og;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int T_ = a.T;
  if (tid < T_) {
    const int k12 = G.k[1] * G.k[2];
    const int td = tid / k12, r = tid - td * k12, th = r / G.k[2], tw = r - th * G.k[2];
    s_t[0][tid] = td * G.dl[0]; s_t[1][tid] = th * G.dl[1]; s_t[2][tid] = tw * G.dl[2];
  }
  __syncthreads();
  const int D = G.xd[0], H = G.xd[1], W = G.xd[2];
  const int Do = G.yd[0], Ho = G.yd[1], Wo = G.yd[2];
  const i64 HW = (i64)H * W, DHW = HW * D;
  const i64 R = a.batch * Do * Ho;
  const i64 chunk = (R + a.S - 1) / a.S;
  const i64 r0 = (i64)split * chunk;
  const i64 r1 = r0 + chunk < R ? r0 + chunk : R;
  Acc acc[kDwMaxT];
#pragma unroll
  for (int t = 0; t < kDwMaxT; ++t) acc[t] = 0;
  const i64 DoHo = (i64)Do * Ho;
  for (i64 r = r0 + warp; r < r1; r += 8) {
    i64 n, rr, zo, yo;
    divmod64(r, DoHo, n, rr);
    divmod64(rr, Ho, zo, yo);
    const T* dyrow = dy + (((n * a.O + o) * Do + zo) * Ho + yo) * Wo;
    const T* xc = x + (n * a.C + c) * DHW;
    const int bz = (int)zo * G.s[0] - G.pl[0], by = (int)yo * G.s[1] - G.pl[1];
    if constexpr (FIXED) {
      for (int xo = lane; xo < Wo; xo += 32) {
        const Acc gv = cvt<Acc>(dyrow[xo]);
        const int bx = xo * G.s[2] - G.pl[2];
#pragma unroll
        for (int td = 0; td < KD; ++td) {
          const int iz = bz + td * G.dl[0];
          const bool zok = (unsigned)iz < (unsigned)D;
#pragma unroll
          for (int th = 0; th < KH; ++th) {
            const int iy = by + th * G.dl[1];
            const bool rok = zok && (unsigned)iy < (unsigned)H;
            const i64 rofs = (i64)iz * HW + (i64)iy * W;
#pragma unroll
            for (int tw = 0; tw < KW; ++tw) {
              const int ix = bx + tw * G.dl[2];
              if (rok && (unsigned)ix < (unsigned)W)
                acc[(td * KH + th) * KW + tw] = fma(gv, cvt<Acc>(xc[rofs + ix]), acc[(td * KH + th) * KW + tw]);
            }
          }
        }
      }
    } else {
      for (int xo = lane; xo < Wo; xo += 32) {
        const Acc gv = cvt<Acc>(dyrow[xo]);
        const int bx = xo * G.s[2] - G.pl[2];
#pragma unroll
        for (int t = 0; t < kDwMaxT; ++t) {
          if (t < T_) {
            const int iz = bz + s_t[0][t], iy = by + s_t[1][t], ix = bx + s_t[2][t];
            if ((unsigned)iz < (unsigned)D && (unsigned)iy < (unsigned)H && (unsigned)ix < (unsigned)W)
              acc[t] = fma(gv, cvt<Acc>(xc[(i64)iz * HW + (i64)iy * W + ix]), acc[t]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kDwMaxT; ++t) {
    if (t < T_) {
      Acc v = acc[t];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
      if (lane == 0) s_red[warp][t] = v;
    }
  }
  __syncthreads();
  if (tid < T_) {
    Acc v = 0;
#pragma unroll
    for (int w = 0; w < 8; ++w) v += s_red[w][tid];
    const i64 e = (i64)o * T_ + tid;
    if (a.S == 1) static_cast<T*>(a.dw)[e] = cvt<T>(v);
    else static_cast<Acc*>(a.ws)[(i64)split * a.wel + e] = v;
  }
}

template <typename T, typename Acc>
__global__ void splits_reduce_kernel(const Acc* __restrict__ ws, T* __restrict__ dw, i64 wel, int S) {
  pdl_wait();  // launched as a dependent of the kernel that wrote ws
  pdl_release();
  for (i64 e = (i64)blockIdx.x * blockDim.x + threadIdx.x; e < wel; e += (i64)gridDim.x * blockDim.x) {
    Acc v = 0;
    for (int s = 0; s < S; ++s) v += ws[(i64)s * wel + e];
    dw[e] = cvt<T>(v);
  }
}

template <typename T>
std::string reduce_impl(const ConvProblem& p, const void* ws, void* dw, int S, cudaStream_t st) {
  using Acc = typename AccOf<T>::type;
  const i64 wel = p.w_elements();
  i64 blocks = (wel + 255) / 256;
  if (blocks > 65535 * 16) blocks = 65535 * 16;
  launch_dependent(splits_reduce_kernel<T, Acc>, dim3(unsigned(blocks)), dim3(256), 0, st, static_cast<const Acc*>(ws),
                   static_cast<T*>(dw), wel, S);
  return launch_error("wgrad split reduce");
}

template <typename T>
std::string wgrad_impl(const ConvProblem& p, DType t, Kernel k, const void* x, const void* dy, void* dw, void* ws,
                       size_t ws_bytes, cudaStream_t st) {
  using Acc = typename AccOf<T>::type;
  const WgPlan pl = wg_plan(p, t);
  if (ws_bytes < pl.ws_bytes)
    return "jaxconv3d cuda: wgrad workspace too small (" + std::to_string(ws_bytes) + " < " +
           std::to_string(pl.ws_bytes) + " bytes)";
  // the 3x3x3 depthwise grad-weight on tensor cores has its own splits (x and dy off its copies' alignment run the
  // brick kernel with pl.S); the workspace holds either
  const bool dw3_mma = pl.dw3 && k == Kernel::kWgradDw3Mma && wgrad_dw3_mma_aligned(x, dy);
  const bool dw3_stream = pl.stream && k == Kernel::kWgradDw3Stream;
  const int S = dw3_mma ? pl.mma_S : (dw3_stream ? pl.stream_S : pl.S);
  if (S > 1 && ws == nullptr) return "jaxconv3d cuda: wgrad workspace is null";
  WgArgs a;
  a.x = x; a.dy = dy; a.dw = dw; a.ws = ws;
  a.batch = p.batch;
  a.C = (int)p.in_channels; a.O = (int)p.out_channels;
  a.Cg = (int)p.in_per_group(); a.Og = (int)p.out_per_group();
  a.T = (int)p.taps(); a.Ncol = (int)(p.in_per_group() * p.taps());
  a.S = pl.S; a.wel = p.w_elements(); a.g0 = 0;
  a.geo = make_geo(p);
  if (dw3_mma) {
    const std::string e = wgrad_dw3_mma(p, t, pl, x, dy, dw, ws, st);  // S > 1: partial sums into ws, reduced below
    if (!e.empty()) return e;
  } else if (dw3_stream) {
    const std::string e = wgrad_dw3_stream(p, t, pl, x, dy, dw, ws, st);  // S > 1: partial sums into ws
    if (!e.empty()) return e;
  } else if (pl.dw3) {
    const std::string e = wgrad_dw3(p, t, pl, x, dy, dw, ws, st);  // S > 1: partial sums into ws, reduced below
    if (!e.empty()) return e;
  } else if (pl.depthwise) {
    const i64 blocks = (i64)pl.S * p.out_channels;
    if (blocks > INT_MAX) return "jaxconv3d cuda: too many blocks (depthwise wgrad)";
    if (p.kernel[0] == 3 && p.kernel[1] == 3 && p.kernel[2] == 3)
      dw_wgrad_kernel<T, Acc, 3, 3, 3><<<(unsigned)blocks, 256, 0, st>>>(a);
    else
      dw_wgrad_kernel<T, Acc, 0, 0, 0><<<(unsigned)blocks, 256, 0, st>>>(a);
    const std::string e = launch_error("depthwise wgrad");
    if (!e.empty()) return e;
  } else {
    const i64 BN = pl.bmo == 16 ? 256 : 8192 / pl.bmo;
    const i64 gx = ((a.Og + pl.bmo - 1) / pl.bmo) * ((a.Ncol + BN - 1) / BN);
    if (gx > INT_MAX) return "jaxconv3d cuda: too many tiles (wgrad)";
    for (int g0 = 0; g0 < (int)p.groups; g0 += 65535) {
      a.g0 = g0;
      const dim3 grid((unsigned)gx, (unsigned)pl.S, (unsigned)std::min<i64>(65535, p.groups - g0));
      constexpr bool kF32 = std::is_same<T, float>::value;
      constexpr bool k16 = std::is_same<T, __nv_bfloat16>::value || std::is_same<T, __half>::value;
      if (k == Kernel::kWgradPipeWmma && kF32) {
        if constexpr (kF32) wgrad_pipe_kernel<T, float, 16, true><<<grid, WgPipe<true>::NT, 0, st>>>(a);
      } else if (k == Kernel::kWgradPipeFfma && kF32) {
        if constexpr (kF32) wgrad_pipe_kernel<T, float, 16, false><<<grid, WgPipe<false>::NT, 0, st>>>(a);
      } else if (k == Kernel::kWgradPipeWmma && k16) {
        if constexpr (k16) wgrad_pipe_kernel<T, T, 32, true><<<grid, WgPipe<true>::NT, 0, st>>>(a);
      } else if (k == Kernel::kWgrad64) wgrad_kernel<T, Acc, 64><<<grid, WgTile<64>::NT, 0, st>>>(a);
      else if (k == Kernel::kWgrad32) wgrad_kernel<T, Acc, 32><<<grid, WgTile<32>::NT, 0, st>>>(a);
      else if (k == Kernel::kWgrad16) wgrad_kernel<T, Acc, 16><<<grid, WgTile<16>::NT, 0, st>>>(a);
      else return std::string("jaxconv3d cuda: ") + kernel_name(k) + " is not a grad-weight kernel for this dtype";
      const std::string e = launch_error("wgrad gemm");
      if (!e.empty()) return e;
    }
  }
  return S > 1 ? reduce_impl<T>(p, ws, dw, S, st) : "";
}

}  // namespace

std::string splits_reduce(const ConvProblem& p, DType t, const void* workspace, void* dw, int S, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return reduce_impl<float>(p, workspace, dw, S, st);
    case DType::kF64: return reduce_impl<double>(p, workspace, dw, S, st);
    case DType::kBF16: return reduce_impl<__nv_bfloat16>(p, workspace, dw, S, st);
    case DType::kF16: return reduce_impl<__half>(p, workspace, dw, S, st);
  }
  return "jaxconv3d cuda: unknown dtype";
}

std::string wgrad(const ConvProblem& p, DType t, Kernel k, const void* x, const void* dy, void* dw, void* workspace,
                  size_t workspace_bytes, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return wgrad_impl<float>(p, t, k, x, dy, dw, workspace, workspace_bytes, st);
    case DType::kF64: return wgrad_impl<double>(p, t, k, x, dy, dw, workspace, workspace_bytes, st);
    case DType::kBF16: return wgrad_impl<__nv_bfloat16>(p, t, k, x, dy, dw, workspace, workspace_bytes, st);
    case DType::kF16: return wgrad_impl<__half>(p, t, k, x, dy, dw, workspace, workspace_bytes, st);
  }
  return "jaxconv3d cuda: unknown dtype";
}

}  // namespace sm80
}  // namespace jaxconv3d
