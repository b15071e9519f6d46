// Tile math of fused JVP attention, shared by the CPU kernel (jvp_attention_cpu.cpp) and the CUDA
// kernel (jvp_attention_cuda.cu). Every function here is host+device and uses only +, -, * and
// comparisons on its value type, so the CPU kernel instantiates the same code for scalars and for
// at::vec::Vectorized lanes, and the GPU runs exactly the arithmetic the CPU tests exercise.
//
// Notation (one batch x head, row i = query, column j = key, c = softmax scale):
//   S = c Q K^T,  P = softmax_row(S),  O = P V,  LSE_i = log sum_j exp S_ij
//   Sdot = c (Qdot K^T + Q Kdot^T),  mu_i = sum_j P_ij Sdot_ij   (tangent of LSE_i)
//   Odot = sum_j P_ij Sdot_ij V_j - mu_i O_i + sum_j P_ij Vdot_j
// Online recurrence over key tiles (running max m, l = sum p~, r = sum p~ Sdot, p~ = exp(S - m)):
//   m' = max(m, rowmax s);  alpha = exp(m - m');  l = alpha l + sum p~;  r = alpha r + sum p~ sdot
//   accO = alpha accO + p~ V;  accT = alpha accT + (p~ o sdot) V + p~ Vdot
// Epilogue: O = accO / l,  mu = r / l,  Odot = accT / l - mu O,  LSE = m + log l.
// Rows with no visible key (l = 0) give O = Odot = 0, mu = 0 and LSE = +inf, so that the backward's
// recomputed P = exp(S - LSE) is 0 there.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FC_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FC_HOST_DEVICE inline
#endif

namespace flowcore {
namespace tile {

// Causal alignment is top-left, as torch's scaled_dot_product_attention(is_causal=True): query i sees
// key j iff j <= i, for any Lq and Lk. A key-padding mask (True = attend) is applied on top.
FC_HOST_DEVICE bool key_visible(int64_t i, int64_t j, bool causal, const bool* key_mask_row) {
  return (!causal || j <= i) && (key_mask_row == nullptr || key_mask_row[j]);
}

// Index of the first key tile (of width block_n) that causal attention hides entirely from the query
// rows [0, last_row]: tiles from here on can be skipped.
FC_HOST_DEVICE int64_t causal_key_end(int64_t last_row, int64_t num_keys, bool causal) {
  if (!causal) return num_keys;
  const int64_t end = last_row + 1;
  return end < num_keys ? end : num_keys;
}

template <typename T>
FC_HOST_DEVICE T neg_inf() {
  return -static_cast<T>(INFINITY);
}

// The running max used as exponent shift; a row that has seen only masked keys keeps m = -inf and is
// shifted by 0 instead, so exp(s - shift) = exp(-inf) = 0 and never exp(-inf - (-inf)) = NaN.
template <typename T>
FC_HOST_DEVICE T safe_shift(T m) {
  return m == neg_inf<T>() ? T(0) : m;
}

// State of one query row across key tiles. l, r and the accumulators are stored relative to exp(-m).
template <typename T>
struct RowState {
  T m;  // running max of the scores seen so far (-inf before any visible key)
  T l;  // sum_j exp(s_j - m)
  T r;  // sum_j exp(s_j - m) sdot_j
};

template <typename T>
FC_HOST_DEVICE RowState<T> row_state_init() {
  return RowState<T>{neg_inf<T>(), T(0), T(0)};
}

// Moves the row to the new running max max(m, tile_max). Returns the exponent shift for this tile's
// p~ = exp(s - shift); *alpha receives exp(m_old - shift), the factor that rescales l, r and the
// accumulators (0 when nothing was visible before; exp_fn is the caller's exp).
template <typename T, typename ExpFn>
FC_HOST_DEVICE T row_rescale(RowState<T>& st, T tile_max, T* alpha, ExpFn exp_fn) {
  const T m_new = st.m > tile_max ? st.m : tile_max;
  const T shift = safe_shift(m_new);
  *alpha = st.m == neg_inf<T>() ? T(0) : exp_fn(st.m - shift);
  st.m = m_new;
  st.l = *alpha * st.l;
  st.r = *alpha * st.r;
  return shift;
}

// Adds one tile's sums: l += sum p~, r += sum p~ sdot.
template <typename T>
FC_HOST_DEVICE void row_accumulate(RowState<T>& st, T sum_p, T sum_p_sdot) {
  st.l = st.l + sum_p;
  st.r = st.r + sum_p_sdot;
}

// Per-row results of the forward epilogue: O = inv_l accO, Odot = inv_l accT - mu O.
template <typename T>
struct RowEpilogue {
  T inv_l;  // 1 / l  (0 for a row with no visible key)
  T mu;     // tangent of the log-sum-exp, r / l
  T lse;    // m + log l  (+inf for a row with no visible key)
};

template <typename T, typename LogFn>
FC_HOST_DEVICE RowEpilogue<T> row_epilogue(const RowState<T>& st, LogFn log_fn) {
  if (!(st.l > T(0))) {
    return RowEpilogue<T>{T(0), T(0), static_cast<T>(INFINITY)};
  }
  const T inv_l = T(1) / st.l;
  return RowEpilogue<T>{inv_l, st.r * inv_l, st.m + log_fn(st.l)};
}

// Odot_i = accT_i / l_i - mu_i O_i (V is a scalar or a SIMD lane vector).
template <typename V>
FC_HOST_DEVICE V tangent_output(V acc_t, V out, V inv_l, V mu) {
  return acc_t * inv_l - mu * out;
}

// Backward through both outputs, per score element. With G = dL/dO and H = dL/dOdot:
//   x = (G V^T)_ij + (H Vdot^T)_ij - Delta_i - E_i,   Delta = rowsum(G o O),  E = rowsum(H o Odot)
//   y = (H V^T)_ij - D_i,                              D = rowsum(H o O)
//   sc = Sdot_ij - mu_i
// gives the gradients w.r.t. the scores and the tangent of P:
//   dSdot = P y,   dS = P (x + sc y),   Pdot = P sc.
template <typename V>
struct ScoreGrads {
  V ds;     // dL/dS
  V dsdot;  // dL/dSdot
  V pdot;   // tangent of P, P (Sdot - mu)
};

template <typename V>
FC_HOST_DEVICE ScoreGrads<V> score_grads(V p, V sdot_centered, V x, V y) {
  return ScoreGrads<V>{p * (x + sdot_centered * y), p * y, p * sdot_centered};
}

// Backward through O only (the tangent carries no gradient): dS = P ((G V^T)_ij - Delta_i).
template <typename V>
FC_HOST_DEVICE V score_grad_primal(V p, V g_vt_centered) {
  return p * g_vt_centered;
}

}  // namespace tile
}  // namespace flowcore
