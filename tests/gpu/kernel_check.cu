// Standalone check of the jaxconv3d CUDA entry points against a float64 host reference.
//   kernel_check            many random configurations, all dtypes / math modes, all four operations
//   kernel_check --small    a handful of tiny cases (for compute-sanitizer)
//   kernel_check --bench    times fwd / dgrad / wgrad on the configurations of shared/bench/suite.json
// Build: see .ci/run (the sm80 and entry .cu files, the host dispatch sources, and cuda/hopper/*.cu for sm_90a).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../cuda/conv_kernels.h"
#include "../../cuda/dispatch.h"

using namespace jaxconv3d;

#define CK(call)                                                                                         \
  do {                                                                                                   \
    cudaError_t e_ = (call);                                                                             \
    if (e_ != cudaSuccess) {                                                                             \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, \
                   #call);                                                                               \
      std::exit(2);                                                                                      \
    }                                                                                                    \
  } while (0)

// ------------------------------------------------------------------------------------------------
// float64 reference
struct Ref {
  std::vector<double> y, dx, dw, db;
};

static void reference(const ConvProblem& p, const std::vector<double>& x, const std::vector<double>& w,
                      const std::vector<double>* bias, const std::vector<double>& dy, Ref& r) {
  const int64_t N = p.batch, C = p.in_channels, O = p.out_channels, G = p.groups;
  const int64_t Cg = C / G, Og = O / G;
  const int64_t D = p.in[0], H = p.in[1], W = p.in[2];
  const int64_t Do = p.out[0], Ho = p.out[1], Wo = p.out[2];
  const int64_t kd = p.kernel[0], kh = p.kernel[1], kw = p.kernel[2];
  r.y.assign(p.y_elements(), 0.0);
  r.dx.assign(p.x_elements(), 0.0);
  r.dw.assign(p.w_elements(), 0.0);
  r.db.assign(O, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) {
      const int64_t g = o / Og;
      for (int64_t z = 0; z < Do; ++z)
        for (int64_t yy = 0; yy < Ho; ++yy)
          for (int64_t xx = 0; xx < Wo; ++xx) {
            const int64_t yi = (((n * O + o) * Do + z) * Ho + yy) * Wo + xx;
            double acc = bias ? (*bias)[o] : 0.0;
            const double g_dy = dy[yi];
            r.db[o] += g_dy;
            for (int64_t c = 0; c < Cg; ++c)
              for (int64_t t = 0; t < kd; ++t) {
                const int64_t iz = z * p.stride[0] - p.pad_lo[0] + t * p.dilation[0];
                if (iz < 0 || iz >= D) continue;
                for (int64_t rr = 0; rr < kh; ++rr) {
                  const int64_t iy = yy * p.stride[1] - p.pad_lo[1] + rr * p.dilation[1];
                  if (iy < 0 || iy >= H) continue;
                  for (int64_t s = 0; s < kw; ++s) {
                    const int64_t ix = xx * p.stride[2] - p.pad_lo[2] + s * p.dilation[2];
                    if (ix < 0 || ix >= W) continue;
                    const int64_t xi = (((n * C + g * Cg + c) * D + iz) * H + iy) * W + ix;
                    const int64_t wi = (((o * Cg + c) * kd + t) * kh + rr) * kw + s;
                    acc += w[wi] * x[xi];
                    r.dx[xi] += w[wi] * g_dy;
                    r.dw[wi] += x[xi] * g_dy;
                  }
                }
              }
            r.y[yi] = acc;
          }
    }
}

// ------------------------------------------------------------------------------------------------
template <typename T> T to_t(double v);
template <> float to_t<float>(double v) { return (float)v; }
template <> double to_t<double>(double v) { return v; }
template <> __nv_bfloat16 to_t<__nv_bfloat16>(double v) { return __float2bfloat16((float)v); }
template <> __half to_t<__half>(double v) { return __float2half((float)v); }
static double to_d(float v) { return v; }
static double to_d(double v) { return v; }
static double to_d(__nv_bfloat16 v) { return (double)__bfloat162float(v); }
static double to_d(__half v) { return (double)__half2float(v); }

