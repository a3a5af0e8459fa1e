// The torch door: pybind11 functions taking DLPack capsules (see dlpack_adapter.cc).
#pragma once

#include <pybind11/pybind11.h>

namespace jaxconv3d {
void bind_torch_adapter(pybind11::module_& m);
}
