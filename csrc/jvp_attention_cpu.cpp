// CPU kernel of fused JVP attention: one tiled pass computing O, Odot, LSE and mu (forward), and the
// tiled recomputing backward through O and Odot (or through O only). OpenMP (at::parallel_for) over
// batch x heads x query tiles in the forward and over batch x kv-heads in the backward (each task owns
// its dK/dV rows, so no reduction is needed for grouped-query heads). Tile GEMMs call the BLAS that
// torch links (sgemm_/dgemm_); the per-row work uses at::vec and the shared tile math.
//
// GEMM fusion: queries and their tangents are stacked as [Q; Qdot] (2 BM x D), so one GEMM gives
// [S; Qdot K^T] and a second adds Q Kdot^T to the lower half. Probabilities are stacked as
// [p~; p~ o sdot] so one GEMM with V gives [accO; sum (p~ o sdot) V], and p~ Vdot accumulates into the
// lower half, since only their sum (accT) is needed. The backward stacks [G; H], [P; Pdot] and
// [dS; dSdot] the same way (10 GEMM calls, 15 GEMM-equivalents per tile).
#include "jvp_attention.h"
#include "jvp_attention_tile.h"

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc);
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc);
}

namespace flowcore {
namespace {

using at::vec::Vectorized;

constexpr int64_t kBlockM = 128;  // query rows per tile (128 ran faster than 64 in bench/jvp_attention.py on this machine)
constexpr int64_t kBlockN = 256;  // keys per tile (128 x 256 fp32 score tiles, x2 stacked, stay in L2)

// Column-major BLAS call.
inline void blas_gemm(char ta, char tb, int m, int n, int k, float alpha, const float* a, int lda,
                      const float* b, int ldb, float beta, float* c, int ldc) {
  sgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}
inline void blas_gemm(char ta, char tb, int m, int n, int k, double alpha, const double* a, int lda,
                      const double* b, int ldb, double beta, double* c, int ldc) {
  dgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

// Row-major C (M x N) = alpha op(A) op(B) + beta C, op(A) M x K, op(B) K x N; a transposed operand
// is stored as its transpose (K x M, K x N) row-major. Computed as the column-major C^T = op(B)^T op(A)^T.
template <typename T>
void gemm_rm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
             int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == T(0) ? T(0) : beta * c[i * ldc + j];
    return;
  }
  blas_gemm(trans_b ? 'T' : 'N', trans_a ? 'T' : 'N', static_cast<int>(n), static_cast<int>(m),
            static_cast<int>(k), alpha, b, static_cast<int>(ldb), a, static_cast<int>(lda), beta, c,
            static_cast<int>(ldc));
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

template <typename T, bool kTangent>
void forward_kernel(const Geometry& g, const T* q, const T* k, const T* v, const T* tq, const T* tk,
                    const T* tv, const bool* mask, T* out, T* tout, T* lse, T* mu) {
  const int64_t D = g.dim_qk, Dv = g.dim_v, BM = kBlockM, BN = kBlockN;
  const int64_t num_q_tiles = (g.len_q + BM - 1) / BM;
  const T c = static_cast<T>(g.scale);
  at::parallel_for(0, g.batch * g.heads * num_q_tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> qq(kTangent ? 2 * BM * D : 0), ss(2 * BM * BN), acc(2 * BM * Dv);
    std::vector<tile::RowState<T>> rows(BM);
    std::vector<int64_t> masked;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (g.heads * num_q_tiles), h = (task / num_q_tiles) % g.heads;
      const int64_t i0 = (task % num_q_tiles) * BM, bm = std::min(BM, g.len_q - i0);
      const int64_t bh = b * g.heads + h, bhk = b * g.kv_heads + h / g.group();
      const T* q_t = q + (bh * g.len_q + i0) * D;
      const T* k_h = k + bhk * g.len_k * D;
      const T* v_h = v + bhk * g.len_k * Dv;
      const bool* mask_row = mask == nullptr ? nullptr : mask + b * g.len_k;
      const T* a_scores = q_t;  // [Q] or [Q; Qdot]
      if constexpr (kTangent) {
        std::memcpy(qq.data(), q_t, sizeof(T) * bm * D);
        std::memcpy(qq.data() + bm * D, tq + (bh * g.len_q + i0) * D, sizeof(T) * bm * D);
        a_scores = qq.data();
      }
      const int64_t m_rows = kTangent ? 2 * bm : bm;
      T* s_top = ss.data();
      T* s_bot = ss.data() + bm * BN;
      std::fill(acc.begin(), acc.begin() + m_rows * Dv, T(0));
      std::fill(rows.begin(), rows.end(), tile::row_state_init<T>());
      const int64_t key_end = tile::causal_key_end(i0 + bm - 1, g.len_k, g.causal);
      for (int64_t j0 = 0; j0 < key_end; j0 += BN) {
        const int64_t bn = std::min(BN, key_end - j0);
        gemm_rm<T>(false, true, m_rows, bn, D, c, a_scores, D, k_h + j0 * D, D, T(0), s_top, BN);
        if constexpr (kTangent) {
          gemm_rm<T>(false, true, bm, bn, D, c, q_t, D, tk + bhk * g.len_k * D + j0 * D, D, T(1), s_bot, BN);
        }
        masked_columns(mask_row, j0, bn, masked);
        for (int64_t ii = 0; ii < bm; ++ii) {
          T* s_row = s_top + ii * BN;
          mask_scores(s_row, i0 + ii, j0, bn, g.causal, masked);
          const T alpha = forward_row_update<T, kTangent>(s_row, s_bot + ii * BN, bn, rows[ii]);
          if (alpha != T(1)) {
            vec_scale(acc.data() + ii * Dv, Dv, alpha);
            if constexpr (kTangent) vec_scale(acc.data() + (bm + ii) * Dv, Dv, alpha);
          }
        }
        gemm_rm<T>(false, false, m_rows, Dv, bn, T(1), s_top, BN, v_h + j0 * Dv, Dv, T(1), acc.data(), Dv);
        if constexpr (kTangent) {
          gemm_rm<T>(false, false, bm, Dv, bn, T(1), s_top, BN, tv + bhk * g.len_k * Dv + j0 * Dv, Dv, T(1),
                     acc.data() + bm * Dv, Dv);
        }
      }
      using Vec = Vectorized<T>;
      for (int64_t ii = 0; ii < bm; ++ii) {
        const auto ep = tile::row_epilogue(rows[ii], ScalarLog());
        const int64_t row = bh * g.len_q + i0 + ii;
        lse[row] = ep.lse;
        T* o = out + row * Dv;
        const T* a_o = acc.data() + ii * Dv;
        int64_t d = 0;
        for (; d + Vec::size() <= Dv; d += Vec::size()) (Vec::loadu(a_o + d) * Vec(ep.inv_l)).store(o + d);
        for (; d < Dv; ++d) o[d] = a_o[d] * ep.inv_l;
        if constexpr (kTangent) {
          mu[row] = ep.mu;
          T* to = tout + row * Dv;
          const T* a_t = acc.data() + (bm + ii) * Dv;
          d = 0;
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

template <typename T, bool kTangent>
void backward_kernel(const Geometry& g, const T* q, const T* k, const T* v, const T* tq, const T* tk,
                     const T* tv, const bool* mask, const T* out, const T* tout, const T* lse,
                     const T* mu, const T* grad_out, const T* grad_tout, T* dq, T* dk, T* dv, T* dtq,
                     T* dtk, T* dtv) {
  const int64_t D = g.dim_qk, Dv = g.dim_v, BM = kBlockM, BN = kBlockN;
  const T c = static_cast<T>(g.scale);
  at::parallel_for(0, g.batch * g.kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> qq(kTangent ? 2 * BM * D : 0), gh(kTangent ? 2 * BM * Dv : 0);
    std::vector<T> ss(2 * BM * BN), gg(2 * BM * BN), pp(2 * BM * BN), dqq(2 * BM * D);
    std::vector<T> x_off(BM), y_off(BM);
    std::vector<int64_t> masked;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / g.kv_heads, bhk = task;
      const T* k_h = k + bhk * g.len_k * D;
      const T* v_h = v + bhk * g.len_k * Dv;
      const T* tk_h = kTangent ? tk + bhk * g.len_k * D : nullptr;
      const T* tv_h = kTangent ? tv + bhk * g.len_k * Dv : nullptr;
      T* dk_h = dk + bhk * g.len_k * D;
      T* dv_h = dv + bhk * g.len_k * Dv;
      T* dtk_h = kTangent ? dtk + bhk * g.len_k * D : nullptr;
      T* dtv_h = kTangent ? dtv + bhk * g.len_k * Dv : nullptr;
      const bool* mask_row = mask == nullptr ? nullptr : mask + b * g.len_k;
      for (int64_t h = (bhk % g.kv_heads) * g.group(); h < (bhk % g.kv_heads + 1) * g.group(); ++h) {
        const int64_t bh = b * g.heads + h;
        for (int64_t i0 = 0; i0 < g.len_q; i0 += BM) {
          const int64_t bm = std::min(BM, g.len_q - i0), m_rows = kTangent ? 2 * bm : bm;
          const int64_t row0 = bh * g.len_q + i0;
          const T* q_t = q + row0 * D;
          const T* g_t = grad_out + row0 * Dv;
          const T* a_scores = q_t;  // [Q] or [Q; Qdot]
          const T* a_grads = g_t;   // [G] or [G; H]
          if constexpr (kTangent) {
            std::memcpy(qq.data(), q_t, sizeof(T) * bm * D);
            std::memcpy(qq.data() + bm * D, tq + row0 * D, sizeof(T) * bm * D);
            std::memcpy(gh.data(), g_t, sizeof(T) * bm * Dv);
            std::memcpy(gh.data() + bm * Dv, grad_tout + row0 * Dv, sizeof(T) * bm * Dv);
            a_scores = qq.data();
            a_grads = gh.data();
          }
          // Row statistics: x_off = Delta + E = G.O + H.Odot,  y_off = D = H.O.
          for (int64_t ii = 0; ii < bm; ++ii) {
            const int64_t row = row0 + ii;
            x_off[ii] = vec_dot(grad_out + row * Dv, out + row * Dv, Dv);
            if constexpr (kTangent) {
              x_off[ii] += vec_dot(grad_tout + row * Dv, tout + row * Dv, Dv);
              y_off[ii] = vec_dot(grad_tout + row * Dv, out + row * Dv, Dv);
            }
          }
          std::fill(dqq.begin(), dqq.begin() + m_rows * D, T(0));
          const int64_t key_end = tile::causal_key_end(i0 + bm - 1, g.len_k, g.causal);
          for (int64_t j0 = 0; j0 < key_end; j0 += BN) {
            const int64_t bn = std::min(BN, key_end - j0);
            T* s_top = ss.data();
            T* s_bot = ss.data() + bm * BN;
            gemm_rm<T>(false, true, m_rows, bn, D, c, a_scores, D, k_h + j0 * D, D, T(0), s_top, BN);
            gemm_rm<T>(false, true, m_rows, bn, Dv, T(1), a_grads, Dv, v_h + j0 * Dv, Dv, T(0), gg.data(), BN);
            if constexpr (kTangent) {
              gemm_rm<T>(false, true, bm, bn, D, c, q_t, D, tk_h + j0 * D, D, T(1), s_bot, BN);
              gemm_rm<T>(false, true, bm, bn, Dv, T(1), a_grads + bm * Dv, Dv, tv_h + j0 * Dv, Dv, T(1),
                         gg.data(), BN);
            }
            masked_columns(mask_row, j0, bn, masked);
            for (int64_t ii = 0; ii < bm; ++ii) {
              const int64_t row = row0 + ii;
              mask_scores(s_top + ii * BN, i0 + ii, j0, bn, g.causal, masked);
              backward_row_update<T, kTangent>(s_top + ii * BN, s_bot + ii * BN, gg.data() + ii * BN,
                                               gg.data() + (bm + ii) * BN, pp.data() + ii * BN,
                                               pp.data() + (bm + ii) * BN, bn, lse[row],
                                               kTangent ? mu[row] : T(0), x_off[ii], kTangent ? y_off[ii] : T(0));
            }
            // dV += [P; Pdot]^T [G; H],  dVdot += P^T H
            gemm_rm<T>(true, false, bn, Dv, m_rows, T(1), pp.data(), BN, a_grads, Dv, T(1), dv_h + j0 * Dv, Dv);
            // [dQ; dQdot] += c [dS; dSdot] K,  dQ += c dSdot Kdot
            gemm_rm<T>(false, false, m_rows, D, bn, c, s_top, BN, k_h + j0 * D, D, T(1), dqq.data(), D);
            // dK += c [dS; dSdot]^T [Q; Qdot],  dKdot += c dSdot^T Q
            gemm_rm<T>(true, false, bn, D, m_rows, c, s_top, BN, a_scores, D, T(1), dk_h + j0 * D, D);
            if constexpr (kTangent) {
              gemm_rm<T>(true, false, bn, Dv, bm, T(1), pp.data(), BN, a_grads + bm * Dv, Dv, T(1),
                         dtv_h + j0 * Dv, Dv);
              gemm_rm<T>(false, false, bm, D, bn, c, s_bot, BN, tk_h + j0 * D, D, T(1), dqq.data(), D);
              gemm_rm<T>(true, false, bn, D, bm, c, s_bot, BN, q_t, D, T(1), dtk_h + j0 * D, D);
            }
          }
          std::memcpy(dq + row0 * D, dqq.data(), sizeof(T) * bm * D);
          if constexpr (kTangent) std::memcpy(dtq + row0 * D, dqq.data() + bm * D, sizeof(T) * bm * D);
        }
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
  Tensor dq = at::empty_like(q), dk = at::zeros_like(k), dv = at::zeros_like(v);
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
  Tensor dq = at::empty_like(q), dk = at::zeros_like(k), dv = at::zeros_like(v);
  Tensor dtq = at::empty_like(q), dtk = at::zeros_like(k), dtv = at::zeros_like(v);
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
