// XLA FFI handler symbols (defined in ffi_handlers.cc), exported to Python as capsules by module.cc.
#pragma once

#include "xla/ffi/api/api.h"

XLA_FFI_DECLARE_HANDLER_SYMBOL(jaxconv3d_fwd_cpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jaxconv3d_dgrad_cpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jaxconv3d_wgrad_cpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jaxconv3d_bgrad_cpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jaxconv3d_grads_cpu);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jaxconv3d_stale);  // any platform: refuses calls of stale exports

#ifdef JAXCONV3D_WITH_CUDA
XLA_FFI_DECLARE_HANDLER_SYMBOL(jaxconv3d_fwd_cuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jaxconv3d_dgrad_cuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jaxconv3d_wgrad_cuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jaxconv3d_bgrad_cuda);
XLA_FFI_DECLARE_HANDLER_SYMBOL(jaxconv3d_grads_cuda);
#endif
