// Host side of the TMA plumbing: tensor maps, encoded through the driver's entry point (no libcuda link).
#include "hopper/tma.cuh"

#include <cudaTypedefs.h>

namespace jaxconv3d {
namespace hopper {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      p = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

}  // namespace

CUtensorMapDataType tma_type(DType t) {
  return t == DType::kBF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                           : t == DType::kF16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
}

std::string make_tensor_map(CUtensorMap* map, CUtensorMapDataType type, int rank, const void* base,
                            const uint64_t* dims, const uint64_t* strides_bytes, const uint32_t* box,
                            const uint32_t* step, int swizzle_bytes) {
  auto fn = encoder();
  if (swizzle_bytes != 128 && swizzle_bytes != 64 && swizzle_bytes != 32)
    return "hopper: tensor maps swizzle 128, 64 or 32 bytes";
  if (!fn) return "hopper: the driver offers no cuTensorMapEncodeTiled";
  cuuint64_t d[5], s[4];
  cuuint32_t b[5], e[5];
  for (int i = 0; i < rank; ++i) {
    d[i] = dims[i];
    b[i] = box[i];
    e[i] = step[i];
    if (i + 1 < rank) s[i] = strides_bytes[i];
  }
  const CUresult r = fn(map, type, cuuint32_t(rank), const_cast<void*>(base), d, s, b, e, CU_TENSOR_MAP_INTERLEAVE_NONE,
                        swizzle_bytes == 32   ? CU_TENSOR_MAP_SWIZZLE_32B
                        : swizzle_bytes == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                              : CU_TENSOR_MAP_SWIZZLE_128B,
                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? "" : "hopper: tensor map rejected (error " + std::to_string(int(r)) + ")";
}

}  // namespace hopper
}  // namespace jaxconv3d
