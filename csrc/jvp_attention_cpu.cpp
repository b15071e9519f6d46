// CPU kernel of fused JVP attention: one tiled pass computing O, Odot, LSE and mu (forward), and the
// tiled recomputing backward through O and Odot (or through O only). OpenMP (at::parallel_for) over
// batch x heads x query tiles in the forward and over batch x kv-heads in the backward (each task owns
// its dK/dV rows, so no reduction is needed for grouped-query heads). Tile GEMMs are plain row-major
// C (+)= A B products (gemm_nn: torch's oneDNN fp32 micro-kernel, dgemm_ for double); the per-row work
// uses at::vec and the shared tile math.
//
// Operand packing, so that no GEMM needs a transpose or a scale: per kv-head, keys and values are
// transposed tile by tile as [K^T; Kdot^T] and [V^T; Vdot^T]; per query tile, rows are packed as
// [c Qdot, c Q] and [G, H]. One GEMM of inner dimension 2 D then gives Sdot = c (Qdot K^T + Q Kdot^T)
// and one of inner dimension D gives S. The backward also packs the transposed pairs [c Q^T, c Qdot^T]
// and [G^T, H^T] and accumulates dK^T and dV^T, so [P; Pdot] and [dS; dSdot] (stacked rows) feed one
// GEMM each (10 GEMM calls, 15 GEMM-equivalents per tile; the forward: 5 calls, 6 equivalents).
#include "jvp_attention.h"
#include "jvp_attention_tile.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/native/CPUBlas.h>

#include <algorithm>
#include <cmath>
#include <vector>

extern "C" {
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc);
}

namespace flowcore {
namespace {

using at::vec::Vectorized;

constexpr int64_t kBlockM = 128;  // query rows per tile
constexpr int64_t kBlockN = 256;  // keys per tile (512 was no faster; 128 x 512 fp32 [s | sdot] rows stay in L2)

// Handles the GEMMs with an empty dimension (C = 0 + beta C when K = 0); returns whether it did.
template <typename T>
bool degenerate_gemm(int64_t m, int64_t n, int64_t k, T* c, int64_t ldc, bool accumulate) {
  if (m > 0 && n > 0 && k > 0) return false;
  if (k == 0 && !accumulate)
    for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, T(0));
  return true;
}

// Row-major C (M x N) = A B (+ C when `accumulate`), A M x K, B K x N, no transposes and no scaling.
// float runs torch's oneDNN fp32 micro-kernel (cpublas::brgemm, which uses the ISA oneDNN detects,
// AVX-512 included, and falls back to BLAS where oneDNN cannot run); on this project's AVX-512 CPUs
// it ran 2x faster than sgemm_ on the tile shapes. double runs dgemm_ on the column-major C^T = B^T A^T.
inline void gemm_nn(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                    float* c, int64_t ldc, bool accumulate) {
  if (degenerate_gemm(m, n, k, c, ldc, accumulate)) return;
  at::native::cpublas::brgemm(m, n, k, lda, ldb, ldc, accumulate, a, b, c, /*is_vnni=*/false);
}
inline void gemm_nn(int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb,
                    double* c, int64_t ldc, bool accumulate) {
  if (degenerate_gemm(m, n, k, c, ldc, accumulate)) return;
  const char no = 'N';
  const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
  const int ilda = static_cast<int>(lda), ildb = static_cast<int>(ldb), ildc = static_cast<int>(ldc);
  const double one = 1.0, beta = accumulate ? 1.0 : 0.0;
  dgemm_(&no, &no, &in, &im, &ik, &one, b, &ildb, a, &ilda, &beta, c, &ildc);
}

template <typename T>
T vec_row_max(const T* x, int64_t n) {
  using Vec = Vectorized<T>;
  T result = tile::neg_inf<T>();
  int64_t j = 0;
  if (n >= Vec::size()) {
    Vec acc = Vec::loadu(x);
    for (j = Vec::size(); j + Vec::size() <= n; j += Vec::size()) acc = at::vec::maximum(acc, Vec::loadu(x + j));
    T lanes[Vec::size()];
    acc.store(lanes);
    for (int64_t t = 0; t < Vec::size(); ++t) result = std::max(result, lanes[t]);
    j = (n / Vec::size()) * Vec::size();
  }
  for (; j < n; ++j) result = std::max(result, x[j]);
  return result;
}

template <typename T>
T vec_dot(const T* a, const T* b, int64_t n) {
  using Vec = Vectorized<T>;
  Vec acc(T(0));
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) acc = acc + Vec::loadu(a + j) * Vec::loadu(b + j);
  T lanes[Vec::size()];
  acc.store(lanes);
  T result = T(0);
  for (int64_t t = 0; t < Vec::size(); ++t) result += lanes[t];
  for (; j < n; ++j) result += a[j] * b[j];
  return result;
}

