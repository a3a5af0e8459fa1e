// plan(): the rule table that picks a kernel family (see dispatch.h). Rules are tried in order; the first whose
// condition holds *and* whose family accepts the problem wins. The last rule always matches.
#include "dispatch.h"

#include <array>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "hopper/hopper_conv.h"
#include "sm80/plan.h"
#include "stencil/stencil.h"

namespace jaxconv3d {
namespace {

struct Query {
  Op op;
  const ConvProblem& p;
  DType t;
  MathMode m;
  int cc;
};

// ---- the families: whether they accept a problem, and the rest of their answer

struct Family {
  const char* name;
  bool (*accepts)(const Query&);
  void (*fill)(const Query&, Plan*);  // tile, layout, workspace, variant
  bool any_layout;                    // takes either layout (the cpu)
  Layout native;                      // otherwise, the one it reads and writes
};

bool cpu_accepts(const Query& q) { return q.cc == 0; }
void cpu_fill(const Query& q, Plan* pl) {
  pl->tile = "direct";
  pl->layout = q.p.layout;  // channels-last goes through host temporaries
}

bool sm80_accepts(const Query& q) { return q.cc > 0; }
void sm80_fill(const Query& q, Plan* pl) {
  const sm80::Choice c = sm80::choose(q.op, q.p, q.t, q.m);
  pl->tile = sm80::kernel_name(c.kernel);
  pl->layout = Layout::kNCDHW;
  pl->workspace_bytes = c.workspace_bytes;
  pl->variant = static_cast<int>(c.kernel);
}

bool hopper_accepts(const Query& q) {
  if (q.cc != 90) return false;  // sm_90a code runs on compute capability 9.0 only
  switch (q.op) {
    case Op::kFwd: return hopper::accepts_fwd(q.p, q.t, q.m);
    case Op::kDgrad: return hopper::accepts_dgrad(q.p, q.t, q.m);
    case Op::kWgrad: return hopper::accepts_wgrad(q.p, q.t, q.m);
  }
  return false;
}
void hopper_fill(const Query& q, Plan* pl) {
  pl->layout = Layout::kNDHWC;
  switch (q.op) {
    case Op::kFwd:
      pl->tile = hopper::tile_fwd(q.p, q.t, q.m);
      pl->workspace_bytes = hopper::fwd_workspace_bytes(q.p, q.t, q.m);
      break;
    case Op::kDgrad:
      pl->tile = hopper::tile_dgrad(q.p, q.t, q.m);
      pl->workspace_bytes = hopper::dgrad_workspace_bytes(q.p, q.t, q.m);
      break;
    case Op::kWgrad:
      pl->tile = hopper::tile_wgrad(q.p, q.t, q.m);
      pl->workspace_bytes = hopper::wgrad_workspace_bytes(q.p, q.t, q.m);
      break;
  }
}

// The Hopper family's first-layer kernels (conv_smallc*.cuh): either layout.
bool hopper_smallc_accepts(const Query& q) {
  if (q.cc != 90) return false;
  switch (q.op) {
    case Op::kFwd: return hopper::accepts_fwd_smallc(q.p, q.t, q.m);
    case Op::kDgrad: return hopper::accepts_dgrad_smallc(q.p, q.t, q.m);
    case Op::kWgrad: return hopper::accepts_wgrad_smallc(q.p, q.t, q.m);
  }
  return false;
}
void hopper_smallc_fill(const Query& q, Plan* pl) {
  pl->layout = q.p.layout;
  switch (q.op) {
    case Op::kFwd: pl->tile = hopper::tile_fwd_smallc(q.p, q.t, q.m); break;
    case Op::kDgrad: pl->tile = hopper::tile_dgrad_smallc(q.p, q.t, q.m); break;
    case Op::kWgrad:
      pl->tile = hopper::tile_wgrad_smallc(q.p, q.t, q.m);
      pl->workspace_bytes = hopper::smallc_wgrad_workspace_bytes(q.p, q.t, q.m);
      break;
  }
}

// The channels-last depthwise stencils (stencil/): any GPU; NDHWC problems only (accepts() asks the layout, so a
// caller holding NCDHW tensors never gets this family).
bool stencil_accepts(const Query& q) { return q.cc > 0 && stencil::accepts(q.op, q.p, q.t); }
void stencil_fill(const Query& q, Plan* pl) {
  pl->tile = stencil::tile(q.op, q.p, q.t, q.cc);
  pl->variant = stencil::band_takes(q.op, q.p, q.t, q.cc) ? 1 : 0;  // 1: the tensor-core forward / grad-input
  pl->layout = Layout::kNDHWC;
  pl->workspace_bytes = stencil::workspace_bytes(q.op, q.p, q.t);
}

const Family kCpu{"cpu", cpu_accepts, cpu_fill, true, Layout::kNCDHW};
const Family kSm80{"sm80", sm80_accepts, sm80_fill, false, Layout::kNCDHW};
const Family kHopper{"hopper", hopper_accepts, hopper_fill, false, Layout::kNDHWC};
const Family kHopperSmallC{"hopper_smallc", hopper_smallc_accepts, hopper_smallc_fill, true, Layout::kNCDHW};
const Family kStencil{"stencil", stencil_accepts, stencil_fill, false, Layout::kNDHWC};

// ---- the rules

bool forced(const char* family) {
  const char* env = std::getenv("JAXCONV3D_FAMILY");
  return env != nullptr && std::strcmp(env, family) == 0;
}

struct Rule {
  const char* why;
  bool (*when)(const Query&);
  const Family* family;
};

const Rule kRules[] = {
    {"no GPU: host kernels", [](const Query& q) { return q.cc == 0; }, &kCpu},
    {"float64: only sm80 has it", [](const Query& q) { return q.t == DType::kF64; }, &kSm80},
    {"JAXCONV3D_FAMILY=sm80", [](const Query&) { return forced("sm80"); }, &kSm80},
    {"JAXCONV3D_FAMILY=hopper", [](const Query&) { return forced("hopper"); }, &kHopper},
    {"JAXCONV3D_FAMILY=hopper_smallc", [](const Query&) { return forced("hopper_smallc"); }, &kHopperSmallC},
    {"JAXCONV3D_FAMILY=stencil", [](const Query&) { return forced("stencil"); }, &kStencil},
    {"a 3x3x3 stride-1 depthwise layer (one channel per group in and out) held channels-last: stencil reads and "
     "writes it as it lies, with no layout transposes",
     [](const Query& q) { return q.p.layout == Layout::kNDHWC; }, &kStencil},
    {"a first layer (under 16 input channels, at least 16 output channels) whose (channel, tap) columns fit in "
     "registers: hopper_smallc gathers its forward's and grad-weight's im2col straight into wgmma's A registers, "
     "and its grad-input (stride 1, at most 64 output channels) multiplies dy by the filter and sums the taps, "
     "in either layout",
     [](const Query& q) { return q.cc == 90 && q.p.in_per_group() < 16 && q.p.out_per_group() >= 16; },
     &kHopperSmallC},
    {"a first layer (under 16 bytes of input channels per pixel) in bf16, f16 or tf32, or its float32-accurate "
     "forward or grad-input (3xTF32; a forward whose (channel, tap) columns fit registers took hopper_smallc above): "
     "hopper folds the W (and H) filter taps into the channels",
     [](const Query& q) {
       const bool tensor_core = q.t == DType::kBF16 || q.t == DType::kF16 || q.m == MathMode::kTF32;
       const bool accurate =
           q.t == DType::kF32 && q.m == MathMode::kAccurate && (q.op == Op::kDgrad || q.op == Op::kFwd);
       return q.cc == 90 && (tensor_core || accurate) && q.p.in_per_group() * int64_t(dtype_size(q.t)) < 16 &&
              q.p.out_per_group() >= 16;
     },
     &kHopper},
    {"fewer than 16 channels per group in or out: a 64-wide tensor-core tile would be mostly padding",
     [](const Query& q) { return q.p.in_per_group() < 16 || q.p.out_per_group() < 16; }, &kSm80},
    {"compute capability 9.0 and hopper accepts", [](const Query& q) { return q.cc == 90; }, &kHopper},
    {"fallback", [](const Query&) { return true; }, &kSm80},
};

Plan evaluate(const Query& q, bool fixed_layout) {
  for (const Rule& r : kRules) {
    if (fixed_layout && !r.family->any_layout && r.family->native != q.p.layout) continue;
    if (!r.when(q) || !r.family->accepts(q)) continue;
    Plan pl;
    pl.family = r.family->name;
    pl.rule = r.why;
    r.family->fill(q, &pl);
    return pl;
  }
  return Plan{};  // unreachable: the fallback accepts every GPU problem and cc == 0 is the cpu's
}

// ---- the memo: plan() is pure in its arguments and JAXCONV3D_FAMILY, and a launch asks it on every call (the
// torch door twice), so answers are kept per key; a full memo is emptied, never evicted entry by entry.

constexpr size_t kMemoLimit = 4096;
constexpr int kKeyInts = 10 + 7 * 3;  // the scalars below, then seven 3-vectors

struct PlanKey {
  std::array<int64_t, kKeyInts> v;
  std::string family;  // JAXCONV3D_FAMILY's value ("" when unset)
  bool operator==(const PlanKey& o) const { return v == o.v && family == o.family; }
};

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the integers, then the family name
    for (int64_t x : k.v) h = (h ^ static_cast<uint64_t>(x)) * 1099511628211ull;
    return static_cast<size_t>(h ^ std::hash<std::string>()(k.family));
  }
};

