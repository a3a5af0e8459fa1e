// TEMPORARY stand-in for the Hopper family until its kernels land in cuda/hopper/*.cu: it accepts nothing, so the
// dispatcher always falls back to sm80, and its run functions refuse. Delete this file when the real
// implementation of hopper_conv.h is added (hopper_absent.inc stays: the CPU-only build uses it).
#include "hopper/hopper_conv.h"

namespace {
const char* kHopperAbsent = "the hopper family is not implemented yet (hopper_stub.cu)";
}

#include "hopper/hopper_absent.inc"