struct Mode {
  DType t;
  MathMode m;
  const char* name;
  double bound;
  bool quant;  // inputs quantized to multiples of 1/32 (exact in bf16 and f16)
};
static const Mode kModes[] = {
    {DType::kF64, MathMode::kAccurate, "f64", 1e-12, false},
    {DType::kF32, MathMode::kAccurate, "f32", 1e-5, false},
    {DType::kF32, MathMode::kTF32, "tf32", 2e-3, false},
    {DType::kBF16, MathMode::kAccurate, "bf16", 2e-2, true},
    {DType::kF16, MathMode::kAccurate, "f16", 5e-3, true},
};

static int g_pass = 0, g_fail = 0;

static std::string pdesc(const ConvProblem& p) {
  char b[512];
  std::snprintf(b, sizeof b,
                "N%lld C%lld O%lld g%lld in%lldx%lldx%lld k%lldx%lldx%lld s%lldx%lldx%lld plo%lld,%lld,%lld "
                "phi%lld,%lld,%lld d%lldx%lldx%lld",
                (long long)p.batch, (long long)p.in_channels, (long long)p.out_channels, (long long)p.groups,
                (long long)p.in[0], (long long)p.in[1], (long long)p.in[2], (long long)p.kernel[0],
                (long long)p.kernel[1], (long long)p.kernel[2], (long long)p.stride[0], (long long)p.stride[1],
                (long long)p.stride[2], (long long)p.pad_lo[0], (long long)p.pad_lo[1], (long long)p.pad_lo[2],
                (long long)p.pad_hi[0], (long long)p.pad_hi[1], (long long)p.pad_hi[2], (long long)p.dilation[0],
                (long long)p.dilation[1], (long long)p.dilation[2]);
  return b;
}

template <typename T>
static void compare(const char* op, const Mode& md, const ConvProblem& p, const std::vector<T>& out1,
                    const std::vector<T>& out2, const std::vector<double>& ref, const std::string& err1,
                    const std::string& err2) {
  bool ok = true;
  std::string why;
  if (!err1.empty() || !err2.empty()) {
    ok = false;
    why = "error: " + err1 + " / " + err2;
  } else if (std::memcmp(out1.data(), out2.data(), out1.size() * sizeof(T)) != 0) {
    ok = false;
    why = "non-deterministic (two runs differ)";
  }
  double num = 0, den = 0, maxerr = 0, maxref = 0;
  bool finite = true;
  if (ok) {
    for (size_t i = 0; i < ref.size(); ++i) {
      const double v = to_d(out1[i]);
      if (!std::isfinite(v)) { finite = false; break; }
      const double e = v - ref[i];
      num += e * e;
      den += ref[i] * ref[i];
      maxerr = std::max(maxerr, std::fabs(e));
      maxref = std::max(maxref, std::fabs(ref[i]));
    }
    if (!finite) {
      ok = false;
      why = "non-finite output (unwritten element?)";
    } else if (den == 0) {
      if (num != 0) { ok = false; why = "expected all zeros"; }
    } else {
      const double rel = std::sqrt(num / den);
      const double mrel = maxerr / maxref;
      if (!(rel < md.bound) || !(mrel < 10 * md.bound)) {
        ok = false;
        char b[128];
        std::snprintf(b, sizeof b, "rel %.3e max %.3e (bound %.1e)", rel, mrel, md.bound);
        why = b;
      }
    }
  }
  if (ok) {
    ++g_pass;
  } else {
    ++g_fail;
    std::printf("FAIL %-5s %-5s %s: %s\n", op, md.name, pdesc(p).c_str(), why.c_str());
  }
}