PlanKey key_of(Op op, const ConvProblem& p, DType t, MathMode m, int cc, bool fixed_layout) {
  const char* env = std::getenv("JAXCONV3D_FAMILY");
  PlanKey k{{static_cast<int64_t>(op), static_cast<int64_t>(t), static_cast<int64_t>(m), cc, fixed_layout,
             static_cast<int64_t>(p.layout), p.batch, p.in_channels, p.out_channels, p.groups},
            env ? env : ""};
  int i = 10;
  for (const int64_t* a : {p.in, p.kernel, p.out, p.stride, p.pad_lo, p.pad_hi, p.dilation})
    for (int j = 0; j < 3; ++j) k.v[i++] = a[j];
  return k;
}

}  // namespace

Plan plan_grads(const ConvProblem& p, DType t, MathMode m, int cc, bool fixed_layout) {
  const Plan dgrad = plan(Op::kDgrad, p, t, m, cc, fixed_layout), wgrad = plan(Op::kWgrad, p, t, m, cc, fixed_layout);
  Plan pl;
  using sm80::Kernel;
  const auto runs = [](const Plan& q, Kernel k) { return q.family == "sm80" && q.variant == static_cast<int>(k); };
  const bool mma = runs(dgrad, Kernel::kStencil3Mma) && runs(wgrad, Kernel::kWgradDw3Mma);
  const bool stream = runs(dgrad, Kernel::kStencil3Stream) && runs(wgrad, Kernel::kWgradDw3Stream);
  if (!(mma || stream) || !sm80::fused_grads(p, t)) {
    pl.rule = "grad-input and grad-weight run as two operations: the fused backward takes an NCDHW depthwise 3x3x3 "
              "layer whose x and dy have the same extents (16-bit, or float32 with a channel multiplier of 1)";
    pl.layout = p.layout;
    return pl;
  }
  const Kernel k = mma ? Kernel::kDw3BwdMma : Kernel::kDw3BwdStream;
  pl.family = "sm80";
  pl.tile = sm80::kernel_name(k);
  pl.rule = mma ? "a 16-bit NCDHW depthwise 3x3x3 layer whose x and dy have the same extents: grad-input "
                  "(stencil_3x3x3_mma) and grad-weight (wgrad_depthwise_3x3x3_mma) in one pass over dy, bitwise theirs"
                : "a float32 NCDHW depthwise 3x3x3 layer whose x and dy have the same extents: grad-input "
                  "(stencil_3x3x3_stream) and grad-weight (wgrad_depthwise_3x3x3_stream) in one pass over dy, bitwise "
                  "theirs";
  pl.layout = Layout::kNCDHW;
  pl.workspace_bytes = wgrad.workspace_bytes;
  pl.variant = static_cast<int>(k);
  return pl;
}

Plan plan(Op op, const ConvProblem& p, DType t, MathMode m, int cc, bool fixed_layout) {
  static std::mutex mu;
  static std::unordered_map<PlanKey, Plan, PlanKeyHash> memo;
  PlanKey key = key_of(op, p, t, m, cc, fixed_layout);
  {
    std::lock_guard<std::mutex> lock(mu);
    const auto it = memo.find(key);
    if (it != memo.end()) return it->second;
  }
  Plan pl = evaluate(Query{op, p, t, m, cc}, fixed_layout);
  std::lock_guard<std::mutex> lock(mu);
  if (memo.size() >= kMemoLimit) memo.clear();
  memo.emplace(std::move(key), pl);
  return pl;
}

}  // namespace jaxconv3d
