// Standalone check (and per-kernel timing) of the Hopper family against a float64 CPU reference, on fresh random
// data with NaN-poisoned outputs, every operation run twice and compared bitwise. Needs an sm_90 GPU.
//   build: nvcc -std=c++17 -O2 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -Icuda \
//            tests/gpu/hopper_check.cu cuda/hopper/*.cu cuda/hopper/hopper_rules.cc -o hopper_check
//   run:   ./hopper_check            (correctness: fixed + random configurations, every dtype)
//          ./hopper_check --bench [NAME]  (CUDA-event medians of each kernel on the suite's dense shapes)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "hopper/hopper_conv.h"
#include "hopper/hopper_rules.h"

using namespace jaxconv3d;

#define CK(x)                                                                                      \
  do {                                                                                             \
    cudaError_t e_ = (x);                                                                          \
    if (e_ != cudaSuccess) {                                                                       \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__);         \
      std::exit(2);                                                                                \
    }                                                                                              \
  } while (0)

struct Cfg {
  int N, C, O, D, H, W, kd, kh, kw, s, pl, ph, dil;
};

ConvProblem make(const Cfg& c) {
  ConvProblem p;
  p.batch = c.N; p.in_channels = c.C; p.out_channels = c.O; p.groups = 1;
  int64_t in[3] = {c.D, c.H, c.W}, k[3] = {c.kd, c.kh, c.kw};
  for (int a = 0; a < 3; ++a) {
    p.in[a] = in[a]; p.kernel[a] = k[a]; p.stride[a] = c.s; p.pad_lo[a] = c.pl; p.pad_hi[a] = c.ph;
    p.dilation[a] = c.dil;
    p.out[a] = p.implied_out(a);
  }
  return p;
}

// Storage conversion: values are rounded to the dtype once; the reference uses the rounded values.
struct Buf {
  DType t;
  std::vector<float> f;  // rounded values
  std::vector<uint8_t> raw;
};
uint16_t to_bits(DType t, float v) {
  if (t == DType::kBF16) { __nv_bfloat16 b = __float2bfloat16_rn(v); uint16_t u; std::memcpy(&u, &b, 2); return u; }
  __half h = __float2half_rn(v); uint16_t u; std::memcpy(&u, &h, 2); return u;
}
float from_bits(DType t, uint16_t u) {
  if (t == DType::kBF16) { __nv_bfloat16 b; std::memcpy(&b, &u, 2); return __bfloat162float(b); }
  __half h; std::memcpy(&h, &u, 2); return __half2float(h);
}
Buf random_buf(DType t, size_t n, std::mt19937& g) {
  std::normal_distribution<float> nd(0.f, 1.f);
  Buf b{t, std::vector<float>(n), std::vector<uint8_t>(n * dtype_size(t))};
  for (size_t i = 0; i < n; ++i) {
    float v = nd(g);
    if (t == DType::kF32) { b.f[i] = v; std::memcpy(&b.raw[4 * i], &v, 4); }
    else { uint16_t u = to_bits(t, v); b.f[i] = from_bits(t, u); std::memcpy(&b.raw[2 * i], &u, 2); }
  }
  return b;
}
std::vector<double> read_back(DType t, const std::vector<uint8_t>& raw, size_t n, bool* nan) {
  std::vector<double> out(n);
  *nan = false;
  for (size_t i = 0; i < n; ++i) {
    float v;
    if (t == DType::kF32) std::memcpy(&v, &raw[4 * i], 4);
    else { uint16_t u; std::memcpy(&u, &raw[2 * i], 2); v = from_bits(t, u); }
    if (!std::isfinite(v)) *nan = true;
    out[i] = v;
  }
  return out;
}