template <typename T>
static void upload(T* d, const std::vector<double>& h, cudaStream_t st) {
  std::vector<T> t(h.size());
  for (size_t i = 0; i < h.size(); ++i) t[i] = to_t<T>(h[i]);
  if (!t.empty()) CK(cudaMemcpyAsync(d, t.data(), t.size() * sizeof(T), cudaMemcpyHostToDevice, st));
  CK(cudaStreamSynchronize(st));
}

template <typename T>
static std::vector<T> download(const T* d, size_t n, cudaStream_t st) {
  std::vector<T> t(n);
  if (n) CK(cudaMemcpyAsync(t.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost, st));
  CK(cudaStreamSynchronize(st));
  return t;
}

// One workspace serves the three operations of a problem: the largest the planned family asks for.
static size_t workspace_bytes(const ConvProblem& p, DType t, MathMode m) {
  const int cc = cuda_device_cc(-1);
  size_t most = 0;
  for (Op op : {Op::kFwd, Op::kDgrad, Op::kWgrad}) most = std::max(most, plan(op, p, t, m, cc).workspace_bytes);
  return most;
}

template <typename T>
static void run_case(const ConvProblem& p, const Mode& md, const std::vector<double>& x, const std::vector<double>& w,
                     const std::vector<double>* bias, const std::vector<double>& dy, const Ref& ref,
                     cudaStream_t st) {
  const size_t nx = p.x_elements(), nw = p.w_elements(), ny = p.y_elements(), no = p.out_channels;
  T *dx_in, *dw_in, *db_in, *ddy, *dout_y, *dout_dx, *dout_dw, *dout_db;
  auto alloc = [](T** ptr, size_t n) { CK(cudaMalloc(ptr, std::max<size_t>(n, 1) * sizeof(T))); };
  alloc(&dx_in, nx); alloc(&dw_in, nw); alloc(&db_in, no); alloc(&ddy, ny);
  alloc(&dout_y, ny); alloc(&dout_dx, nx); alloc(&dout_dw, nw); alloc(&dout_db, no);
  upload(dx_in, x, st); upload(dw_in, w, st); upload(ddy, dy, st);
  if (bias) upload(db_in, *bias, st);
  const size_t wsb = workspace_bytes(p, md.t, md.m);
  void* ws = nullptr;
  if (wsb) CK(cudaMalloc(&ws, wsb));

  auto twice = [&](T* out, size_t n, auto fn, std::vector<T>& o1, std::vector<T>& o2, std::string& e1,
                   std::string& e2) {
    CK(cudaMemsetAsync(out, 0xFF, std::max<size_t>(n, 1) * sizeof(T), st));
    e1 = fn();
    CK(cudaStreamSynchronize(st));
    CK(cudaGetLastError());
    o1 = download(out, n, st);
    CK(cudaMemsetAsync(out, 0xFF, std::max<size_t>(n, 1) * sizeof(T), st));
    if (ws) CK(cudaMemsetAsync(ws, 0xFF, wsb, st));
    e2 = fn();
    CK(cudaStreamSynchronize(st));
    CK(cudaGetLastError());
    o2 = download(out, n, st);
  };
  std::vector<T> o1, o2;
  std::string e1, e2;
  twice(dout_y, ny, [&]() { return conv_fwd_cuda(p, md.t, md.m, dx_in, dw_in, bias ? db_in : nullptr, dout_y, ws, wsb, st); },
        o1, o2, e1, e2);
  compare<T>(bias ? "fwd+b" : "fwd", md, p, o1, o2, ref.y, e1, e2);
  twice(dout_dx, nx, [&]() { return conv_dgrad_cuda(p, md.t, md.m, ddy, dw_in, dout_dx, ws, wsb, st); }, o1, o2, e1, e2);
  compare<T>("dgrad", md, p, o1, o2, ref.dx, e1, e2);
  twice(dout_dw, nw, [&]() { return conv_wgrad_cuda(p, md.t, md.m, dx_in, ddy, dout_dw, ws, wsb, st); }, o1, o2, e1,
        e2);
  compare<T>("wgrad", md, p, o1, o2, ref.dw, e1, e2);
  twice(dout_db, no, [&]() { return conv_bgrad_cuda(p, md.t, ddy, dout_db, st); }, o1, o2, e1, e2);
  compare<T>("bgrad", md, p, o1, o2, ref.db, e1, e2);
  // a too-small workspace must be refused
  const size_t wg_bytes = plan(Op::kWgrad, p, md.t, md.m, cuda_device_cc(-1)).workspace_bytes;
  if (wg_bytes && p.batch > 0) {
    const std::string e = conv_wgrad_cuda(p, md.t, md.m, dx_in, ddy, dout_dw, ws, wg_bytes - 1, st);
    if (e.empty()) { ++g_fail; std::printf("FAIL wgrad accepted a short workspace: %s\n", pdesc(p).c_str()); }
    else ++g_pass;
  }
  CK(cudaFree(dx_in)); CK(cudaFree(dw_in)); CK(cudaFree(db_in)); CK(cudaFree(ddy));
  CK(cudaFree(dout_y)); CK(cudaFree(dout_dx)); CK(cudaFree(dout_dw)); CK(cudaFree(dout_db));
  if (ws) CK(cudaFree(ws));
}

