// The folded copies of a first layer (fold.cuh): gathers along the folded filter taps, 16 bytes per thread where
// the folded side is written.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "hopper/fold.cuh"
#include "launch_common.cuh"
#include "hopper/pipeline.cuh"

namespace jaxconv3d {
namespace hopper {
namespace {

// One thread per 16 bytes of xf: xf[n][d][h'][w'][(i * kw + j) * C + c] = x[n][d][h][w][c], w = w' * sw - pad_w +
// j * dw (h likewise when H is folded, else h = h'), zeros outside x and from `raw` on. T: the element's bits.
template <typename T>
__global__ void fold_source_kernel(const T* __restrict__ x, uint4* __restrict__ xf, ConvProblem p, int64_t cf,
                                   int64_t raw, bool fold_h, int64_t chunks) {
  constexpr int kPer = 16 / int(sizeof(T));
  const int C = int(p.in_channels), kw = int(p.kernel[2]), per_pixel = int(cf / kPer);
  const int64_t hf = fold_h ? p.out[1] : p.in[1], wf = p.out[2];  // xf's H and W extents
  for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < chunks; q += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pix = q / per_pixel;
    const int e0 = int(q - pix * per_pixel) * kPer;
    const int64_t wq = pix % wf, t = pix / wf, hq = t % hf, nd = t / hf;  // nd = n * D + d
    // (i, j, c) of element e0, then advanced element by element (no division in the loop)
    int c = e0 % C, j = (e0 / C) % kw, i = e0 / (C * kw);
    union {
      T e[kPer];
      uint4 v;
    } out;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      T v = T(0);
      if (e0 + k < raw) {
        const int64_t w = wq * p.stride[2] - p.pad_lo[2] + int64_t(j) * p.dilation[2];
        const int64_t h = fold_h ? hq * p.stride[1] - p.pad_lo[1] + int64_t(i) * p.dilation[1] : hq;
        if (w >= 0 && w < p.in[2] && h >= 0 && h < p.in[1]) v = x[((nd * p.in[1] + h) * p.in[2] + w) * C + c];
      }
      out.e[k] = v;
      if (++c == C) {
        c = 0;
        if (++j == kw) { j = 0; ++i; }
      }
    }
    xf[q] = out.v;
  }
}

// One thread per element of dx: the sum over the folded taps (i, j) whose copy of it lies inside xf, in tap order.
template <typename T>
__global__ void unfold_source_kernel(const T* __restrict__ dxf, T* __restrict__ dx, ConvProblem p, int64_t cf,
                                     bool fold_h, int64_t total) {
  const int C = int(p.in_channels), kh = fold_h ? int(p.kernel[1]) : 1, kw = int(p.kernel[2]);
  const int64_t hf = fold_h ? p.out[1] : p.in[1], wf = p.out[2];
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int c = int(e % C);
    const int64_t pix = e / C, w = pix % p.in[2], t = pix / p.in[2], h = t % p.in[1], nd = t / p.in[1];
    float s = 0.f;
    for (int i = 0; i < kh; ++i) {
      int64_t hq = h;
      if (fold_h) {  // h = hq * sh - pad_h + i * dh
        const int64_t num = h + p.pad_lo[1] - int64_t(i) * p.dilation[1];
        if (num < 0 || num % p.stride[1] != 0) continue;
        hq = num / p.stride[1];
        if (hq >= hf) continue;
      }
      for (int j = 0; j < kw; ++j) {
        const int64_t num = w + p.pad_lo[2] - int64_t(j) * p.dilation[2];
        if (num < 0 || num % p.stride[2] != 0) continue;
        const int64_t wq = num / p.stride[2];
        if (wq >= wf) continue;
        s += to_float(dxf[((nd * hf + hq) * wf + wq) * cf + (i * kw + j) * C + c]);
      }
    }
    dx[e] = from_float<T>(s);
  }
}