// Float64 references on NDHWC / ODHWI data. for_each_tap calls f(x_pixel, y_pixel, tap) for every output position
// and every filter tap whose input pixel lies inside the input (pixel indices count whole channel rows).
template <typename F>
void for_each_tap(const ConvProblem& p, F&& f) {
  for (int64_t n = 0; n < p.batch; ++n)
    for (int64_t a = 0; a < p.out[0]; ++a) for (int64_t b = 0; b < p.out[1]; ++b) for (int64_t c = 0; c < p.out[2]; ++c) {
      const int64_t ypix = ((n * p.out[0] + a) * p.out[1] + b) * p.out[2] + c;
      for (int64_t i = 0; i < p.kernel[0]; ++i) for (int64_t j = 0; j < p.kernel[1]; ++j) for (int64_t k = 0; k < p.kernel[2]; ++k) {
        const int64_t z = a * p.stride[0] - p.pad_lo[0] + i * p.dilation[0];
        const int64_t yy = b * p.stride[1] - p.pad_lo[1] + j * p.dilation[1];
        const int64_t xx = c * p.stride[2] - p.pad_lo[2] + k * p.dilation[2];
        if (z < 0 || z >= p.in[0] || yy < 0 || yy >= p.in[1] || xx < 0 || xx >= p.in[2]) continue;
        f(((n * p.in[0] + z) * p.in[1] + yy) * p.in[2] + xx, ypix, (i * p.kernel[1] + j) * p.kernel[2] + k);
      }
    }
}
void ref_fwd(const ConvProblem& p, const std::vector<float>& x, const std::vector<float>& w, std::vector<double>& y) {
  const int64_t C = p.in_channels, O = p.out_channels;
  y.assign(size_t(p.batch * p.out_spatial() * O), 0.0);
  for_each_tap(p, [&](int64_t xp, int64_t yp, int64_t tap) {
    for (int64_t o = 0; o < O; ++o) {
      double s = 0;
      for (int64_t ci = 0; ci < C; ++ci) s += double(x[xp * C + ci]) * w[(o * p.taps() + tap) * C + ci];
      y[yp * O + o] += s;
    }
  });
}
void ref_dgrad(const ConvProblem& p, const std::vector<float>& dy, const std::vector<float>& w, std::vector<double>& dx) {
  const int64_t C = p.in_channels, O = p.out_channels;
  dx.assign(size_t(p.batch * p.in_spatial() * C), 0.0);
  for_each_tap(p, [&](int64_t xp, int64_t yp, int64_t tap) {
    for (int64_t o = 0; o < O; ++o)
      for (int64_t ci = 0; ci < C; ++ci) dx[xp * C + ci] += double(dy[yp * O + o]) * w[(o * p.taps() + tap) * C + ci];
  });
}
void ref_wgrad(const ConvProblem& p, const std::vector<float>& x, const std::vector<float>& dy, std::vector<double>& dw) {
  const int64_t C = p.in_channels, O = p.out_channels;
  dw.assign(size_t(O * p.taps() * C), 0.0);
  for_each_tap(p, [&](int64_t xp, int64_t yp, int64_t tap) {
    for (int64_t o = 0; o < O; ++o)
      for (int64_t ci = 0; ci < C; ++ci) dw[(o * p.taps() + tap) * C + ci] += double(dy[yp * O + o]) * x[xp * C + ci];
  });
}

struct Dev {
  void* p = nullptr;
  size_t n = 0;
  explicit Dev(size_t bytes) : n(bytes) { CK(cudaMalloc(&p, std::max<size_t>(bytes, 256))); }
  ~Dev() { cudaFree(p); }
  void up(const std::vector<uint8_t>& h) { CK(cudaMemcpy(p, h.data(), h.size(), cudaMemcpyHostToDevice)); }
  std::vector<uint8_t> down() const {
    std::vector<uint8_t> h(n);
    CK(cudaMemcpy(h.data(), p, n, cudaMemcpyDeviceToHost));
    return h;
  }
};

double rel_err(const std::vector<double>& a, const std::vector<double>& r) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) { num += (a[i] - r[i]) * (a[i] - r[i]); den += r[i] * r[i]; }
  return std::sqrt(num / std::max(den, 1e-300));
}

const char* dname(DType t, MathMode m) { return t == DType::kBF16 ? "bf16" : t == DType::kF16 ? "f16" : (m == MathMode::kTF32 ? "tf32" : "f32"); }

int passed = 0, failed = 0;
void report(const char* op, const Cfg& c, DType t, MathMode m, double err, double bound, bool nan, bool same) {
  const bool ok = !nan && err <= bound && same;
  (ok ? passed : failed)++;
  if (!ok || std::getenv("HOPPER_VERBOSE"))
    std::printf("%s %-12s %-4s N%d C%d O%d %dx%dx%d k%dx%dx%d s%d p%d/%d d%d: err %.2e (bound %.0e)%s%s\n",
                ok ? "ok  " : "FAIL", op, dname(t, m), c.N, c.C, c.O, c.D, c.H, c.W, c.kd, c.kh, c.kw, c.s, c.pl, c.ph,
                c.dil, err, bound, nan ? " NaN/unwritten" : "", same ? "" : " NOT-DETERMINISTIC");
}