static std::mt19937_64 g_rng(12345);

static std::vector<double> randvec(size_t n, bool quant) {
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> v(n);
  for (auto& e : v) {
    double r = nd(g_rng);
    if (quant) {
      r = std::round(r * 32.0) / 32.0;
      r = std::min(4.0, std::max(-4.0, r));
    } else {
      r = (double)(float)r;
    }
    e = r;
  }
  return v;
}

static int64_t ri(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(g_rng); }

static bool finish(ConvProblem& p) {
  for (int a = 0; a < 3; ++a) p.out[a] = p.implied_out(a);
  return p.check().empty();
}

static double macs(const ConvProblem& p) {
  return (double)p.batch * p.out_channels * p.out_spatial() * p.in_per_group() * p.taps();
}

static ConvProblem random_problem(bool small) {
  for (;;) {
    ConvProblem p;
    const int gk = (int)ri(0, 9);
    p.batch = ri(1, 3);
    int64_t Cg = ri(1, small ? 5 : 13), Og = ri(1, small ? 5 : 13);
    if (ri(0, 4) == 0 && !small) { Cg = ri(30, 70); Og = ri(30, 80); }
    if (gk <= 4) { p.groups = 1; }
    else if (gk <= 6) { p.groups = 2; }
    else if (gk == 7) { p.groups = ri(1, 12); Cg = 1; Og = 1; }   // depthwise
    else if (gk == 8) { p.groups = ri(1, 12); Cg = 1; Og = 2; }   // depthwise, multiplier 2
    else { p.groups = ri(3, 5); }
    p.in_channels = Cg * p.groups;
    p.out_channels = Og * p.groups;
    for (int a = 0; a < 3; ++a) {
      p.kernel[a] = ri(1, 5);
      p.stride[a] = ri(1, 3);
      p.dilation[a] = ri(1, 3);
      p.pad_lo[a] = ri(0, p.kernel[a]);
      p.pad_hi[a] = ri(0, p.kernel[a]);
      const int64_t span = p.dilation[a] * (p.kernel[a] - 1) + 1;
      const int64_t lo = std::max<int64_t>(1, span - p.pad_lo[a] - p.pad_hi[a]);
      p.in[a] = ri(lo, lo + (small ? 4 : 11));
    }
    if (!finish(p)) continue;
    if (macs(p) > (small ? 2e5 : 6e6)) continue;
    return p;
  }
}

