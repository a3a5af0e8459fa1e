// The DLPack ABI (data-apis.org/array-api, DLPack 0.8 and 1.x): the few structs the torch door reads.
// Declared here rather than pulled from a framework's headers so the extension builds without torch installed;
// the layout is a frozen ABI.
#pragma once

#include <cstdint>

namespace jaxconv3d::dlpack {

enum DeviceType : int32_t { kCPU = 1, kCUDA = 2, kCUDAHost = 3, kCUDAManaged = 13 };
enum TypeCode : uint8_t { kInt = 0, kUInt = 1, kFloat = 2, kBfloat = 4 };

struct Device {
  int32_t device_type;
  int32_t device_id;
};

struct DataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};

struct Tensor {
  void* data;
  Device device;
  int32_t ndim;
  DataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; null means compact row-major
  uint64_t byte_offset;
};

// Capsule name "dltensor" (pre-1.0 producers, torch.utils.dlpack.to_dlpack).
struct ManagedTensor {
  Tensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(ManagedTensor*);
};

// Capsule name "dltensor_versioned" (DLPack 1.x, __dlpack__(max_version=(1, 0))).
struct PackVersion {
  uint32_t major;
  uint32_t minor;
};
struct ManagedTensorVersioned {
  PackVersion version;
  void* manager_ctx;
  void (*deleter)(ManagedTensorVersioned*);
  uint64_t flags;
  Tensor dl_tensor;
};
constexpr uint64_t kFlagReadOnly = 1;

}  // namespace jaxconv3d::dlpack