void check_one(const Cfg& c, DType t, MathMode m, std::mt19937& g) {
  const ConvProblem p = make(c);
  if (!p.check().empty()) return;
  const double bound = t == DType::kBF16 ? 1.2e-2 : (t == DType::kF32 && m == MathMode::kAccurate) ? 1e-5 : 3e-3;
  const size_t es = dtype_size(t);
  const size_t nx = p.x_elements(), nw = p.w_elements(), ny = p.y_elements();
  Buf x = random_buf(t, nx, g), w = random_buf(t, nw, g), dy = random_buf(t, ny, g);
  Dev dx_(nx * es), dw_(nw * es), ddy(ny * es), dout(std::max(nx, std::max(nw, ny)) * es);
  dx_.up(x.raw); dw_.up(w.raw); ddy.up(dy.raw);
  std::vector<double> ref;
  auto run_twice = [&](auto&& launch, size_t n_out, std::vector<double>& got, bool* nan, bool* same) {
    std::vector<uint8_t> first;
    for (int rep = 0; rep < 2; ++rep) {
      CK(cudaMemset(dout.p, 0xFF, dout.n));  // NaN poison
      const std::string err = launch();
      if (!err.empty()) { std::printf("launch error: %s\n", err.c_str()); *nan = true; return; }
      CK(cudaDeviceSynchronize());
      std::vector<uint8_t> h = dout.down();
      h.resize(n_out * es);
      if (rep == 0) first = h; else *same = (h == first);
    }
    got = read_back(t, first, n_out, nan);
  };
  // One operation: float64 reference, then ours twice on poisoned output (bitwise determinism), then the verdict.
  auto check = [&](const char* op, bool accepted, size_t ws_bytes, auto&& reference, auto&& launch, size_t n_out,
                   double op_bound) {
    if (!accepted) return;
    Dev ws(ws_bytes);
    std::vector<double> got;
    bool nan = false, same = true;
    reference();
    run_twice([&] { return launch(ws.p, ws.n); }, n_out, got, &nan, &same);
    report(op, c, t, m, rel_err(got, ref), op_bound, nan, same);
  };
  check("fwd", hopper::accepts_fwd(p, t, m), hopper::fwd_workspace_bytes(p, t, m), [&] { ref_fwd(p, x.f, w.f, ref); },
        [&](void* ws, size_t n) { return hopper::fwd(p, t, m, dx_.p, dw_.p, nullptr, dout.p, ws, n, nullptr); }, ny,
        bound);
  check("dgrad", hopper::accepts_dgrad(p, t, m), hopper::dgrad_workspace_bytes(p, t, m),
        [&] { ref_dgrad(p, dy.f, w.f, ref); },
        [&](void* ws, size_t n) { return hopper::dgrad(p, t, m, ddy.p, dw_.p, dout.p, ws, n, nullptr); }, nx, bound);
  check("wgrad", hopper::accepts_wgrad(p, t, m), hopper::wgrad_workspace_bytes(p, t, m),
        [&] { ref_wgrad(p, x.f, dy.f, ref); },
        [&](void* ws, size_t n) { return hopper::wgrad(p, t, m, dx_.p, ddy.p, dout.p, ws, n, nullptr); }, nw,
        // TF32 grad-weight from bfloat16 parts is ~2^-17 accurate: a dropped x_lo or dy_lo term (~2^-9) must fail
        hopper::wgrad_bf16x3(p, t, m) ? 1e-4 : bound);
}

float median_ms(std::vector<float> v) { std::sort(v.begin(), v.end()); return v[v.size() / 2]; }