static std::vector<ConvProblem> fixed_problems() {
  std::vector<ConvProblem> v;
  auto mk = [&](int64_t N, int64_t C, int64_t O, int64_t G, std::vector<int64_t> in, std::vector<int64_t> k,
                std::vector<int64_t> s, std::vector<int64_t> plo, std::vector<int64_t> phi, std::vector<int64_t> d) {
    ConvProblem p;
    p.batch = N; p.in_channels = C; p.out_channels = O; p.groups = G;
    for (int a = 0; a < 3; ++a) {
      p.in[a] = in[a]; p.kernel[a] = k[a]; p.stride[a] = s[a]; p.pad_lo[a] = plo[a]; p.pad_hi[a] = phi[a];
      p.dilation[a] = d[a];
    }
    if (!finish(p)) { std::printf("bad fixed problem %s\n", pdesc(p).c_str()); std::exit(3); }
    v.push_back(p);
  };
  mk(2, 3, 64, 1, {10, 11, 12}, {3, 3, 3}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}, {1, 1, 1});       // first layer
  mk(2, 40, 70, 1, {7, 6, 9}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});        // 2 N-tiles, MMA
  mk(2, 72, 36, 1, {9, 8, 7}, {3, 2, 3}, {2, 2, 2}, {1, 0, 1}, {1, 1, 0}, {1, 1, 1});        // dgrad 2 N-tiles
  mk(3, 24, 48, 1, {14, 13, 15}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {0, 0, 0}, {1, 1, 1});     // pointwise
  mk(2, 16, 32, 1, {9, 9, 9}, {1, 1, 1}, {2, 3, 2}, {0, 0, 0}, {0, 0, 0}, {1, 1, 1});        // pointwise strided
  mk(2, 6, 6, 6, {8, 20, 21}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});        // depthwise (stencil)
  mk(2, 5, 10, 5, {9, 10, 33}, {3, 2, 3}, {1, 1, 1}, {2, 0, 1}, {0, 2, 1}, {2, 1, 1});       // depthwise x2
  mk(2, 4, 4, 4, {9, 11, 10}, {3, 3, 3}, {2, 2, 3}, {1, 1, 1}, {0, 1, 2}, {1, 1, 2});        // depthwise strided
  mk(1, 3, 3, 3, {12, 14, 13}, {5, 5, 3}, {1, 1, 1}, {2, 2, 1}, {2, 2, 1}, {1, 1, 1});       // depthwise T=75
  mk(1, 2, 2, 2, {30, 30, 30}, {5, 5, 5}, {3, 3, 3}, {5, 5, 5}, {4, 3, 2}, {3, 3, 3});       // stencil too big
  mk(2, 5, 7, 1, {20, 18, 22}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});       // wgrad splits
  mk(2, 64, 64, 1, {6, 7, 8}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});        // unet-like
  mk(1, 8, 8, 2, {5, 6, 7}, {4, 3, 2}, {3, 2, 1}, {0, 2, 1}, {3, 0, 2}, {1, 2, 3});          // mixed
  mk(2, 4, 6, 2, {3, 3, 3}, {5, 5, 5}, {3, 3, 3}, {2, 2, 2}, {2, 2, 2}, {1, 1, 1});          // small input
  mk(2, 3, 16, 1, {9, 10, 37}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});      // dgrad stencil CO=3
  mk(2, 4, 6, 2, {7, 9, 11}, {3, 2, 3}, {1, 1, 1}, {2, 0, 1}, {0, 1, 3}, {2, 1, 2});        // dgrad stencil CO=2
  mk(1, 8, 10, 2, {6, 7, 8}, {2, 3, 4}, {1, 1, 1}, {1, 2, 0}, {1, 0, 2}, {1, 1, 1});        // dgrad stencil CO=4
  mk(2, 40, 140, 2, {6, 7, 8}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});      // pipelined wgrad 2x5 tiles
  mk(1, 4, 40, 1, {20, 20, 20}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});     // pipelined wgrad splits
  mk(2, 2, 6, 2, {13, 9, 10}, {3, 3, 3}, {1, 2, 1}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});       // depthwise x3, sliding z
  return v;
}