template <typename T>
void vec_scale(T* x, int64_t n, T factor) {
  using Vec = Vectorized<T>;
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) (Vec::loadu(x + j) * Vec(factor)).store(x + j);
  for (; j < n; ++j) x[j] *= factor;
}

struct ScalarExp {
  template <typename T>
  T operator()(T x) const { return std::exp(x); }
};
struct ScalarLog {
  template <typename T>
  T operator()(T x) const { return std::log(x); }
};

// Problem geometry of one call; tensors are contiguous (B, H, L, D).
struct Geometry {
  int64_t batch, heads, kv_heads, len_q, len_k, dim_qk, dim_v;
  bool causal;
  double scale;
  int64_t group() const { return heads / kv_heads; }
};

Geometry geometry_of(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale) {
  return Geometry{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3), v.size(3), causal, scale};
}

// Sets scores hidden from query `row` to -inf in a tile of keys [j0, j0 + n): causal (top-left) and the
// key-padding columns `masked_cols` (tile-local indices).
template <typename T>
void mask_scores(T* s, int64_t row, int64_t j0, int64_t n, bool causal,
                 const std::vector<int64_t>& masked_cols) {
  if (causal) {
    for (int64_t jj = std::max<int64_t>(row - j0 + 1, 0); jj < n; ++jj) s[jj] = tile::neg_inf<T>();
  }
  for (int64_t jj : masked_cols) s[jj] = tile::neg_inf<T>();
}

void masked_columns(const bool* mask_row, int64_t j0, int64_t n, std::vector<int64_t>& out) {
  out.clear();
  if (mask_row == nullptr) return;
  for (int64_t jj = 0; jj < n; ++jj)
    if (!mask_row[j0 + jj]) out.push_back(jj);
}

// One row of one key tile in the forward: p~ = exp(s - shift) replaces s, p~ sdot replaces sdot.
// Returns alpha, the factor by which the row's accumulators must be rescaled.
template <typename T, bool kTangent>
T forward_row_update(T* s, T* sdot, int64_t n, tile::RowState<T>& st) {
  using Vec = Vectorized<T>;
  T alpha;
  const T shift = tile::row_rescale(st, vec_row_max(s, n), &alpha, ScalarExp());
  const Vec vshift(shift);
  Vec vsum_p(T(0)), vsum_ps(T(0));
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) {
    const Vec p = (Vec::loadu(s + j) - vshift).exp_u20();
    p.store(s + j);
    vsum_p = vsum_p + p;
    if constexpr (kTangent) {
      const Vec ps = p * Vec::loadu(sdot + j);
      ps.store(sdot + j);
      vsum_ps = vsum_ps + ps;
    }
  }
  T lanes_p[Vec::size()], lanes_ps[Vec::size()];
  vsum_p.store(lanes_p);
  vsum_ps.store(lanes_ps);
  T sum_p = T(0), sum_ps = T(0);
  for (int64_t t = 0; t < Vec::size(); ++t) {
    sum_p += lanes_p[t];
    sum_ps += lanes_ps[t];
  }
  for (; j < n; ++j) {
    const T p = std::exp(s[j] - shift);
    s[j] = p;
    sum_p += p;
    if constexpr (kTangent) {
      sdot[j] = p * sdot[j];
      sum_ps += sdot[j];
    }
  }
  tile::row_accumulate(st, sum_p, sum_ps);
  return alpha;
}

// dst (cols x rows, leading dimension ldd) = c src^T for a row-major src (rows x cols, leading
// dimension lds).
template <typename T>
void transpose(const T* src, int64_t rows, int64_t cols, int64_t lds, T* dst, int64_t ldd, T c) {
  constexpr int64_t kStrip = 16;  // rows per strip, so the writes of one strip share cache lines
  for (int64_t i0 = 0; i0 < rows; i0 += kStrip) {
    const int64_t i1 = std::min(rows, i0 + kStrip);
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t i = i0; i < i1; ++i) dst[j * ldd + i] = c * src[i * lds + j];
  }
}

