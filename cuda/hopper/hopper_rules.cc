// What the Hopper family accepts, the tiles it picks and the workspace it needs: plain C++ (no CUDA), so the
// dispatcher can answer for compute capability 9.0 on any machine, including CPU-only builds.
#include "hopper/hopper_rules.h"

#include <algorithm>

namespace jaxconv3d {
namespace hopper {
namespace {

bool tensor_core_dtype(DType t, MathMode m) {
  return t == DType::kBF16 || t == DType::kF16 || (t == DType::kF32 && m == MathMode::kTF32);
}
// float32 accurate runs forward and grad-input as 3xTF32 (conv_tma.cuh), on the TMA path only.
bool split_tf32(DType t, MathMode m) { return t == DType::kF32 && m == MathMode::kAccurate; }
int64_t chunk_elems(DType t) { return 16 / dtype_size(t); }
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t positions(const ConvProblem& p) { return p.batch * p.out_spatial(); }
size_t align256(size_t n) { return (n + 255) / 256 * 256; }
// Bytes of a copy of `rows` pixels of `channels` channels, 256-byte aligned.
size_t padded_bytes(int64_t rows, int64_t channels, DType t) {
  return align256(size_t(rows) * size_t(channels) * size_t(dtype_size(t)));
}

// Sizes the kernels index with 32-bit integers (extents, channel counts, tap counts) and launch limits.
bool fits(const ConvProblem& p) {
  const int64_t lim = int64_t(1) << 30;
  return p.in_channels < lim && p.out_channels < lim && p.taps() * p.in_channels < lim &&
         p.taps() * p.out_channels < lim && ceil_div(p.batch * p.in_spatial(), 128) < lim &&
         ceil_div(positions(p), 128) < lim;
}

}  // namespace

int fwd_bn(const ConvProblem& p, bool split) { return (p.out_channels <= 64 || split) ? 64 : 128; }
int dgrad_bn(const ConvProblem& p, bool split) { return (p.in_channels <= 64 || split) ? 64 : 128; }
int wgrad_bn(const ConvProblem& p) { return p.out_channels <= 64 ? 64 : 128; }
int tap_group(DType t, MathMode m, int64_t source_channels) {
  if (split_tf32(t, m)) return 1;
  return ((t == DType::kBF16 || t == DType::kF16) && source_channels <= 32) ? 2 : 1;
}

bool resident_filter(DType t, MathMode m, int64_t source_channels, int64_t result_channels, int64_t taps) {
  return tap_group(t, m, source_channels) == 2 && result_channels <= 64 && taps <= 28;
}

bool first_layer_fold(const ConvProblem& p, DType t, MathMode m, Fold* f) {
  if (!(tensor_core_dtype(t, m) || split_tf32(t, m)) || p.groups != 1 || p.in_channels * dtype_size(t) >= 16) return false;
  const int64_t row_limit = 128 / dtype_size(t);  // folded channels: one 128-byte channel block
  for (const bool h : {true, false}) {
    const int64_t raw = p.in_channels * p.kernel[2] * (h ? p.kernel[1] : 1);
    if (raw > row_limit) continue;
    // float32 takes a whole 128-byte row (TF32 grad-weight reads 32-channel rows); 16-bit the next 16 bytes
    const int64_t padded = dtype_size(t) == 4 ? row_limit : ceil_div(raw, chunk_elems(t)) * chunk_elems(t);
    f->h = h;
    f->raw = raw;
    f->folded = p;
    f->folded.in_channels = padded;
    f->folded.layout = Layout::kNDHWC;
    for (int d = h ? 1 : 2; d < 3; ++d) {  // folded axes: the source is already at the result's positions
      f->folded.in[d] = p.out[d];
      f->folded.kernel[d] = 1;
      f->folded.stride[d] = 1;
      f->folded.pad_lo[d] = f->folded.pad_hi[d] = 0;
      f->folded.dilation[d] = 1;
    }
    return true;
  }
  return false;
}

bool brick_for(const int out[3], const int step[3], Brick* b, int rows) {
  for (int d = 0; d < 3; ++d)
    if (step[d] < 1 || step[d] > 8 || out[d] < 1) return false;
  int lr = 0;
  while ((1 << lr) < rows) ++lr;
  // Every power-of-two shape bw x bh x bd of `rows` positions whose box extents (brick x traversal step) fit the
  // copy engine's 256, widest W (then H) first: a narrower one replaces the choice only where its bricks cover at
  // least 1/16 fewer positions (a 56-wide axis takes 8 x 7 bricks, not 64 x 1 with an eighth of it wasted; a
  // 62-wide one keeps 64-wide bricks: 3% waste costs less than 2-pixel rows).
  int64_t best = -1;
  for (int lw = lr; lw >= 0; --lw)
    for (int lh = lr - lw; lh >= 0; --lh) {
      const int ld = lr - lw - lh;
      const int ext[3] = {1 << ld, 1 << lh, 1 << lw};
      int64_t cover = 1;
      bool fits_box = true;
      for (int d = 0; d < 3; ++d) {
        fits_box = fits_box && ext[d] * step[d] <= 256;
        cover *= (int64_t(out[d]) + ext[d] - 1) / ext[d] * ext[d];
      }
      if (!fits_box || (best >= 0 && cover * 16 > best * 15)) continue;
      best = cover;
      b->bw_log = lw;
      b->bh_log = lh;
      b->bd_log = ld;
    }
  return best >= 0;
}

bool wgrad_tma(const ConvProblem& p, DType t, Brick* b) {
  const int out[3] = {int(p.out[0]), int(p.out[1]), int(p.out[2])};
  const int step[3] = {int(p.stride[0]), int(p.stride[1]), int(p.stride[2])};
  return p.in_channels % (128 / dtype_size(t)) == 0 && brick_for(out, step, b, 64);
}

bool wgrad_bf16x3(const ConvProblem& p, DType t, MathMode m) {
  Brick b;
  if (!(t == DType::kF32 && m == MathMode::kTF32 && p.in_channels % 64 == 0 && wgrad_tma(p, DType::kBF16, &b)))
    return false;
  // The split costs a pass over x and dy (8 bytes an element, ~2.5 TB/s) and saves ~45% of the TF32 GEMM's time
  // (~100 -> ~175 TFLOP/s): it pays from ~730 FLOPs per element of x and dy (H100: pointwise, 171, lost 0.098 ->
  // 0.235 ms; unet_256, 6900, won 0.272 -> 0.170).
  const double flops = 2.0 * double(positions(p)) * double(p.taps() * p.in_channels) * double(p.out_channels);
  return flops >= 1000.0 * double(p.x_elements() + p.y_elements());
}

static size_t wgrad_partial_bytes(const ConvProblem& p, DType t) {
  const WgradSplit s = wgrad_split(p, t);
  return align256(size_t(s.splits) * size_t(p.taps() * p.in_channels) * size_t(p.out_channels) * 4);
}

Bf16x3Parts bf16x3_parts(const ConvProblem& p, void* workspace) {
  char* at = static_cast<char*>(workspace) + wgrad_partial_bytes(p, DType::kF32);
  const size_t xb = align256(size_t(p.x_elements()) * 2), yb = align256(size_t(p.y_elements()) * 2);
  return {at, at + xb, at + 2 * xb, at + 2 * xb + yb};
}

WgradSplit wgrad_split(const ConvProblem& p, DType t) {
  WgradSplit s;
  Brick b;
  if (wgrad_tma(p, t, &b)) {
    s.ktiles = p.batch * ceil_div(p.out[0], int64_t(1) << b.bd_log) * ceil_div(p.out[1], int64_t(1) << b.bh_log) *
               ceil_div(p.out[2], int64_t(1) << b.bw_log);
  } else {
    s.ktiles = ceil_div(positions(p), 64);
  }
  // Split count from a small cost model of the persistent kernel on the 132 SMs of an H100 / H200: whole waves
  // of tiles times the K-tiles each tile walks (about 0.45 us per 128 x 64 x 64 K-tile, scaled by BN), plus the
  // partial sums written and read back by the reduction (about 3 TB/s); the cheapest split count wins, ties to
  // the fewer splits. A pure function of the problem, so the summation order never depends on the card.
  const int64_t ntot = p.taps() * p.in_channels;
  const int64_t base = ceil_div(ntot, 128) * ceil_div(p.out_channels, wgrad_bn(p));
  const int64_t per_split_bytes = ntot * p.out_channels * 4;
  // TF32 K-tiles cost about twice (half the tensor-core rate, plus the shared-memory transpose).
  const double ktile_us = 0.45 * wgrad_bn(p) / 64.0 * (t == DType::kF32 ? 2.0 : 1.0);
  int64_t splits = 1;
  double best = -1.0;
  const int64_t max_splits = std::max<int64_t>(1, std::min<int64_t>(s.ktiles, ceil_div(8 * 132, base)));
  for (int64_t c = 1; c <= max_splits; ++c) {
    if (c > 1 && c * per_split_bytes > (int64_t(256) << 20)) break;
    const int64_t per = ceil_div(s.ktiles, c);
    const double t = double(ceil_div(base * c, 132)) * double(per) * ktile_us +
                     (c > 1 ? 2.0 * double(c * per_split_bytes) / 3.0e6 : 0.0);
    if (best < 0 || t < best) {
      best = t;
      splits = c;
    }
  }
  s.tiles_per_split = std::max<int64_t>(1, ceil_div(s.ktiles, splits));
  s.splits = std::max<int64_t>(1, ceil_div(s.ktiles, s.tiles_per_split));
  return s;
}

bool accepts_fwd(const ConvProblem& p, DType t, MathMode m) {
  Fold f;
  if (first_layer_fold(p, t, m, &f)) return fits(p) && accepts_fwd(f.folded, t, m);
  if (!(tensor_core_dtype(t, m) || split_tf32(t, m)) || p.groups != 1 || p.in_channels % chunk_elems(t) != 0 ||
      !fits(p))
    return false;
  if (!split_tf32(t, m)) return true;
  const int out[3] = {int(p.out[0]), int(p.out[1]), int(p.out[2])};
  const int step[3] = {int(p.stride[0]), int(p.stride[1]), int(p.stride[2])};
  Brick b;
  return brick_for(out, step, &b);
}

bool accepts_dgrad(const ConvProblem& p, DType t, MathMode m) {
  Fold f;
  if (first_layer_fold(p, t, m, &f)) return fits(p) && accepts_dgrad(f.folded, t, m);
  return (tensor_core_dtype(t, m) || split_tf32(t, m)) && p.groups == 1 && p.out_channels % chunk_elems(t) == 0 &&
         fits(p);
}

bool accepts_wgrad(const ConvProblem& p, DType t, MathMode m) {
  Fold f;
  if (first_layer_fold(p, t, m, &f)) return fits(p) && accepts_wgrad(f.folded, t, m);
  const bool common = p.groups == 1 && p.in_channels % 8 == 0 && p.out_channels % 8 == 0 &&
                      p.out_spatial() < (int64_t(1) << 31) && fits(p);
  if (t == DType::kBF16 || t == DType::kF16) return common;
  Brick b;
  return t == DType::kF32 && m == MathMode::kTF32 && common && wgrad_tma(p, t, &b);  // TMA path only
}

size_t folded_source_bytes(const Fold& f, DType t) {
  return padded_bytes(f.folded.batch * f.folded.in_spatial(), f.folded.in_channels, t);
}
size_t folded_filter_bytes(const Fold& f, DType t) {
  return padded_bytes(f.folded.out_channels * f.folded.taps(), f.folded.in_channels, t);
}

// A first layer's workspace: the folded source (xf, or dxf), the folded filter (wf, or dwf), then what the
// operation on the folded convolution needs itself.
size_t fwd_workspace_bytes(const ConvProblem& p, DType t, MathMode m) {
  Fold f;
  return first_layer_fold(p, t, m, &f) ? folded_source_bytes(f, t) + folded_filter_bytes(f, t) : 0;
}

size_t dgrad_workspace_bytes(const ConvProblem& p, DType t, MathMode m) {
  Fold f;
  if (first_layer_fold(p, t, m, &f))
    return folded_source_bytes(f, t) + folded_filter_bytes(f, t) + dgrad_workspace_bytes(f.folded, t, m);
  return align256(size_t(p.w_elements()) * size_t(dtype_size(t)));  // the transposed filter
}

size_t wgrad_workspace_bytes(const ConvProblem& p, DType t, MathMode m) {
  Fold f;
  if (first_layer_fold(p, t, m, &f))
    return folded_source_bytes(f, t) + folded_filter_bytes(f, t) + wgrad_workspace_bytes(f.folded, t, m);
  if (wgrad_bf16x3(p, t, m))
    return wgrad_partial_bytes(p, t) + 2 * align256(size_t(p.x_elements()) * 2) + 2 * align256(size_t(p.y_elements()) * 2);
  return wgrad_partial_bytes(p, t);
}

static std::string kmajor_tile(const int out[3], const int step[3], int bn, bool split, int taps_per_ktile,
                               bool resident) {
  Brick b;
  if (!brick_for(out, step, &b)) return "gather_wgmma_128x" + std::to_string(bn) + "x128B_kmajor";
  const std::string k = taps_per_ktile == 1 ? "x128B_kmajor_brick"
                                            : "x" + std::to_string(taps_per_ktile) + "x" +
                                                  std::to_string(128 / taps_per_ktile) + "B_kmajor_tapgroups_brick";
  return std::string(split ? "tma_3xtf32_wgmma_128x" : "tma_wgmma_128x") + std::to_string(bn) + k +
         std::to_string(1 << b.bw_log) + "x" + std::to_string(1 << b.bh_log) + "x" + std::to_string(1 << b.bd_log) +
         (resident ? "_resident_filter" : "");
}
static std::string fold_suffix(const Fold& f) {
  return (f.h ? "_hw_taps_folded_into" : "_w_taps_folded_into") + std::to_string(f.folded.in_channels) + "_channels";
}
size_t smallc_filter_bytes(const SmallC& s) { return size_t(s.nblocks) * (s.split ? 2 : 1) * kSmallCBlockBytes; }

// What both first-layer kernels need of a problem: a supported dtype, one group, and sizes their 32-bit position
// decoding and offsets can index (positions < 2^32; a sample's offsets and every tap's displacement < 2^31).
static bool smallc_fits(const ConvProblem& p, DType t) {
  if (!(t == DType::kF32 || t == DType::kBF16 || t == DType::kF16) || p.groups != 1) return false;
  if (positions(p) > (int64_t(1) << 32) - 128 || p.out_spatial() >= (int64_t(1) << 31)) return false;
  int64_t reach = p.in_channels * p.in_spatial();
  const int64_t sd[3] = {p.in[1] * p.in[2], p.in[2], 1};
  for (int d = 0; d < 3; ++d) reach += (p.span(d) - 1) * sd[d] * p.in_channels;
  return reach < (int64_t(1) << 31);
}
static int64_t smallc_k(const ConvProblem& p) { return p.in_channels * p.taps(); }
static int64_t smallc_k_limit(DType t) { return kSmallCSteps * (dtype_size(t) == 2 ? 16 : 8); }

bool smallc_plan(const ConvProblem& p, DType t, MathMode m, SmallC* s) {
  if (!smallc_fits(p, t) || smallc_k(p) > smallc_k_limit(t) || p.out_channels > (1 << 20)) return false;
  s->steps = int(ceil_div(smallc_k(p), dtype_size(t) == 2 ? 16 : 8));
  s->nblocks = int(ceil_div(p.out_channels, 64));
  s->split = split_tf32(t, m);
  return smallc_filter_bytes(*s) <= size_t(kSmallCFilterBytes);
}

bool smallc_wgrad_plan(const ConvProblem& p, DType t, MathMode m, SmallCWgrad* s, bool halo) {
  if (!smallc_fits(p, t) || smallc_k(p) > smallc_k_limit(t) || p.out_channels > 64) return false;
  s->rb = int(ceil_div(smallc_k(p), 64));
  s->split = split_tf32(t, m);
  const int64_t es = dtype_size(t);
  s->bh = es == 2 ? kSmallCHaloBH : kSmallCHaloBH / 2;
  s->hd = int(p.span(0));
  s->hh = int((s->bh - 1) * p.stride[1] + p.span(1));
  s->hw = int(ceil_div(kSmallCHaloBW - 1 + p.span(2), 2) * 2);
  s->halo = halo && p.layout == Layout::kNDHWC && p.stride[2] == 1 && (p.out_channels * es) % 16 == 0 &&
            p.in_channels * s->hd * s->hh * s->hw <= kSmallCHaloElems;
  if (s->halo) {  // bricks of one output plane
    s->tile = s->bh * kSmallCHaloBW;
    s->tiles_h = ceil_div(p.out[1], s->bh);
    s->tiles_w = ceil_div(p.out[2], kSmallCHaloBW);
    s->tiles = p.batch * p.out[0] * s->tiles_h * s->tiles_w;
  } else {
    s->tile = 32;  // positions per tile: four tf32 or two 16-bit wgmma k-steps
    s->tiles = ceil_div(positions(p), s->tile);
  }
  s->tiles_per_split = std::max<int64_t>(1, ceil_div(s->tiles, kSmallCWgradSplits));
  s->splits = ceil_div(s->tiles, s->tiles_per_split);
  return true;
}

// The dx brick: the th x tw (H, W) brick whose halo'd dy brick, (th + span_h - 1) x (tw + span_w - 1), fits
// kSmallCDgradRows positions with the fewest 64-row tiles over the whole plane; ties go to the brick that covers
// the fewest positions past the plane's edges, then to the wider one (longer runs of dx along W).
static bool smallc_dgrad_brick(const ConvProblem& p, SmallCDgrad* s) {
  const int64_t span_h = p.span(1), span_w = p.span(2);
  int64_t best = -1, best_cover = 0;
  for (int64_t tw = 1; tw <= std::min<int64_t>(p.in[2], 64); ++tw) {
    const int64_t twd = tw + span_w - 1;
    if (twd > kSmallCDgradRows) break;
    const int64_t th = std::min({kSmallCDgradRows / twd - span_h + 1, p.in[1],
                                 int64_t(kSmallCDgradItems) / (p.in_channels * tw)});
    if (th < 1) continue;
    const int64_t bricks = ceil_div(p.in[1], th) * ceil_div(p.in[2], tw);
    const int64_t cost = bricks * ceil_div((th + span_h - 1) * twd, 64), cover = bricks * th * tw;
    if (best < 0 || cost < best || (cost == best && cover <= best_cover)) {
      best = cost;
      best_cover = cover;
      s->th = int(th);
      s->tw = int(tw);
    }
  }
  return best > 0;
}

int smallc_dgrad_p_stride(int nr, int64_t channels, bool channels_last, int64_t esize) {
  const int c = int(channels);
  if (esize != 2 || !channels_last || c < 2 || c % 2 == 0) return nr + 1;
  return nr + 1 + ((c - (nr + 1)) % 32 + 32) % 32;
}

bool smallc_dgrad_plan(const ConvProblem& p, DType t, MathMode m, SmallCDgrad* s) {
  if (!(t == DType::kF32 || t == DType::kBF16 || t == DType::kF16) || p.groups != 1) return false;
  if (p.stride[0] != 1 || p.stride[1] != 1 || p.stride[2] != 1 || p.out_channels > 64) return false;
  const int64_t K = smallc_k(p);
  if (K > 128 || p.in_channels >= 16) return false;
  s->nr = K <= 32 ? 32 : K <= 64 ? 64 : K <= 88 ? 88 : 128;
  for (int d = 0; d < 3; ++d)
    if (p.in[d] >= (int64_t(1) << 30) || p.out[d] >= (int64_t(1) << 30) || p.span(d) > 64) return false;
  if (!smallc_dgrad_brick(p, s)) return false;
  s->split = split_tf32(t, m);
  s->tiles_h = ceil_div(p.in[1], s->th);
  s->tiles_w = ceil_div(p.in[2], s->tw);
  const int64_t columns = p.batch * s->tiles_h * s->tiles_w;
  const int64_t want = columns > 0 ? ceil_div(kSmallCDgradTargetBlocks, columns) : 1;
  // Enough blocks to fill the card, but chunks of at least twice the D halo (at most 1.5x the planes of dy).
  s->dz = std::max(ceil_div(p.in[0], std::max<int64_t>(1, std::min<int64_t>(want, p.in[0]))),
                   std::min<int64_t>(p.in[0], 2 * (p.span(0) - 1)));
  s->dchunks = ceil_div(p.in[0], s->dz);
  s->blocks = columns * s->dchunks;
  const size_t ring = size_t(p.span(0)) * size_t(p.in_channels) * size_t(s->th) * size_t(s->tw) * 4;
  const size_t fixed = 1024 + smallc_dgrad_filter_bytes(s->nr, s->split, dtype_size(t)) + ring;
  const size_t limit = kSmallCDgradSmemLimit;
  s->ps = smallc_dgrad_p_stride(s->nr, p.in_channels, p.layout == Layout::kNDHWC, dtype_size(t));
  s->pbufs = fixed + 2 * smallc_dgrad_p_bytes(s->ps) <= limit ? 2 : 1;
  s->smem = fixed + s->pbufs * smallc_dgrad_p_bytes(s->ps);
  return ring <= (48u << 10) && s->smem <= limit && s->blocks < (int64_t(1) << 31);
}

bool accepts_dgrad_smallc(const ConvProblem& p, DType t, MathMode m) {
  SmallCDgrad s;
  return smallc_dgrad_plan(p, t, m, &s);
}

std::string tile_dgrad_smallc(const ConvProblem& p, DType t, MathMode m) {
  SmallCDgrad s;
  if (!smallc_dgrad_plan(p, t, m, &s)) return "";
  return "regs_dy_wgmma_" + std::to_string(kSmallCDgradRows) + "x" + std::to_string(s.nr) + "x64" +
         (s.split ? "_3xtf32" : "") + "_taps_summed_brick" + std::to_string(s.tw) + "x" + std::to_string(s.th) +
         "_dz" + std::to_string(s.dz) + "_ps" + std::to_string(s.ps);
}

size_t smallc_wgrad_workspace_bytes(const ConvProblem& p, DType t, MathMode m) {
  SmallCWgrad s, r;
  if (!smallc_wgrad_plan(p, t, m, &s) || !smallc_wgrad_plan(p, t, m, &r, false)) return 0;
  return align256(size_t(std::max(s.splits, r.splits)) * size_t(s.rb * 64) * 64 * 4);
}

bool accepts_wgrad_smallc(const ConvProblem& p, DType t, MathMode m) {
  SmallCWgrad s;
  return smallc_wgrad_plan(p, t, m, &s);
}

std::string tile_wgrad_smallc(const ConvProblem& p, DType t, MathMode m) {
  SmallCWgrad s;
  if (!smallc_wgrad_plan(p, t, m, &s)) return "";
  return std::string(s.halo ? "regs_halo_wgmma_" : "regs_im2col_wgmma_") + std::to_string(64 * s.rb) + "x64x" +
         std::to_string(s.tile) + (s.split ? "_3xtf32" : "") + "_split" + std::to_string(s.splits);
}

bool accepts_fwd_smallc(const ConvProblem& p, DType t, MathMode m) {
  SmallC s;
  return smallc_plan(p, t, m, &s);
}

std::string tile_fwd_smallc(const ConvProblem& p, DType t, MathMode m) {
  SmallC s;
  if (!smallc_plan(p, t, m, &s)) return "";
  const int step = dtype_size(t) == 2 ? 16 : 8;
  return "regs_im2col_wgmma_64x" + std::to_string(64 * s.nblocks) + "_k" + std::to_string(s.steps * step) +
         (s.split ? "_3xtf32" : "");
}

std::string tile_fwd(const ConvProblem& p, DType t, MathMode m) {
  Fold f;
  if (first_layer_fold(p, t, m, &f)) return tile_fwd(f.folded, t, m) + fold_suffix(f);
  const int out[3] = {int(p.out[0]), int(p.out[1]), int(p.out[2])};
  const int step[3] = {int(p.stride[0]), int(p.stride[1]), int(p.stride[2])};
  return kmajor_tile(out, step, fwd_bn(p, split_tf32(t, m)), split_tf32(t, m), tap_group(t, m, p.in_channels),
                     resident_filter(t, m, p.in_channels, p.out_channels, p.taps()));
}
std::string tile_dgrad(const ConvProblem& p, DType t, MathMode m) {
  Fold f;
  if (first_layer_fold(p, t, m, &f)) return tile_dgrad(f.folded, t, m) + fold_suffix(f);
  const int out[3] = {int(p.in[0]), int(p.in[1]), int(p.in[2])};
  const int step[3] = {1, 1, 1};
  const int64_t classes = p.stride[0] * p.stride[1] * p.stride[2];
  return kmajor_tile(out, step, dgrad_bn(p, split_tf32(t, m)), split_tf32(t, m), tap_group(t, m, p.out_channels),
                     classes == 1 && resident_filter(t, m, p.out_channels, p.in_channels, p.taps())) +
         (classes > 1 ? "_residues" + std::to_string(classes) : "");
}
std::string tile_wgrad(const ConvProblem& p, DType t, MathMode m) {
  Fold f;
  if (first_layer_fold(p, t, m, &f)) return tile_wgrad(f.folded, t, m) + fold_suffix(f);
  const WgradSplit s = wgrad_split(p, t);
  Brick b;
  if (wgrad_bf16x3(p, t, m))
    return "tma_bf16x3_wgmma_128x" + std::to_string(wgrad_bn(p)) + "x64_mnmajor_split" + std::to_string(s.splits);
  const char* kind = t == DType::kF32 ? "tma_tf32_wgmma_128x" : wgrad_tma(p, t, &b) ? "tma_wgmma_128x" : "gather_wgmma_128x";
  return std::string(kind) + std::to_string(wgrad_bn(p)) +
         (t == DType::kF32 ? "x64_smem_transposed_split" : "x64_mnmajor_split") + std::to_string(s.splits);
}

}  // namespace hopper
}  // namespace jaxconv3d