static std::vector<ConvProblem> small_problems() {
  std::vector<ConvProblem> v;
  auto mk = [&](int64_t N, int64_t C, int64_t O, int64_t G, std::vector<int64_t> in, std::vector<int64_t> k,
                std::vector<int64_t> s, std::vector<int64_t> pl, std::vector<int64_t> d) {
    ConvProblem p;
    p.batch = N; p.in_channels = C; p.out_channels = O; p.groups = G;
    for (int a = 0; a < 3; ++a) {
      p.in[a] = in[a]; p.kernel[a] = k[a]; p.stride[a] = s[a]; p.pad_lo[a] = pl[a]; p.pad_hi[a] = pl[a] / 2 + 1;
      p.dilation[a] = d[a];
    }
    if (!finish(p)) { std::printf("bad small problem %s\n", pdesc(p).c_str()); std::exit(3); }
    v.push_back(p);
  };
  mk(2, 3, 5, 1, {5, 6, 7}, {3, 2, 3}, {1, 2, 1}, {1, 0, 2}, {1, 1, 2});   // generic, 16-wide tile
  mk(1, 6, 40, 2, {4, 5, 6}, {2, 3, 1}, {2, 1, 3}, {1, 1, 0}, {1, 2, 1});  // 2 groups, 20-wide
  mk(1, 8, 40, 1, {4, 5, 6}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});  // MMA path
  mk(2, 4, 8, 4, {5, 6, 7}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});   // depthwise stencil
  mk(1, 3, 3, 3, {6, 5, 7}, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1});   // depthwise strided
  mk(1, 2, 3, 1, {20, 20, 20}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});// wgrad splits
  mk(1, 3, 4, 1, {5, 6, 9}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});   // dgrad stencil CO=3
  mk(1, 4, 40, 1, {12, 12, 12}, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, {1, 1, 1});// pipelined wgrad, splits
  return v;
}

static void check_problem(const ConvProblem& p, cudaStream_t st, bool with_bias) {
  Ref full, quant;
  std::vector<double> xf = randvec(p.x_elements(), false), wf = randvec(p.w_elements(), false),
                      bf = randvec(p.out_channels, false), dyf = randvec(p.y_elements(), false);
  std::vector<double> xq = randvec(p.x_elements(), true), wq = randvec(p.w_elements(), true),
                      bq = randvec(p.out_channels, true), dyq = randvec(p.y_elements(), true);
  reference(p, xf, wf, with_bias ? &bf : nullptr, dyf, full);
  reference(p, xq, wq, with_bias ? &bq : nullptr, dyq, quant);
  for (const Mode& md : kModes) {
    const bool q = md.quant;
    const std::vector<double>& x = q ? xq : xf;
    const std::vector<double>& w = q ? wq : wf;
    const std::vector<double>* b = with_bias ? (q ? &bq : &bf) : nullptr;
    const std::vector<double>& dy = q ? dyq : dyf;
    const Ref& r = q ? quant : full;
    switch (md.t) {
      case DType::kF32: run_case<float>(p, md, x, w, b, dy, r, st); break;
      case DType::kF64: run_case<double>(p, md, x, w, b, dy, r, st); break;
      case DType::kBF16: run_case<__nv_bfloat16>(p, md, x, w, b, dy, r, st); break;
      case DType::kF16: run_case<__half>(p, md, x, w, b, dy, r, st); break;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// bench
struct BenchCfg {
  const char* name;
  int64_t N, C, O, D, H, W, k, s, pad, groups;
  double cudnn_fwd[3];      // torch NCDHW fwd ms: fp32, tf32, bf16
  double cudnn_fwdbwd[3];   // torch NCDHW fwd+bwd ms
};
static const BenchCfg kBench[] = {
    {"kb54", 16, 3, 64, 64, 64, 64, 3, 1, 0, 1, {1.439, 1.424, 1.856}, {10.809, 10.994, 6.03}},
    {"unet_64", 2, 64, 64, 64, 64, 64, 3, 1, 1, 1, {2.746, 0.828, 0.429}, {16.829, 3.228, 1.329}},
    {"unet_256", 2, 256, 256, 16, 16, 16, 3, 1, 1, 1, {0.751, 0.142, 0.102}, {2.578, 0.489, 0.319}},
    {"video_c3d", 4, 64, 128, 16, 56, 56, 3, 1, 1, 1, {2.074, 0.398, 0.24}, {9.337, 1.841, 0.849}},
    {"down_s2", 4, 32, 64, 64, 64, 64, 3, 2, 1, 1, {0.396, 0.254, 0.178}, {3.4, 1.154, 0.639}},
    {"depthwise", 8, 192, 192, 16, 28, 28, 3, 1, 1, 192, {0.4, 0.387, 0.414}, {1.77, 1.747, 1.923}},
    {"pointwise", 8, 128, 256, 16, 28, 28, 1, 1, 0, 1, {0.274, 0.097, 0.058}, {1.317, 0.313, 0.237}},
};

__global__ void fill_kernel(unsigned char* p, size_t n_elem, int kind, unsigned seed) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_elem; i += (size_t)gridDim.x * blockDim.x) {
    unsigned h = (unsigned)i * 2654435761u ^ seed;
    h ^= h >> 13; h *= 0x5bd1e995u; h ^= h >> 15;
    const float v = ((h & 0xFFFFFF) / 16777216.0f - 0.5f) * 2.0f;
    if (kind == 0) reinterpret_cast<float*>(p)[i] = v;
    else reinterpret_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v);
  }
}