// Keys (or values) of one (batch, kv-head), transposed and packed per key tile so that the GEMMs read
// a plain row-major right operand: tile t holds [X^T; Xdot^T] (2 dim x kBlockN; X^T alone without the
// tangent) for the keys [t kBlockN, t kBlockN + bn). A thread keeps the last head it packed, and
// consecutive tasks of at::parallel_for mostly share a head.
template <typename T, bool kTangent>
class TransposedTiles {
 public:
  static constexpr int64_t kParts = kTangent ? 2 : 1;

  TransposedTiles(int64_t len_k, int64_t dim)
      : dim_(dim), data_(((len_k + kBlockN - 1) / kBlockN) * kParts * dim * kBlockN) {}

  void pack(int64_t head, const T* x, const T* tx, int64_t len_k) {
    if (head == head_) return;
    head_ = head;
    for (int64_t j0 = 0; j0 < len_k; j0 += kBlockN) {
      const int64_t bn = std::min(kBlockN, len_k - j0);
      T* dst = data_.data() + (j0 / kBlockN) * kParts * dim_ * kBlockN;
      transpose(x + j0 * dim_, bn, dim_, dim_, dst, kBlockN, T(1));
      if constexpr (kTangent) transpose(tx + j0 * dim_, bn, dim_, dim_, dst + dim_ * kBlockN, kBlockN, T(1));
    }
  }

  const T* tile(int64_t j0) const { return data_.data() + (j0 / kBlockN) * kParts * dim_ * kBlockN; }

 private:
  int64_t dim_;
  int64_t head_ = -1;
  std::vector<T> data_;
};

// dst[0, n) = c src[0, n).
template <typename T>
void scaled_copy(const T* src, int64_t n, T c, T* dst) {
  using Vec = Vectorized<T>;
  int64_t d = 0;
  for (; d + Vec::size() <= n; d += Vec::size()) (Vec::loadu(src + d) * Vec(c)).store(dst + d);
  for (; d < n; ++d) dst[d] = c * src[d];
}

// Row i of `out` is [c first_i, c second_i] (2 dim wide; c second_i alone when first is null), for
// rows x dim row-major inputs. With a TransposedTiles tile this gives, e.g. for the scores,
//   S = [c Q] K^T  and  Sdot = [c Qdot, c Q] [K^T; Kdot^T] = c (Qdot K^T + Q Kdot^T).
template <typename T>
void pack_row_pairs(const T* first, const T* second, int64_t rows, int64_t dim, T c, T* out) {
  const int64_t width = first == nullptr ? dim : 2 * dim;
  for (int64_t i = 0; i < rows; ++i) {
    if (first != nullptr) scaled_copy(first + i * dim, dim, c, out + i * width);
    scaled_copy(second + i * dim, dim, c, out + i * width + width - dim);
  }
}

