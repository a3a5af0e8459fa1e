// Probe behind a lever that did not pay (docs/perf.md): a 5-D TMA box load whose innermost start coordinate
// is not 16-byte aligned faults (illegal instruction) with 128-byte swizzle. Usage: probe b0 b1 b2 b3 b4 es c3 c0
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include "hopper/tma.cuh"
using namespace jaxconv3d::hopper;
__global__ void k(const __grid_constant__ CUtensorMap m, int bytes, int c3, int c0) {
  extern __shared__ __align__(1024) unsigned char sm[];
  __shared__ alignas(8) uint64_t bar;
  uint32_t s = (uint32_t(__cvta_generic_to_shared(sm)) + 1023) & ~1023u, b = __cvta_generic_to_shared(&bar);
  if (threadIdx.x == 0) { mbar_init(b, 1); mbar_fence_init(); mbar_expect_tx(b, bytes); tma_load_5d(s, &m, b, c0, 0, 0, c3, 0); mbar_wait(b, 0); }
}
int main(int argc, char** argv) {
  uint32_t box[5]; for (int i = 0; i < 5; ++i) box[i] = atoi(argv[1 + i]);
  int es = atoi(argv[6]); int c3 = argc > 7 ? atoi(argv[7]) : 0; int c0 = argc > 8 ? atoi(argv[8]) : 0;
  uint64_t d[5] = {64, 64, 64, 64, 2}, st[4]; st[0] = d[0] * es; for (int i = 1; i < 4; ++i) st[i] = st[i - 1] * d[i];
  void* p; cudaMalloc(&p, st[3] * 2);
  uint32_t one[5] = {1, 1, 1, 1, 1};
  CUtensorMap m;
  std::string e = make_tensor_map(&m, es == 4 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT32 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 5, p, d, st, box, one);
  int bytes = es; for (int i = 0; i < 5; ++i) bytes *= box[i];
  cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes + 1024);
  k<<<1, 32, bytes + 1024>>>(m, bytes, c3, c0);
  cudaError_t r = cudaDeviceSynchronize();
  printf("c0 %d box %u %u %u %u %u es %d c3 %d: encode %s run %s\n", c0, box[0], box[1], box[2], box[3], box[4], es, c3, e.c_str(), cudaGetErrorString(r));
}