static void bench() {
  cudaDeviceProp prop;
  int dev = 0;
  CK(cudaGetDevice(&dev));
  CK(cudaGetDeviceProperties(&prop, dev));
  std::printf("bench on %s (%d SMs); median of 25 after 3 warm-ups, CUDA events, ms\n", prop.name,
              prop.multiProcessorCount);
  std::printf("%-10s %-5s %9s %9s %9s %9s | %12s %12s\n", "config", "prec", "fwd", "dgrad", "wgrad", "sum",
              "cudnn_fwd", "cudnn_fwdbwd");
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (const BenchCfg& b : kBench) {
    ConvProblem p;
    p.batch = b.N; p.in_channels = b.C; p.out_channels = b.O; p.groups = b.groups;
    p.in[0] = b.D; p.in[1] = b.H; p.in[2] = b.W;
    for (int a = 0; a < 3; ++a) {
      p.kernel[a] = b.k; p.stride[a] = b.s; p.pad_lo[a] = b.pad; p.pad_hi[a] = b.pad; p.dilation[a] = 1;
    }
    finish(p);
    const char* pn[3] = {"fp32", "tf32", "bf16"};
    for (int pi = 0; pi < 3; ++pi) {
      const DType t = pi == 2 ? DType::kBF16 : DType::kF32;
      const MathMode m = pi == 1 ? MathMode::kTF32 : MathMode::kAccurate;
      const size_t es = pi == 2 ? 2 : 4;
      unsigned char *x, *w, *y, *dy, *dx, *dw, *ws = nullptr;
      CK(cudaMalloc(&x, p.x_elements() * es)); CK(cudaMalloc(&dx, p.x_elements() * es));
      CK(cudaMalloc(&w, p.w_elements() * es)); CK(cudaMalloc(&dw, p.w_elements() * es));
      CK(cudaMalloc(&y, p.y_elements() * es)); CK(cudaMalloc(&dy, p.y_elements() * es));
      const size_t wsb = workspace_bytes(p, t, m);
      if (wsb) CK(cudaMalloc(&ws, wsb));
      fill_kernel<<<1024, 256, 0, st>>>(x, p.x_elements(), pi == 2, 1u);
      fill_kernel<<<1024, 256, 0, st>>>(w, p.w_elements(), pi == 2, 2u);
      fill_kernel<<<1024, 256, 0, st>>>(dy, p.y_elements(), pi == 2, 3u);
      CK(cudaGetLastError());
      double med[3];
      for (int op = 0; op < 3; ++op) {
        auto call = [&]() -> std::string {
          if (op == 0) return conv_fwd_cuda(p, t, m, x, w, nullptr, y, ws, wsb, st);
          if (op == 1) return conv_dgrad_cuda(p, t, m, dy, w, dx, ws, wsb, st);
          return conv_wgrad_cuda(p, t, m, x, dy, dw, ws, wsb, st);
        };
        for (int i = 0; i < 3; ++i) {
          const std::string e = call();
          if (!e.empty()) { std::printf("bench error: %s\n", e.c_str()); std::exit(4); }
        }
        std::vector<float> ts;
        for (int i = 0; i < 25; ++i) {
          CK(cudaEventRecord(e0, st));
          const std::string e = call();
          if (!e.empty()) { std::printf("bench error: %s\n", e.c_str()); std::exit(4); }
          CK(cudaEventRecord(e1, st));
          CK(cudaEventSynchronize(e1));
          float ms = 0;
          CK(cudaEventElapsedTime(&ms, e0, e1));
          ts.push_back(ms);
        }
        std::sort(ts.begin(), ts.end());
        med[op] = ts[ts.size() / 2];
      }
      std::printf("%-10s %-5s %9.3f %9.3f %9.3f %9.3f | %12.3f %12.3f\n", b.name, pn[pi], med[0], med[1], med[2],
                  med[0] + med[1] + med[2], b.cudnn_fwd[pi], b.cudnn_fwdbwd[pi]);
      std::fflush(stdout);
      CK(cudaFree(x)); CK(cudaFree(dx)); CK(cudaFree(w)); CK(cudaFree(dw)); CK(cudaFree(y)); CK(cudaFree(dy));
      if (ws) CK(cudaFree(ws));
    }
  }
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  CK(cudaStreamDestroy(st));
}