// HOPPER_BENCH_DTYPE (bf16 / tf32 / f32) and HOPPER_BENCH_OP (fwd / dgrad / wgrad) narrow the run, e.g. for ncu.
void bench(const char* only) {
  const char* dtype_only = std::getenv("HOPPER_BENCH_DTYPE");
  const char* op_env = std::getenv("HOPPER_BENCH_OP");
  const std::string op_only = op_env ? op_env : "";
  auto wanted = [&](const char* op) { return op_only.empty() || op_only == op; };
  struct Named { const char* name; Cfg c; };
  const Named cases[] = {
      {"unet_64", {2, 64, 64, 64, 64, 64, 3, 3, 3, 1, 1, 1, 1}},
      {"unet_256", {2, 256, 256, 16, 16, 16, 3, 3, 3, 1, 1, 1, 1}},
      {"video_c3d", {4, 64, 128, 16, 56, 56, 3, 3, 3, 1, 1, 1, 1}},
      {"down_s2", {4, 32, 64, 64, 64, 64, 3, 3, 3, 2, 1, 1, 1}},
      {"pointwise", {8, 128, 256, 16, 28, 28, 1, 1, 1, 1, 0, 0, 1}},
      {"kb54", {16, 3, 64, 64, 64, 64, 3, 3, 3, 1, 0, 0, 1}},
      {"c32_o64", {2, 32, 64, 64, 64, 64, 3, 3, 3, 1, 1, 1, 1}},  // tap pairs, resident filter (forward)
      {"c64_o32", {2, 64, 32, 64, 64, 64, 3, 3, 3, 1, 1, 1, 1}},  // tap pairs, resident filter (grad-input)
  };
  std::mt19937 g(7);
  for (auto& nc : cases)
    for (int v = 0; v < 3; ++v) {
      if (only && std::string(only) != nc.name) continue;
      const DType t = v == 0 ? DType::kBF16 : DType::kF32;
      const MathMode m = v == 2 ? MathMode::kAccurate : MathMode::kTF32;
      if (dtype_only && std::string(dtype_only) != dname(t, m)) continue;
      const ConvProblem p = make(nc.c);
      const size_t es = dtype_size(t);
      Dev x(p.x_elements() * es), w(p.w_elements() * es), y(p.y_elements() * es), dx(p.x_elements() * es);
      // Random data: tensor cores run measurably faster on constant or zero operands.
      Buf hx = random_buf(t, p.x_elements(), g), hw = random_buf(t, p.w_elements(), g), hy = random_buf(t, p.y_elements(), g);
      x.up(hx.raw); w.up(hw.raw); y.up(hy.raw);
      Dev ws(std::max({hopper::fwd_workspace_bytes(p, t, m), hopper::dgrad_workspace_bytes(p, t, m),
                       hopper::wgrad_workspace_bytes(p, t, m)}));
      const double gflop = 2.0 * p.batch * p.out_spatial() * p.out_channels * p.in_channels * p.taps() * 1e-9;
      auto time = [&](auto&& fn) {
        for (int i = 0; i < 3; ++i) fn();
        std::vector<float> ts;
        cudaEvent_t a, b;
        cudaEventCreate(&a); cudaEventCreate(&b);
        for (int i = 0; i < 20; ++i) {
          cudaEventRecord(a); fn(); cudaEventRecord(b); cudaEventSynchronize(b);
          float ms; cudaEventElapsedTime(&ms, a, b); ts.push_back(ms);
        }
        return median_ms(ts);
      };
      std::printf("%-10s %-4s", nc.name, dname(t, m));
      if (wanted("fwd") && hopper::accepts_fwd(p, t, m)) {
        const float ms = time([&] { hopper::fwd(p, t, m, x.p, w.p, nullptr, y.p, ws.p, ws.n, nullptr); });
        std::printf("  fwd %.3f ms (%.0f TF/s)", ms, gflop / ms);
      }
      if (wanted("dgrad") && hopper::accepts_dgrad(p, t, m)) {
        const float ms = time([&] { hopper::dgrad(p, t, m, y.p, w.p, dx.p, ws.p, ws.n, nullptr); });
        std::printf("  dgrad %.3f ms (%.0f TF/s)", ms, gflop / ms);
      }
      if (wanted("wgrad") && hopper::accepts_wgrad(p, t, m)) {
        const float ms = time([&] { hopper::wgrad(p, t, m, x.p, y.p, w.p, ws.p, ws.n, nullptr); });
        std::printf("  wgrad %.3f ms (%.0f TF/s) [%s]", ms, gflop / ms, hopper::tile_wgrad(p, t, m).c_str());
      }
      CK(cudaDeviceSynchronize());
      std::printf("\n");
    }
}

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--bench") { bench(argc > 2 ? argv[2] : nullptr); return 0; }
  std::mt19937 g(1234);
  std::vector<Cfg> cfgs = {
      {1, 16, 16, 4, 5, 6, 1, 1, 1, 1, 0, 0, 1},      {2, 32, 64, 6, 7, 9, 3, 3, 3, 1, 1, 1, 1},
      {2, 64, 64, 8, 8, 8, 3, 3, 3, 1, 1, 1, 1},      {1, 64, 128, 6, 6, 6, 3, 3, 3, 1, 1, 1, 1},
      {1, 128, 96, 5, 6, 7, 3, 3, 3, 1, 1, 1, 1},     {2, 72, 40, 7, 5, 9, 3, 3, 3, 1, 0, 2, 1},
      {1, 32, 48, 9, 9, 9, 3, 3, 3, 2, 1, 1, 1},      {1, 48, 24, 8, 10, 7, 3, 2, 4, 1, 2, 1, 2},
      {2, 16, 136, 5, 5, 5, 2, 2, 2, 1, 1, 0, 1},     {1, 24, 8, 6, 6, 6, 5, 5, 5, 1, 2, 2, 1},
      {1, 200, 72, 4, 4, 4, 3, 3, 3, 1, 1, 1, 1},     {3, 8, 16, 3, 4, 70, 1, 3, 3, 1, 1, 1, 1},
      {1, 64, 256, 4, 4, 4, 3, 3, 3, 2, 2, 0, 2},     {2, 40, 32, 9, 6, 5, 3, 3, 3, 3, 1, 2, 1},
      {2, 64, 72, 6, 5, 16, 3, 3, 3, 1, 1, 1, 1},     {1, 64, 32, 4, 9, 20, 1, 3, 5, 1, 2, 2, 1},
      {1, 128, 136, 3, 4, 8, 3, 3, 3, 1, 1, 1, 1},    {2, 64, 64, 9, 7, 4, 2, 2, 1, 1, 0, 0, 1},
      // TF32 grad-weight's planar copies: every residue of the tap shifts, W not a multiple of 4, even kernels
      {2, 32, 48, 7, 9, 37, 2, 3, 4, 1, 2, 1, 2},     {1, 96, 24, 5, 5, 5, 3, 3, 3, 1, 3, 3, 3},
      {3, 32, 136, 3, 3, 33, 1, 1, 7, 1, 3, 3, 1},    {1, 64, 64, 6, 10, 70, 3, 3, 5, 1, 1, 2, 1},
      // first layers: a pixel's channels fit 16 bytes (8 taps per K-tile; 16-bit C < 8 and float32 C < 4 padded)
      {2, 3, 64, 6, 7, 9, 3, 3, 3, 1, 1, 1, 1},       {1, 1, 16, 5, 6, 7, 3, 3, 3, 1, 1, 1, 1},
      {2, 5, 24, 7, 8, 9, 3, 3, 3, 2, 1, 1, 1},       {1, 4, 72, 6, 9, 5, 2, 3, 4, 1, 1, 2, 2},
      {1, 3, 136, 8, 8, 8, 7, 7, 7, 2, 3, 3, 1},      {2, 2, 64, 4, 20, 20, 1, 5, 5, 1, 0, 2, 1},
      {1, 8, 128, 5, 9, 6, 3, 3, 3, 1, 1, 1, 1},
  };
  std::uniform_int_distribution<int> u(0, 1 << 30);
  for (int r = 0; r < 30; ++r) {  // random configurations
    Cfg c;
    c.N = 1 + u(g) % 3; c.C = 8 * (1 + u(g) % 12); c.O = 8 * (1 + u(g) % 20);
    c.D = 1 + u(g) % 8; c.H = 1 + u(g) % 9; c.W = 1 + u(g) % 12;
    c.kd = 1 + u(g) % 3; c.kh = 1 + u(g) % 3; c.kw = 1 + u(g) % 4;
    c.s = 1 + (u(g) % 4 == 0); c.pl = u(g) % 3; c.ph = u(g) % 3; c.dil = 1 + (u(g) % 4 == 0);
    cfgs.push_back(c);
  }
  const char* only = std::getenv("HOPPER_ONLY");  // e.g. tf32: one dtype
  for (const Cfg& c : cfgs) {
    if (!only || std::string(only) == "bf16") check_one(c, DType::kBF16, MathMode::kAccurate, g);
    if (!only || std::string(only) == "f16") check_one(c, DType::kF16, MathMode::kAccurate, g);
    if (!only || std::string(only) == "tf32") check_one(c, DType::kF32, MathMode::kTF32, g);
    if (!only || std::string(only) == "f32") check_one(c, DType::kF32, MathMode::kAccurate, g);  // 3xTF32
  }
  std::printf("hopper_check: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
