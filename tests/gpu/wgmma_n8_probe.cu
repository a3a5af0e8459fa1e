// Probe for the next channels-last depthwise lever (docs/perf.md v23): how fast does an H100 issue narrow wgmma
// (m64nNk16, bf16, both operands from shared memory, N = 8 .. 64) against mma.sync m16n8k16? The channels-last
// tensor-core stencil measured in v23 puts each 8-channel group's taps on a diagonal B, so only N = 8 is useful
// to it; its mma.sync form lost to FFMA on issue latency. Prints, per kind, cycles an instruction per SM and
// multiply-adds a cycle per SM. Usage: wgmma_n8_probe [iterations]   (sm_90a; nothing checked, timing only)
// Answer (H100, perf.md v24): m64n8k16 385-419 multiply-adds a cycle a SM against mma.sync's 1196-1248: a third.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "hopper/pipeline.cuh"

using namespace jaxconv3d::hopper;

namespace {

constexpr int kSmem = 8192;    // A (64 x 16) and B (N x 16) tiles, zeros: the values do not matter here
constexpr int kPerGroup = 32;  // wgmma a commit group

template <int N>
__device__ __forceinline__ void wgmma_nn(float (&d)[N / 2], uint64_t da, uint64_t db);

template <>
__device__ __forceinline__ void wgmma_nn<8>(float (&d)[4], uint64_t da, uint64_t db) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0,%1,%2,%3}, %4, %5, p, 1, 1, 0, 0;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "l"(da), "l"(db), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_nn<16>(float (&d)[8], uint64_t da, uint64_t db) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
               "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7}, %8, %9, p, 1, 1, 0, "
               "0;\n}\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
               : "l"(da), "l"(db), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_nn<32>(float (&d)[16], uint64_t da, uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, "
      "%16, %17, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(da), "l"(db), "r"(1));
}
template <>
__device__ __forceinline__ void wgmma_nn<64>(float (&d)[32], uint64_t da, uint64_t db) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  wgmma_Bf16_n64<0, 0>(d, da, db, 1);
#endif
}

// One or more warpgroups a block, each issuing `iters` x kPerGroup wgmma into its own accumulators.
template <int N>
__global__ void wgmma_loop(int iters, float* sink) {
  __shared__ __align__(128) unsigned char sm[kSmem];
  for (int i = threadIdx.x; i < kSmem / 4; i += blockDim.x) reinterpret_cast<float*>(sm)[i] = 0.0f;
  __syncthreads();
  fence_proxy_async();
  const uint32_t a = uint32_t(__cvta_generic_to_shared(sm)), b = a + kSmem / 2;
  // no-swizzle K-major core matrices (8 rows x 16 bytes): LBO 128 bytes between the two K halves, SBO 256 between
  // 8-row groups
  const uint64_t da = smem_desc(a, 128, 256, 0), db = smem_desc(b, 128, 256, 0);
  float acc[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; ++i) acc[i] = 0.0f;
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  for (int it = 0; it < iters; ++it) {
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < kPerGroup; ++k) wgmma_nn<N>(acc, da, db);
    wgmma_commit();
    wgmma_wait<0>();
  }
#endif
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < N / 2; ++i) s += acc[i];
  if (s == 12345.0f) sink[0] = s;
}

// mma.sync m16n8k16 (bf16, float accumulators), four independent accumulators a warp.
__global__ void mma_loop(int iters, float* sink) {
  float d[4][4] = {};
  const unsigned a0 = threadIdx.x, b0 = threadIdx.x * 3u;
  for (int it = 0; it < iters; ++it) {
#pragma unroll
    for (int k = 0; k < kPerGroup; ++k) {
      float(&c)[4] = d[k % 4];
      asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                   "{%0,%1,%2,%3};\n"
                   : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                   : "r"(a0), "r"(a0), "r"(a0), "r"(a0), "r"(b0), "r"(b0));
    }
  }
  float s = 0.0f;
  for (auto& r : d)
    for (float v : r) s += v;
  if (s == 12345.0f) sink[0] = s;
}

template <typename K>
void time_kernel(const char* name, K kernel, int blocks, int threads, int iters, double instr_per_block, double macs,
                 int sms, double clock_hz, float* sink) {
  kernel<<<blocks, threads>>>(1, sink);  // warm up
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaEventRecord(e0);
  kernel<<<blocks, threads>>>(iters, sink);
  cudaEventRecord(e1);
  const cudaError_t err = cudaEventSynchronize(e1);
  float ms = 0.0f;
  cudaEventElapsedTime(&ms, e0, e1);
  const double per_sm = instr_per_block * blocks / sms, cycles = ms * 1e-3 * clock_hz;
  std::printf("%-28s %s  %8.3f ms  %7.2f cycles an instruction a SM  %7.0f MACs a cycle a SM\n", name,
              cudaGetErrorString(err), ms, cycles / per_sm, per_sm * macs / cycles);
}

}  // namespace

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 4000;
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  int clock_khz = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
  const int sms = prop.multiProcessorCount;
  const double hz = clock_khz * 1e3;
  std::printf("%s, %d SMs, %.0f MHz (the cycles below assume this clock)\n", prop.name, sms, hz / 1e6);
  float* sink = nullptr;
  cudaMalloc(&sink, 4);
  const double n = double(iters) * kPerGroup;
  for (int wg = 1; wg <= 2; ++wg) {
    const int threads = 128 * wg;
    char name[64];
    std::snprintf(name, sizeof name, "wgmma m64n8k16 x%d wg", wg);
    time_kernel(name, wgmma_loop<8>, sms, threads, iters, n * wg, 64.0 * 8 * 16, sms, hz, sink);
    std::snprintf(name, sizeof name, "wgmma m64n16k16 x%d wg", wg);
    time_kernel(name, wgmma_loop<16>, sms, threads, iters, n * wg, 64.0 * 16 * 16, sms, hz, sink);
    std::snprintf(name, sizeof name, "wgmma m64n32k16 x%d wg", wg);
    time_kernel(name, wgmma_loop<32>, sms, threads, iters, n * wg, 64.0 * 32 * 16, sms, hz, sink);
    std::snprintf(name, sizeof name, "wgmma m64n64k16 x%d wg", wg);
    time_kernel(name, wgmma_loop<64>, sms, threads, iters, n * wg, 64.0 * 64 * 16, sms, hz, sink);
  }
  for (int warps = 4; warps <= 16; warps *= 2) {
    char name[64];
    std::snprintf(name, sizeof name, "mma.sync m16n8k16 x%d warps", warps);
    time_kernel(name, mma_loop, sms, 32 * warps, iters, n * warps, 16.0 * 8 * 16, sms, hz, sink);
  }
  cudaFree(sink);
  return 0;
}