template <typename T, bool kTangent>
void forward_kernel(const Geometry& g, const T* q, const T* k, const T* v, const T* tq, const T* tk,
                    const T* tv, const bool* mask, T* out, T* tout, T* lse, T* mu) {
  const int64_t D = g.dim_qk, Dv = g.dim_v, BM = kBlockM, BN = kBlockN;
  const int64_t qw = kTangent ? 2 * D : D;   // width of a packed query row
  const int64_t ls = kTangent ? 2 * BN : BN;  // leading dimension of the score rows [s | sdot]
  const int64_t num_q_tiles = (g.len_q + BM - 1) / BM;
  const T c = static_cast<T>(g.scale);
  at::parallel_for(0, g.batch * g.heads * num_q_tiles, 1, [&](int64_t begin, int64_t end) {
    TransposedTiles<T, kTangent> keys(g.len_k, D);
    std::vector<T> qs(BM * qw), ss(BM * ls), acc((kTangent ? 2 : 1) * BM * Dv);
    std::vector<tile::RowState<T>> rows(BM);
    std::vector<int64_t> masked;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (g.heads * num_q_tiles), h = (task / num_q_tiles) % g.heads;
      const int64_t i0 = (task % num_q_tiles) * BM, bm = std::min(BM, g.len_q - i0);
      const int64_t bh = b * g.heads + h, bhk = b * g.kv_heads + h / g.group();
      const T* v_h = v + bhk * g.len_k * Dv;
      const T* tv_h = kTangent ? tv + bhk * g.len_k * Dv : nullptr;
      const bool* mask_row = mask == nullptr ? nullptr : mask + b * g.len_k;
      keys.pack(bhk, k + bhk * g.len_k * D, kTangent ? tk + bhk * g.len_k * D : nullptr, g.len_k);
      pack_row_pairs<T>(kTangent ? tq + (bh * g.len_q + i0) * D : nullptr, q + (bh * g.len_q + i0) * D, bm, D,
                        c, qs.data());
      T* acc_o = acc.data();
      T* acc_t = acc.data() + bm * Dv;
      std::fill(acc.begin(), acc.begin() + (kTangent ? 2 : 1) * bm * Dv, T(0));
      std::fill(rows.begin(), rows.end(), tile::row_state_init<T>());
      const int64_t key_end = tile::causal_key_end(i0 + bm - 1, g.len_k, g.causal);
      for (int64_t j0 = 0; j0 < key_end; j0 += BN) {
        const int64_t bn = std::min(BN, key_end - j0);
        const T* kt = keys.tile(j0);
        // Score rows [s | sdot]: s in columns [0, bn), sdot in [bn, 2 bn).
        gemm_nn(bm, bn, D, qs.data() + qw - D, qw, kt, BN, ss.data(), ls, false);
        if constexpr (kTangent) gemm_nn(bm, bn, 2 * D, qs.data(), qw, kt, BN, ss.data() + bn, ls, false);
        masked_columns(mask_row, j0, bn, masked);
        for (int64_t ii = 0; ii < bm; ++ii) {
          T* s_row = ss.data() + ii * ls;
          mask_scores(s_row, i0 + ii, j0, bn, g.causal, masked);
          const T alpha = forward_row_update<T, kTangent>(s_row, s_row + bn, bn, rows[ii]);
          if (alpha != T(1)) {
            vec_scale(acc_o + ii * Dv, Dv, alpha);
            if constexpr (kTangent) vec_scale(acc_t + ii * Dv, Dv, alpha);
          }
        }
        // accO += p~ V,  accT += (p~ o sdot) V + p~ Vdot
        gemm_nn(bm, Dv, bn, ss.data(), ls, v_h + j0 * Dv, Dv, acc_o, Dv, true);
        if constexpr (kTangent) {
          gemm_nn(bm, Dv, bn, ss.data() + bn, ls, v_h + j0 * Dv, Dv, acc_t, Dv, true);
          gemm_nn(bm, Dv, bn, ss.data(), ls, tv_h + j0 * Dv, Dv, acc_t, Dv, true);
        }
      }
      using Vec = Vectorized<T>;
      for (int64_t ii = 0; ii < bm; ++ii) {
        const auto ep = tile::row_epilogue(rows[ii], ScalarLog());
        const int64_t row = bh * g.len_q + i0 + ii;
        lse[row] = ep.lse;
        T* o = out + row * Dv;
        scaled_copy(acc_o + ii * Dv, Dv, ep.inv_l, o);
        if constexpr (kTangent) {
          mu[row] = ep.mu;
          T* to = tout + row * Dv;
          const T* a_t = acc_t + ii * Dv;
          int64_t d = 0;
          for (; d + Vec::size() <= Dv; d += Vec::size()) {
            tile::tangent_output(Vec::loadu(a_t + d), Vec::loadu(o + d), Vec(ep.inv_l), Vec(ep.mu)).store(to + d);
          }
          for (; d < Dv; ++d) to[d] = tile::tangent_output(a_t[d], o[d], ep.inv_l, ep.mu);
        }
      }
    }
  });
}

// One row of one key tile in the backward. On entry s = S, sdot = Sdot (kTangent), gv = G V^T (+ H Vdot^T),
// hv = H V^T. On exit: p = P, pdot = Pdot, s = dS, sdot = dSdot.
template <typename T, bool kTangent>
void backward_row_update(T* s, T* sdot, const T* gv, const T* hv, T* p_out, T* pdot_out, int64_t n,
                         T lse, T mu, T x_offset, T y_offset) {
  using Vec = Vectorized<T>;
  int64_t j = 0;
  for (; j + Vec::size() <= n; j += Vec::size()) {
    const Vec p = (Vec::loadu(s + j) - Vec(lse)).exp_u20();
    p.store(p_out + j);
    const Vec x = Vec::loadu(gv + j) - Vec(x_offset);
    if constexpr (kTangent) {
      const auto gr = tile::score_grads(p, Vec::loadu(sdot + j) - Vec(mu), x, Vec::loadu(hv + j) - Vec(y_offset));
      gr.pdot.store(pdot_out + j);
      gr.ds.store(s + j);
      gr.dsdot.store(sdot + j);
    } else {
      tile::score_grad_primal(p, x).store(s + j);
    }
  }
  for (; j < n; ++j) {
    const T p = std::exp(s[j] - lse);
    p_out[j] = p;
    const T x = gv[j] - x_offset;
    if constexpr (kTangent) {
      const auto gr = tile::score_grads(p, sdot[j] - mu, x, hv[j] - y_offset);
      pdot_out[j] = gr.pdot;
      s[j] = gr.ds;
      sdot[j] = gr.dsdot;
    } else {
      s[j] = tile::score_grad_primal(p, x);
    }
  }
}

