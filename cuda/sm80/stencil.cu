// sm80 depthwise direct stencil: forward (C/groups == 1) and stride-1 grad-input (C/groups <= 4). Input tile +
// halo in shared memory; 8 depth outputs per thread, and for depth kernel 3 / stride 1 / dilation 1 each source
// row is read once. Its geometry (and whether it applies) comes from stencil_plan() in plan.cc.
#include "sm80/common.cuh"
#include "sm80/sm80.h"

namespace jaxconv3d {
namespace sm80 {
namespace {

constexpr bool kStencilSlide = true;    // stencil: depth-3 sliding reuse of source rows


// CO output channels per block share every staged source tile (grad-input of small C/groups: CO = C/groups).
// SLIDE (depth kernel 3, depth stride 1, |depth tap step| 1): the kSTZ + 2 source rows of one (t1, t2) column are
// read once from shared memory and reused by the three depth taps.
template <typename T, typename Acc, int CO, bool SLIDE>
__global__ void __launch_bounds__(256, (SLIDE || sizeof(Acc) == 8) ? 1 : 3)
stencil_kernel(const StencilArgs a) {
  extern __shared__ __align__(16) unsigned char dsm[];
  const int E0 = a.E[0], E1 = a.E[1], E2 = a.E[2];
  const int E12 = E1 * E2;
  Acc* tile = reinterpret_cast<Acc*>(dsm);
  Acc* ws = tile + (i64)E0 * E12;
  const T* __restrict__ src = static_cast<const T*>(a.src);
  const T* __restrict__ wt = static_cast<const T*>(a.wt);
  T* __restrict__ out = static_cast<T*>(a.out);

  i64 b = blockIdx.x;
  const int tx = (int)(b % a.ntile[2]); b /= a.ntile[2];
  const int ty = (int)(b % a.ntile[1]); b /= a.ntile[1];
  const int tz = (int)(b % a.ntile[0]); b /= a.ntile[0];
  const int ocb = (int)(b % a.OCB);
  const i64 n = b / a.OCB;
  const int tid = threadIdx.x, lx = tid & 31, ly = tid >> 5;
  const int org0 = tz * kSTZ * a.st[0] + a.base[0] + a.lo[0];
  const int org1 = ty * kSTY * a.st[1] + a.base[1] + a.lo[1];
  const int org2 = tx * kSTX * a.st[2] + a.base[2] + a.lo[2];
  const int T_ = a.k[0] * a.k[1] * a.k[2];
  const i64 sp = (i64)a.sd[0] * a.sd[1] * a.sd[2];
  const i64 shw = (i64)a.sd[1] * a.sd[2];

  Acc acc[CO][kSTZ];
#pragma unroll
  for (int co = 0; co < CO; ++co)
#pragma unroll
    for (int z = 0; z < kSTZ; ++z) acc[co][z] = 0;
  const int lbase = (ly * a.st[1] - a.lo[1]) * E2 + lx * a.st[2] - a.lo[2];
  const int zstep = a.st[0] * E12;

  for (int u = 0; u < a.nsrc; ++u) {
    const int sch = a.dgrad ? ocb * a.Og + u : ocb / a.Og;
    const i64 wrow = a.dgrad ? (i64)ocb * a.Og + u : ocb;
    if (u > 0) __syncthreads();
    for (int t = tid; t < CO * T_; t += 256) ws[t] = cvt<Acc>(wt[wrow * CO * T_ + t]);
    const T* sc = src + (n * a.SC + sch) * sp;
    for (int row = ly; row < E0 * E1; row += 8) {
      const int z = row / E1, y = row - z * E1;
      const int gz = org0 + z, gy = org1 + y;
      const bool rok = (unsigned)gz < (unsigned)a.sd[0] && (unsigned)gy < (unsigned)a.sd[1];
      const T* sr = sc + (i64)gz * shw + (i64)gy * a.sd[2];
      Acc* trow = tile + (i64)row * E2;
      for (int x = lx; x < E2; x += 32) {
        const int gx = org2 + x;
        trow[x] = (rok && (unsigned)gx < (unsigned)a.sd[2]) ? cvt<Acc>(sr[gx]) : Acc(0);
      }
    }
    __syncthreads();
    if constexpr (SLIDE) {
      // row of (z, t0) = z + t0 * tstep0 - lo0 = z + j with j = t0 (tstep0 = 1) or 2 - t0 (tstep0 = -1)
      const int k12 = a.k[1] * a.k[2];
      const int jstep = a.tstep[0] < 0 ? -k12 : k12;   // tap step of j
      const Acc* wj0 = ws + (a.tstep[0] < 0 ? 2 * k12 : 0);
      for (int t1 = 0; t1 < a.k[1]; ++t1) {
        const int o1 = lbase + t1 * a.tstep[1] * E2;
        for (int t2 = 0; t2 < a.k[2]; ++t2) {
          const int o2 = o1 + t2 * a.tstep[2];
          Acc tv[kSTZ + 2];
#pragma unroll
          for (int r = 0; r < kSTZ + 2; ++r) tv[r] = tile[o2 + r * E12];
          const Acc* wt12 = wj0 + t1 * a.k[2] + t2;
#pragma unroll
          for (int j = 0; j < 3; ++j) {
#pragma unroll
            for (int co = 0; co < CO; ++co) {
              const Acc wv = wt12[co * T_ + j * jstep];
#pragma unroll
              for (int z = 0; z < kSTZ; ++z) acc[co][z] = fma(wv, tv[z + j], acc[co][z]);
            }
          }
        }
      }
    } else {
    int tap = 0;
    for (int t0 = 0; t0 < a.k[0]; ++t0) {
      const int o0 = (t0 * a.tstep[0] - a.lo[0]) * E12 + lbase;
      for (int t1 = 0; t1 < a.k[1]; ++t1) {
        const int o1 = o0 + t1 * a.tstep[1] * E2;
        for (int t2 = 0; t2 < a.k[2]; ++t2, ++tap) {
          const int o2 = o1 + t2 * a.tstep[2];
          Acc tv[kSTZ];
#pragma unroll
          for (int z = 0; z < kSTZ; ++z) tv[z] = tile[o2 + z * zstep];
#pragma unroll
          for (int co = 0; co < CO; ++co) {
            const Acc wv = ws[co * T_ + tap];
#pragma unroll
            for (int z = 0; z < kSTZ; ++z) acc[co][z] = fma(wv, tv[z], acc[co][z]);
          }
        }
      }
    }
    }
  }
  const int oy = ty * kSTY + ly, ox = tx * kSTX + lx;
  if (oy < a.od[1] && ox < a.od[2]) {
    const T* bias = static_cast<const T*>(a.bias);
#pragma unroll
    for (int co = 0; co < CO; ++co) {
      const int oc = a.dgrad ? ocb * CO + co : ocb;
      const Acc bv = bias != nullptr ? cvt<Acc>(bias[oc]) : Acc(0);
      const i64 obase = (n * a.OC + oc) * ((i64)a.od[0] * a.od[1] * a.od[2]) + (i64)oy * a.od[2] + ox;
#pragma unroll
      for (int z = 0; z < kSTZ; ++z) {
        const int oz = tz * kSTZ + z;
        if (oz < a.od[0]) out[obase + (i64)oz * a.od[1] * a.od[2]] = cvt<T>(acc[co][z] + bv);
      }
    }
  }
}

template <typename T>
std::string stencil_impl(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w, const void* bias,
                         void* out, cudaStream_t st) {
  using Acc = typename AccOf<T>::type;
  StencilArgs s;
  int64_t smem = 0, blocks = 0;
  if (!stencil_plan(p, dgrad, t, &s, &smem, &blocks))
    return "jaxconv3d cuda: the depthwise stencil does not apply to this problem";
  s.src = src; s.wt = w; s.bias = bias; s.out = out;
  const int CO = dgrad ? (int)p.in_per_group() : 1;
  if (blocks == 0) return "";
  const unsigned nb = (unsigned)blocks;
  const bool slide = kStencilSlide && s.k[0] == 3 && s.st[0] == 1 && (s.tstep[0] == 1 || s.tstep[0] == -1);
  if (slide) {
    if (CO == 1) stencil_kernel<T, Acc, 1, true><<<nb, 256, (size_t)smem, st>>>(s);
    else if (CO == 2) stencil_kernel<T, Acc, 2, true><<<nb, 256, (size_t)smem, st>>>(s);
    else if (CO == 3) stencil_kernel<T, Acc, 3, true><<<nb, 256, (size_t)smem, st>>>(s);
    else stencil_kernel<T, Acc, 4, true><<<nb, 256, (size_t)smem, st>>>(s);
  } else {
    if (CO == 1) stencil_kernel<T, Acc, 1, false><<<nb, 256, (size_t)smem, st>>>(s);
    else if (CO == 2) stencil_kernel<T, Acc, 2, false><<<nb, 256, (size_t)smem, st>>>(s);
    else if (CO == 3) stencil_kernel<T, Acc, 3, false><<<nb, 256, (size_t)smem, st>>>(s);
    else stencil_kernel<T, Acc, 4, false><<<nb, 256, (size_t)smem, st>>>(s);
  }
  return launch_error(dgrad ? "depthwise dgrad" : "depthwise fwd");
}

}  // namespace

std::string stencil(const ConvProblem& p, DType t, bool dgrad, const void* src, const void* w, const void* bias,
                    void* out, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  switch (t) {
    case DType::kF32: return stencil_impl<float>(p, t, dgrad, src, w, bias, out, st);
    case DType::kF64: return stencil_impl<double>(p, t, dgrad, src, w, bias, out, st);
    case DType::kBF16: return stencil_impl<__nv_bfloat16>(p, t, dgrad, src, w, bias, out, st);
    case DType::kF16: return stencil_impl<__half>(p, t, dgrad, src, w, bias, out, st);
  }
  return "jaxconv3d cuda: unknown dtype";
}

}  // namespace sm80
}  // namespace jaxconv3d