int main(int argc, char** argv) {
  // The problems here are NCDHW: check the sm80 family (the Hopper family, NDHWC only, is checked from Python).
  setenv("JAXCONV3D_FAMILY", "sm80", 1);
  bool small = false, do_bench = false;
  int nrandom = 120;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--small")) small = true;
    else if (!std::strcmp(argv[i], "--bench")) do_bench = true;
    else if (!std::strcmp(argv[i], "--random") && i + 1 < argc) nrandom = std::atoi(argv[++i]);
  }
  if (!cuda_available()) { std::printf("cuda_available() is false\n"); return 1; }
  if (do_bench) { bench(); return 0; }
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  std::vector<ConvProblem> probs;
  if (small) {
    probs = small_problems();
  } else {
    probs = fixed_problems();
    for (int i = 0; i < nrandom; ++i) probs.push_back(random_problem(false));
  }
  int idx = 0;
  for (const ConvProblem& p : probs) check_problem(p, st, (idx++ % 2) == 0);
  if (!small) {
    // batch 0: fwd/dgrad write nothing, wgrad/bgrad write zeros
    ConvProblem p = fixed_problems()[0];
    p.batch = 0;
    finish(p);
    check_problem(p, st, false);
    // invalid problem must be refused
    ConvProblem bad = p;
    bad.out[0] += 1;
    const std::string e = conv_fwd_cuda(bad, DType::kF32, MathMode::kAccurate, nullptr, nullptr, nullptr, nullptr, nullptr, 0,
                                        st);
    if (e.empty()) { ++g_fail; std::printf("FAIL invalid problem accepted\n"); } else ++g_pass;
  }
  CK(cudaStreamDestroy(st));
  std::printf("kernel_check: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail == 0 ? 0 : 1;
}