// Row d of `out` is [c first^T_d, c second^T_d] (2 rows wide; c first^T_d alone when second is null),
// for rows x dim row-major inputs: the left operand of the GEMMs that reduce over query rows.
template <typename T>
void pack_transposed_pairs(const T* first, const T* second, int64_t rows, int64_t dim, T c, T* out) {
  const int64_t width = second == nullptr ? rows : 2 * rows;
  transpose(first, rows, dim, dim, out, width, c);
  if (second != nullptr) transpose(second, rows, dim, dim, out + rows, width, c);
}

// Gradients of one (batch, kv-head) w.r.t. its keys and values, accumulated transposed and per key
// tile (dim x kBlockN each) so that every GEMM writes a plain row-major tile.
template <typename T>
class TransposedGrads {
 public:
  TransposedGrads(int64_t len_k, int64_t dim) : dim_(dim), data_(((len_k + kBlockN - 1) / kBlockN) * dim * kBlockN) {}

  void zero() { std::fill(data_.begin(), data_.end(), T(0)); }
  T* tile(int64_t j0) { return data_.data() + (j0 / kBlockN) * dim_ * kBlockN; }

  // grad (len_k x dim, row-major) = the accumulated transposes.
  void store(T* grad, int64_t len_k) {
    for (int64_t j0 = 0; j0 < len_k; j0 += kBlockN)
      transpose(tile(j0), dim_, std::min(kBlockN, len_k - j0), kBlockN, grad + j0 * dim_, dim_, T(1));
  }

 private:
  int64_t dim_;
  std::vector<T> data_;
};