// dst[r][0..Cd) = src[r][0..Cs) followed by zeros (Cd > Cs: padding; Cd < Cs: the first Cd of each row).
template <typename T>
__global__ void copy_rows_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t rows, int64_t Cs,
                                 int64_t Cd) {
  const int64_t total = rows * Cd;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = e / Cd, c = e - r * Cd;
    dst[e] = c < Cs ? src[r * Cs + c] : T(0);
  }
}

unsigned blocks_for(int64_t work) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>((work + 255) / 256, int64_t(sm_count()) * 16)));
}

std::string launched(const char* what) {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : std::string("hopper: ") + what + " failed: " + cudaGetErrorString(e);
}

std::string copy_rows(DType t, const void* src, void* dst, int64_t rows, int64_t cs, int64_t cd, cudaStream_t s) {
  if (rows * cd == 0) return "";
  if (dtype_size(t) == 2)
    copy_rows_kernel<uint16_t><<<blocks_for(rows * cd), 256, 0, s>>>(static_cast<const uint16_t*>(src),
                                                                      static_cast<uint16_t*>(dst), rows, cs, cd);
  else
    copy_rows_kernel<uint32_t><<<blocks_for(rows * cd), 256, 0, s>>>(static_cast<const uint32_t*>(src),
                                                                      static_cast<uint32_t*>(dst), rows, cs, cd);
  return launched("copying a folded filter");
}

}  // namespace

std::string fold_source(const ConvProblem& p, DType t, const Fold& f, const void* x, void* xf, cudaStream_t stream) {
  const ConvProblem& q = f.folded;
  const int64_t per = 16 / dtype_size(t), chunks = q.batch * q.in_spatial() * (q.in_channels / per);
  if (chunks == 0) return "";
  if (dtype_size(t) == 2)
    fold_source_kernel<uint16_t><<<blocks_for(chunks), 256, 0, stream>>>(
        static_cast<const uint16_t*>(x), static_cast<uint4*>(xf), p, q.in_channels, f.raw, f.h, chunks);
  else
    fold_source_kernel<uint32_t><<<blocks_for(chunks), 256, 0, stream>>>(
        static_cast<const uint32_t*>(x), static_cast<uint4*>(xf), p, q.in_channels, f.raw, f.h, chunks);
  return launched("folding a first layer's source");
}

std::string fold_filter(DType t, const Fold& f, const void* w, void* wf, cudaStream_t stream) {
  const ConvProblem& q = f.folded;
  return copy_rows(t, w, wf, q.out_channels * q.taps(), f.raw, q.in_channels, stream);
}

std::string unfold_filter(DType t, const Fold& f, const void* dwf, void* dw, cudaStream_t stream) {
  const ConvProblem& q = f.folded;
  return copy_rows(t, dwf, dw, q.out_channels * q.taps(), q.in_channels, f.raw, stream);
}

std::string unfold_source(const ConvProblem& p, DType t, const Fold& f, const void* dxf, void* dx,
                          cudaStream_t stream) {
  const int64_t total = p.x_elements();
  if (total == 0) return "";
  const int64_t cf = f.folded.in_channels;
  switch (t) {
    case DType::kBF16:
      unfold_source_kernel<__nv_bfloat16><<<blocks_for(total), 256, 0, stream>>>(
          static_cast<const __nv_bfloat16*>(dxf), static_cast<__nv_bfloat16*>(dx), p, cf, f.h, total);
      break;
    case DType::kF16:
      unfold_source_kernel<__half><<<blocks_for(total), 256, 0, stream>>>(static_cast<const __half*>(dxf),
                                                                          static_cast<__half*>(dx), p, cf, f.h, total);
      break;
    case DType::kF32:
      unfold_source_kernel<float><<<blocks_for(total), 256, 0, stream>>>(static_cast<const float*>(dxf),
                                                                         static_cast<float*>(dx), p, cf, f.h, total);
      break;
    default: return "hopper: unsupported dtype";
  }
  return launched("unfolding a first layer's grad-input");
}

}  // namespace hopper
}  // namespace jaxconv3d