// Backward by query tiles within a kv-head task; per key tile, with the row-major operands packed above:
//   S = [cQ] K^T,  Sdot = [cQdot, cQ] [K^T; Kdot^T],  [x; y] = [[G, H] [V^T; Vdot^T]; H V^T]
//   dV^T += [G^T, H^T] [P; Pdot],  dVdot^T += H^T P
//   dK^T += [cQ^T, cQdot^T] [dS; dSdot],  dKdot^T += cQ^T dSdot
//   [dQ, dQdot] += [dSdot Kdot, dSdot K] + [dS K, 0]  (scaled by c when stored)
// (without the tangent only S, x = G V^T, dV^T, dK^T and dQ).
template <typename T, bool kTangent>
void backward_kernel(const Geometry& g, const T* q, const T* k, const T* v, const T* tq, const T* tk,
                     const T* tv, const bool* mask, const T* out, const T* tout, const T* lse,
                     const T* mu, const T* grad_out, const T* grad_tout, T* dq, T* dk, T* dv, T* dtq,
                     T* dtk, T* dtv) {
  const int64_t D = g.dim_qk, Dv = g.dim_v, BM = kBlockM, BN = kBlockN;
  constexpr int64_t parts = kTangent ? 2 : 1;
  const int64_t qw = parts * D, gw = parts * Dv;  // widths of the packed query / gradient rows
  const T c = static_cast<T>(g.scale);
  at::parallel_for(0, g.batch * g.kv_heads, 1, [&](int64_t begin, int64_t end) {
    TransposedTiles<T, kTangent> keys_t(g.len_k, D), values_t(g.len_k, Dv);
    TransposedGrads<T> dk_t(g.len_k, D), dv_t(g.len_k, Dv), dtk_t(kTangent ? g.len_k : 0, D),
        dtv_t(kTangent ? g.len_k : 0, Dv);
    std::vector<T> key_rows(kTangent ? g.len_k * qw : 0);  // row j = [Kdot_j, K_j]
    std::vector<T> qs(BM * qw), qt(BM * qw), gh(BM * gw), ght(BM * gw);
    std::vector<T> ss(2 * BM * BN), gg(2 * BM * BN), pp(2 * BM * BN), dqq(BM * qw);
    std::vector<T> x_off(BM), y_off(BM);
    std::vector<int64_t> masked;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / g.kv_heads, bhk = task;
      const T* k_h = k + bhk * g.len_k * D;
      const T* v_h = v + bhk * g.len_k * Dv;
      const T* tk_h = kTangent ? tk + bhk * g.len_k * D : nullptr;
      const T* tv_h = kTangent ? tv + bhk * g.len_k * Dv : nullptr;
      const bool* mask_row = mask == nullptr ? nullptr : mask + b * g.len_k;
      keys_t.pack(bhk, k_h, tk_h, g.len_k);
      values_t.pack(bhk, v_h, tv_h, g.len_k);
      if constexpr (kTangent) pack_row_pairs<T>(tk_h, k_h, g.len_k, D, T(1), key_rows.data());
      const T* k_rows = kTangent ? key_rows.data() : k_h;
      dk_t.zero();
      dv_t.zero();
      if constexpr (kTangent) {
        dtk_t.zero();
        dtv_t.zero();
      }
      for (int64_t h = (bhk % g.kv_heads) * g.group(); h < (bhk % g.kv_heads + 1) * g.group(); ++h) {
        const int64_t bh = b * g.heads + h;
        for (int64_t i0 = 0; i0 < g.len_q; i0 += BM) {
          const int64_t bm = std::min(BM, g.len_q - i0), row0 = bh * g.len_q + i0;
          const T* q_t = q + row0 * D;
          const T* tq_t = kTangent ? tq + row0 * D : nullptr;
          const T* g_t = grad_out + row0 * Dv;
          const T* h_t = kTangent ? grad_tout + row0 * Dv : nullptr;
          pack_row_pairs<T>(tq_t, q_t, bm, D, c, qs.data());                         // [cQdot, cQ]
          pack_row_pairs<T>(kTangent ? g_t : nullptr, kTangent ? h_t : g_t, bm, Dv, T(1), gh.data());  // [G, H]
          pack_transposed_pairs<T>(q_t, tq_t, bm, D, c, qt.data());                  // [cQ^T, cQdot^T]
          pack_transposed_pairs<T>(g_t, h_t, bm, Dv, T(1), ght.data());              // [G^T, H^T]
          // Row statistics: x_off = Delta + E = G.O + H.Odot,  y_off = D = H.O.
          for (int64_t ii = 0; ii < bm; ++ii) {
            const int64_t row = row0 + ii;
            x_off[ii] = vec_dot(grad_out + row * Dv, out + row * Dv, Dv);
            if constexpr (kTangent) {
              x_off[ii] += vec_dot(grad_tout + row * Dv, tout + row * Dv, Dv);
              y_off[ii] = vec_dot(grad_tout + row * Dv, out + row * Dv, Dv);
            }
          }
          std::fill(dqq.begin(), dqq.begin() + bm * qw, T(0));
          const int64_t key_end = tile::causal_key_end(i0 + bm - 1, g.len_k, g.causal);
          for (int64_t j0 = 0; j0 < key_end; j0 += BN) {
            const int64_t bn = std::min(BN, key_end - j0);
            const T* kt = keys_t.tile(j0);
            const T* vt = values_t.tile(j0);
            T* s_top = ss.data();
            T* s_bot = ss.data() + bm * BN;
            T* g_top = gg.data();
            T* g_bot = gg.data() + bm * BN;
            gemm_nn(bm, bn, D, qs.data() + qw - D, qw, kt, BN, s_top, BN, false);
            gemm_nn(bm, bn, gw, gh.data(), gw, vt, BN, g_top, BN, false);
            if constexpr (kTangent) {
              gemm_nn(bm, bn, 2 * D, qs.data(), qw, kt, BN, s_bot, BN, false);
              gemm_nn(bm, bn, Dv, gh.data() + Dv, gw, vt, BN, g_bot, BN, false);
            }
            masked_columns(mask_row, j0, bn, masked);
            for (int64_t ii = 0; ii < bm; ++ii) {
              const int64_t row = row0 + ii;
              mask_scores(s_top + ii * BN, i0 + ii, j0, bn, g.causal, masked);
              backward_row_update<T, kTangent>(s_top + ii * BN, s_bot + ii * BN, g_top + ii * BN, g_bot + ii * BN,
                                               pp.data() + ii * BN, pp.data() + (bm + ii) * BN, bn, lse[row],
                                               kTangent ? mu[row] : T(0), x_off[ii], kTangent ? y_off[ii] : T(0));
            }
            const int64_t rw = parts * bm;  // width of the transposed pairs
            gemm_nn(Dv, bn, rw, ght.data(), rw, pp.data(), BN, dv_t.tile(j0), BN, true);
            gemm_nn(D, bn, rw, qt.data(), rw, ss.data(), BN, dk_t.tile(j0), BN, true);
            gemm_nn(bm, D, bn, s_top, BN, k_rows + j0 * qw + qw - D, qw, dqq.data(), qw, true);
            if constexpr (kTangent) {
              gemm_nn(Dv, bn, bm, ght.data() + bm, rw, pp.data(), BN, dtv_t.tile(j0), BN, true);
              gemm_nn(D, bn, bm, qt.data(), rw, s_bot, BN, dtk_t.tile(j0), BN, true);
              gemm_nn(bm, 2 * D, bn, s_bot, BN, k_rows + j0 * qw, qw, dqq.data(), qw, true);
            }
          }
          for (int64_t ii = 0; ii < bm; ++ii) {
            scaled_copy(dqq.data() + ii * qw, D, c, dq + (row0 + ii) * D);
            if constexpr (kTangent) scaled_copy(dqq.data() + ii * qw + D, D, c, dtq + (row0 + ii) * D);
          }
        }
      }
      dk_t.store(dk + bhk * g.len_k * D, g.len_k);
      dv_t.store(dv + bhk * g.len_k * Dv, g.len_k);
      if constexpr (kTangent) {
        dtk_t.store(dtk + bhk * g.len_k * D, g.len_k);
        dtv_t.store(dtv + bhk * g.len_k * Dv, g.len_k);
      }
    }
  });
}

// Kernels run in float or double; half and bfloat16 inputs are computed in float and cast back.
at::ScalarType compute_type(const Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

Tensor prepared(const Tensor& x, at::ScalarType type) { return x.to(type).contiguous(); }

const bool* mask_ptr(const std::optional<Tensor>& mask, Tensor& holder) {
  if (!mask.has_value()) return nullptr;
  holder = mask->contiguous();
  return holder.data_ptr<bool>();
}

}  // namespace

std::tuple<Tensor, Tensor> attn_fwd_cpu(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                        const std::optional<Tensor>& key_padding_mask, bool causal,
                                        double scale) {
  check_attention_inputs(q_in, k_in, v_in, key_padding_mask);
  const auto type = compute_type(q_in);
  const Tensor q = prepared(q_in, type), k = prepared(k_in, type), v = prepared(v_in, type);
  const Geometry g = geometry_of(q, k, v, causal, scale);
  Tensor out = at::empty({g.batch, g.heads, g.len_q, g.dim_v}, q.options());
  Tensor lse = at::empty({g.batch, g.heads, g.len_q}, q.options());
  Tensor mask_holder;
  const bool* mask = mask_ptr(key_padding_mask, mask_holder);
  AT_DISPATCH_FLOATING_TYPES(type, "flowcore_attn_fwd_cpu", [&] {
    forward_kernel<scalar_t, false>(g, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                    nullptr, nullptr, nullptr, mask, out.data_ptr<scalar_t>(), nullptr,
                                    lse.data_ptr<scalar_t>(), nullptr);
  });
  return {out.to(q_in.scalar_type()), lse};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> attn_fwd_jvp_cpu(
    const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& tq_in, const Tensor& tk_in,
    const Tensor& tv_in, const std::optional<Tensor>& key_padding_mask, bool causal, double scale) {
  check_attention_inputs(q_in, k_in, v_in, key_padding_mask);
  check_tangents(q_in, k_in, v_in, tq_in, tk_in, tv_in);
  const auto type = compute_type(q_in);
  const Tensor q = prepared(q_in, type), k = prepared(k_in, type), v = prepared(v_in, type);
  const Tensor tq = prepared(tq_in, type), tk = prepared(tk_in, type), tv = prepared(tv_in, type);
  const Geometry g = geometry_of(q, k, v, causal, scale);
  Tensor out = at::empty({g.batch, g.heads, g.len_q, g.dim_v}, q.options());
  Tensor tout = at::empty_like(out);
  Tensor lse = at::empty({g.batch, g.heads, g.len_q}, q.options());
  Tensor mu = at::empty_like(lse);
  Tensor mask_holder;
  const bool* mask = mask_ptr(key_padding_mask, mask_holder);
  AT_DISPATCH_FLOATING_TYPES(type, "flowcore_attn_fwd_jvp_cpu", [&] {
    forward_kernel<scalar_t, true>(g, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                   tq.data_ptr<scalar_t>(), tk.data_ptr<scalar_t>(), tv.data_ptr<scalar_t>(),
                                   mask, out.data_ptr<scalar_t>(), tout.data_ptr<scalar_t>(),
                                   lse.data_ptr<scalar_t>(), mu.data_ptr<scalar_t>());
  });
  const auto io = q_in.scalar_type();
  return {out.to(io), tout.to(io), lse, mu};
}

std::tuple<Tensor, Tensor, Tensor> attn_bwd_cpu(const Tensor& grad_out_in, const Tensor& q_in,
                                                const Tensor& k_in, const Tensor& v_in,
                                                const Tensor& out_in, const Tensor& lse_in,
                                                const std::optional<Tensor>& key_padding_mask,
                                                bool causal, double scale) {
  check_attention_inputs(q_in, k_in, v_in, key_padding_mask);
  const auto type = compute_type(q_in);
  const Tensor q = prepared(q_in, type), k = prepared(k_in, type), v = prepared(v_in, type);
  const Tensor out = prepared(out_in, type), lse = prepared(lse_in, type), go = prepared(grad_out_in, type);
  const Geometry g = geometry_of(q, k, v, causal, scale);
  Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  Tensor mask_holder;
  const bool* mask = mask_ptr(key_padding_mask, mask_holder);
  AT_DISPATCH_FLOATING_TYPES(type, "flowcore_attn_bwd_cpu", [&] {
    backward_kernel<scalar_t, false>(g, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                     nullptr, nullptr, nullptr, mask, out.data_ptr<scalar_t>(), nullptr,
                                     lse.data_ptr<scalar_t>(), nullptr, go.data_ptr<scalar_t>(), nullptr,
                                     dq.data_ptr<scalar_t>(), dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>(),
                                     nullptr, nullptr, nullptr);
  });
  return {dq.to(q_in.scalar_type()), dk.to(k_in.scalar_type()), dv.to(v_in.scalar_type())};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> attn_jvp_bwd_cpu(
    const Tensor& grad_out_in, const Tensor& grad_tout_in, const Tensor& q_in, const Tensor& k_in,
    const Tensor& v_in, const Tensor& tq_in, const Tensor& tk_in, const Tensor& tv_in,
    const Tensor& out_in, const Tensor& tout_in, const Tensor& lse_in, const Tensor& mu_in,
    const std::optional<Tensor>& key_padding_mask, bool causal, double scale) {
  check_attention_inputs(q_in, k_in, v_in, key_padding_mask);
  check_tangents(q_in, k_in, v_in, tq_in, tk_in, tv_in);
  const auto type = compute_type(q_in);
  const Tensor q = prepared(q_in, type), k = prepared(k_in, type), v = prepared(v_in, type);
  const Tensor tq = prepared(tq_in, type), tk = prepared(tk_in, type), tv = prepared(tv_in, type);
  const Tensor out = prepared(out_in, type), tout = prepared(tout_in, type);
  const Tensor lse = prepared(lse_in, type), mu = prepared(mu_in, type);
  const Tensor go = prepared(grad_out_in, type), gto = prepared(grad_tout_in, type);
  const Geometry g = geometry_of(q, k, v, causal, scale);
  Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  Tensor dtq = at::empty_like(q), dtk = at::empty_like(k), dtv = at::empty_like(v);
  Tensor mask_holder;
  const bool* mask = mask_ptr(key_padding_mask, mask_holder);
  AT_DISPATCH_FLOATING_TYPES(type, "flowcore_attn_jvp_bwd_cpu", [&] {
    backward_kernel<scalar_t, true>(g, q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                    tq.data_ptr<scalar_t>(), tk.data_ptr<scalar_t>(), tv.data_ptr<scalar_t>(),
                                    mask, out.data_ptr<scalar_t>(), tout.data_ptr<scalar_t>(),
                                    lse.data_ptr<scalar_t>(), mu.data_ptr<scalar_t>(), go.data_ptr<scalar_t>(),
                                    gto.data_ptr<scalar_t>(), dq.data_ptr<scalar_t>(), dk.data_ptr<scalar_t>(),
                                    dv.data_ptr<scalar_t>(), dtq.data_ptr<scalar_t>(), dtk.data_ptr<scalar_t>(),
                                    dtv.data_ptr<scalar_t>());
  });
  const auto io = q_in.scalar_type();
  return {dq.to(io), dk.to(io), dv.to(io), dtq.to(io), dtk.to(io), dtv.to(io)};
}

}  // namespace flowcore
