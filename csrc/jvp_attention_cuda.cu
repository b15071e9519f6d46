// CUDA kernel of fused JVP attention: the contract of the CPU kernel (jvp_attention_cpu.cpp) and the
// same tile math (jvp_attention_tile.h). Compiled in CI (nvcc, compile only) but never run there: no
// GPU. It is a correctness-first kernel, not a tuned one: one thread per query row, keys streamed through
// shared memory in tiles, accumulators in registers; the backward adds dK, dV, dKdot, dVdot with
// atomics. Head dims up to kMaxDim = 128.
#include "jvp_attention.h"
#include "jvp_attention_tile.h"

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace flowcore {
namespace {

constexpr int kMaxDim = 128;
constexpr int kRowsPerBlock = 64;

template <typename T>
struct KeyTile {
  static constexpr int kKeys = 16 * 4 / static_cast<int>(sizeof(T));  // 16 keys (float), 8 (double)
};

struct DeviceExp {
  template <typename T>
  FC_HOST_DEVICE T operator()(T x) const { return exp(x); }
};
struct DeviceLog {
  template <typename T>
  FC_HOST_DEVICE T operator()(T x) const { return log(x); }
};

struct Dims {
  int64_t heads, kv_heads, len_q, len_k, dim_qk, dim_v;
  bool causal;
  double scale;
};

template <typename T>
__device__ T dot(const T* a, const T* b, int64_t n) {
  T s = T(0);
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

// Loads rows [j0, j0 + n) of a (len_k x dim) matrix into shared memory (row stride kMaxDim).
template <typename T>
__device__ void load_rows(T* dst, const T* src, int64_t j0, int n, int64_t dim) {
  for (int64_t e = threadIdx.x; e < n * dim; e += blockDim.x) {
    const int64_t r = e / dim, d = e % dim;
    dst[r * kMaxDim + d] = src[(j0 + r) * dim + d];
  }
}

// Grid (query-row blocks, B * H). kTangent = false computes O and LSE only.
template <typename T, bool kTangent>
__global__ void forward_kernel(Dims g, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                               const T* __restrict__ tq, const T* __restrict__ tk, const T* __restrict__ tv,
                               const bool* __restrict__ mask, T* __restrict__ out, T* __restrict__ tout,
                               T* __restrict__ lse, T* __restrict__ mu) {
  constexpr int kKeys = KeyTile<T>::kKeys;
  __shared__ T sk[kKeys * kMaxDim], sv[kKeys * kMaxDim], stk[kTangent ? kKeys * kMaxDim : 1],
      stv[kTangent ? kKeys * kMaxDim : 1];
  const int64_t bh = blockIdx.y, b = bh / g.heads, h = bh % g.heads;
  const int64_t bhk = b * g.kv_heads + h / (g.heads / g.kv_heads);
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = i < g.len_q;
  const int64_t row = bh * g.len_q + (active ? i : 0);
  const T c = static_cast<T>(g.scale);
  const bool* mask_row = mask == nullptr ? nullptr : mask + b * g.len_k;
  T qr[kMaxDim], tqr[kTangent ? kMaxDim : 1], acc[kMaxDim], acc_t[kTangent ? kMaxDim : 1];
  for (int64_t d = 0; d < g.dim_qk; ++d) {
    qr[d] = active ? q[row * g.dim_qk + d] : T(0);
    if constexpr (kTangent) tqr[d] = active ? tq[row * g.dim_qk + d] : T(0);
  }
  for (int64_t d = 0; d < g.dim_v; ++d) {
    acc[d] = T(0);
    if constexpr (kTangent) acc_t[d] = T(0);
  }
  auto st = tile::row_state_init<T>();
  const int64_t last_row = min(static_cast<int64_t>(blockIdx.x + 1) * blockDim.x, g.len_q) - 1;
  const int64_t key_end = tile::causal_key_end(last_row, g.len_k, g.causal);
  for (int64_t j0 = 0; j0 < key_end; j0 += kKeys) {
    const int n = static_cast<int>(min(static_cast<int64_t>(kKeys), key_end - j0));
    __syncthreads();
    load_rows(sk, k + bhk * g.len_k * g.dim_qk, j0, n, g.dim_qk);
    load_rows(sv, v + bhk * g.len_k * g.dim_v, j0, n, g.dim_v);
    if constexpr (kTangent) {
      load_rows(stk, tk + bhk * g.len_k * g.dim_qk, j0, n, g.dim_qk);
      load_rows(stv, tv + bhk * g.len_k * g.dim_v, j0, n, g.dim_v);
    }
    __syncthreads();
    if (!active) continue;
    T s[kKeys], sd[kKeys];
    T tile_max = tile::neg_inf<T>();
    for (int jj = 0; jj < n; ++jj) {
      const bool vis = tile::key_visible(i, j0 + jj, g.causal, mask_row);
      s[jj] = vis ? c * dot(qr, sk + jj * kMaxDim, g.dim_qk) : tile::neg_inf<T>();
      sd[jj] = kTangent ? c * (dot(tqr, sk + jj * kMaxDim, g.dim_qk) + dot(qr, stk + jj * kMaxDim, g.dim_qk)) : T(0);
      tile_max = s[jj] > tile_max ? s[jj] : tile_max;
    }
    T alpha;
    const T shift = tile::row_rescale(st, tile_max, &alpha, DeviceExp());
    for (int64_t d = 0; d < g.dim_v; ++d) {
      acc[d] *= alpha;
      if constexpr (kTangent) acc_t[d] *= alpha;
    }
    T sum_p = T(0), sum_ps = T(0);
    for (int jj = 0; jj < n; ++jj) {
      const T p = exp(s[jj] - shift), ps = p * sd[jj];
      sum_p += p;
      sum_ps += ps;
      for (int64_t d = 0; d < g.dim_v; ++d) {
        acc[d] += p * sv[jj * kMaxDim + d];
        if constexpr (kTangent) acc_t[d] += ps * sv[jj * kMaxDim + d] + p * stv[jj * kMaxDim + d];
      }
    }
    tile::row_accumulate(st, sum_p, sum_ps);
  }
  if (!active) return;
  const auto ep = tile::row_epilogue(st, DeviceLog());
  lse[row] = ep.lse;
  if constexpr (kTangent) mu[row] = ep.mu;
  for (int64_t d = 0; d < g.dim_v; ++d) {
    const T o = acc[d] * ep.inv_l;
    out[row * g.dim_v + d] = o;
    if constexpr (kTangent) tout[row * g.dim_v + d] = tile::tangent_output(acc_t[d], o, ep.inv_l, ep.mu);
  }
}

// Grid (query-row blocks, B * H). dq/dtq rows are owned by their thread; dk, dv, dtk, dtv (zeroed, in
// the kernel type) receive atomic adds from every query row and every head of the kv group.
template <typename T, bool kTangent>
__global__ void backward_kernel(Dims g, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                const T* __restrict__ tq, const T* __restrict__ tk, const T* __restrict__ tv,
                                const bool* __restrict__ mask, const T* __restrict__ out, const T* __restrict__ tout,
                                const T* __restrict__ lse, const T* __restrict__ mu, const T* __restrict__ grad_out,
                                const T* __restrict__ grad_tout, T* dq, T* dk, T* dv, T* dtq, T* dtk, T* dtv) {
  constexpr int kKeys = KeyTile<T>::kKeys;
  __shared__ T sk[kKeys * kMaxDim], sv[kKeys * kMaxDim], stk[kTangent ? kKeys * kMaxDim : 1],
      stv[kTangent ? kKeys * kMaxDim : 1];
  const int64_t bh = blockIdx.y, b = bh / g.heads, h = bh % g.heads;
  const int64_t bhk = b * g.kv_heads + h / (g.heads / g.kv_heads);
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = i < g.len_q;
  const int64_t row = bh * g.len_q + (active ? i : 0);
  const T c = static_cast<T>(g.scale);
  const bool* mask_row = mask == nullptr ? nullptr : mask + b * g.len_k;
  T qr[kMaxDim], gr[kMaxDim], dqr[kMaxDim];
  T tqr[kTangent ? kMaxDim : 1], hr[kTangent ? kMaxDim : 1], dtqr[kTangent ? kMaxDim : 1];
  for (int64_t d = 0; d < g.dim_qk; ++d) {
    qr[d] = active ? q[row * g.dim_qk + d] : T(0);
    dqr[d] = T(0);
    if constexpr (kTangent) {
      tqr[d] = active ? tq[row * g.dim_qk + d] : T(0);
      dtqr[d] = T(0);
    }
  }
  for (int64_t d = 0; d < g.dim_v; ++d) {
    gr[d] = active ? grad_out[row * g.dim_v + d] : T(0);
    if constexpr (kTangent) hr[d] = active ? grad_tout[row * g.dim_v + d] : T(0);
  }
  // x_off = G.O + H.Odot,  y_off = H.O
  T x_off = dot(gr, out + row * g.dim_v, g.dim_v), y_off = T(0);
  if constexpr (kTangent) {
    x_off += dot(hr, tout + row * g.dim_v, g.dim_v);
    y_off = dot(hr, out + row * g.dim_v, g.dim_v);
  }
  const T row_lse = lse[row], row_mu = kTangent ? mu[row] : T(0);
  const int64_t last_row = min(static_cast<int64_t>(blockIdx.x + 1) * blockDim.x, g.len_q) - 1;
  const int64_t key_end = tile::causal_key_end(last_row, g.len_k, g.causal);
  T* dk_h = dk + bhk * g.len_k * g.dim_qk;
  T* dv_h = dv + bhk * g.len_k * g.dim_v;
  for (int64_t j0 = 0; j0 < key_end; j0 += kKeys) {
    const int n = static_cast<int>(min(static_cast<int64_t>(kKeys), key_end - j0));
    __syncthreads();
    load_rows(sk, k + bhk * g.len_k * g.dim_qk, j0, n, g.dim_qk);
    load_rows(sv, v + bhk * g.len_k * g.dim_v, j0, n, g.dim_v);
    if constexpr (kTangent) {
      load_rows(stk, tk + bhk * g.len_k * g.dim_qk, j0, n, g.dim_qk);
      load_rows(stv, tv + bhk * g.len_k * g.dim_v, j0, n, g.dim_v);
    }
    __syncthreads();
    if (!active) continue;
    for (int jj = 0; jj < n; ++jj) {
      const int64_t j = j0 + jj;
      if (!tile::key_visible(i, j, g.causal, mask_row)) continue;  // P = 0: no contribution
      const T* kj = sk + jj * kMaxDim;
      const T* vj = sv + jj * kMaxDim;
      const T p = exp(c * dot(qr, kj, g.dim_qk) - row_lse);
      const T x = dot(gr, vj, g.dim_v) + (kTangent ? dot(hr, stv + jj * kMaxDim, g.dim_v) : T(0)) - x_off;
      T ds, dsd = T(0), pd = T(0);
      if constexpr (kTangent) {
        const T sdot = c * (dot(tqr, kj, g.dim_qk) + dot(qr, stk + jj * kMaxDim, g.dim_qk));
        const auto sg = tile::score_grads(p, sdot - row_mu, x, dot(hr, vj, g.dim_v) - y_off);
        ds = sg.ds;
        dsd = sg.dsdot;
        pd = sg.pdot;
      } else {
        ds = tile::score_grad_primal(p, x);
      }
      for (int64_t d = 0; d < g.dim_qk; ++d) {
        dqr[d] += c * ds * kj[d];
        atomicAdd(dk_h + j * g.dim_qk + d, c * ds * qr[d]);
        if constexpr (kTangent) {
          dqr[d] += c * dsd * stk[jj * kMaxDim + d];
          dtqr[d] += c * dsd * kj[d];
          atomicAdd(dk_h + j * g.dim_qk + d, c * dsd * tqr[d]);
          atomicAdd(dtk + (bhk * g.len_k + j) * g.dim_qk + d, c * dsd * qr[d]);
        }
      }
      for (int64_t d = 0; d < g.dim_v; ++d) {
        atomicAdd(dv_h + j * g.dim_v + d, p * gr[d] + pd * (kTangent ? hr[d] : T(0)));
        if constexpr (kTangent) atomicAdd(dtv + (bhk * g.len_k + j) * g.dim_v + d, p * hr[d]);
      }
    }
  }
  if (!active) return;
  for (int64_t d = 0; d < g.dim_qk; ++d) {
    dq[row * g.dim_qk + d] = dqr[d];
    if constexpr (kTangent) dtq[row * g.dim_qk + d] = dtqr[d];
  }
}

at::ScalarType compute_type(const Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }
Tensor prepared(const Tensor& x, at::ScalarType type) { return x.to(type).contiguous(); }

Dims dims_of(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, double scale) {
  TORCH_CHECK_VALUE(q.size(3) <= kMaxDim && v.size(3) <= kMaxDim, "flowcore attention (CUDA): head dims up to ",
                    kMaxDim, " are supported, got ", q.size(3), " and ", v.size(3));
  return Dims{q.size(1), k.size(1), q.size(2), k.size(2), q.size(3), v.size(3), causal, scale};
}

dim3 grid_of(const Tensor& q) {
  return dim3(static_cast<unsigned>((q.size(2) + kRowsPerBlock - 1) / kRowsPerBlock),
              static_cast<unsigned>(q.size(0) * q.size(1)));
}

const bool* mask_ptr(const std::optional<Tensor>& mask, Tensor& holder) {
  if (!mask.has_value()) return nullptr;
  holder = mask->contiguous();
  return holder.data_ptr<bool>();
}

template <bool kTangent>
std::tuple<Tensor, Tensor, Tensor, Tensor> forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                                   const Tensor* tq_in, const Tensor* tk_in, const Tensor* tv_in,
                                                   const std::optional<Tensor>& key_padding_mask, bool causal,
                                                   double scale) {
  check_attention_inputs(q_in, k_in, v_in, key_padding_mask);
  if constexpr (kTangent) check_tangents(q_in, k_in, v_in, *tq_in, *tk_in, *tv_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const auto type = compute_type(q_in);
  const Tensor q = prepared(q_in, type), k = prepared(k_in, type), v = prepared(v_in, type);
  Tensor tq, tk, tv;
  if constexpr (kTangent) {
    tq = prepared(*tq_in, type);
    tk = prepared(*tk_in, type);
    tv = prepared(*tv_in, type);
  }
  const Dims g = dims_of(q, k, v, causal, scale);
  Tensor out = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  Tensor tout = kTangent ? at::empty_like(out) : Tensor();
  Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options());
  Tensor mu = kTangent ? at::empty_like(lse) : Tensor();
  Tensor holder;
  const bool* mask = mask_ptr(key_padding_mask, holder);
  if (q.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(type, "flowcore_attn_fwd_cuda", [&] {
      auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
      forward_kernel<scalar_t, kTangent><<<grid_of(q), kRowsPerBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(
          g, ptr(q), ptr(k), ptr(v), ptr(tq), ptr(tk), ptr(tv), mask, ptr(out), ptr(tout), ptr(lse), ptr(mu));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const auto io = q_in.scalar_type();
  return {out.to(io), kTangent ? tout.to(io) : tout, lse, mu};
}

template <bool kTangent>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> backward(
    const Tensor& grad_out_in, const Tensor* grad_tout_in, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
    const Tensor* tq_in, const Tensor* tk_in, const Tensor* tv_in, const Tensor& out_in, const Tensor* tout_in,
    const Tensor& lse_in, const Tensor* mu_in, const std::optional<Tensor>& key_padding_mask, bool causal,
    double scale) {
  check_attention_inputs(q_in, k_in, v_in, key_padding_mask);
  if constexpr (kTangent) check_tangents(q_in, k_in, v_in, *tq_in, *tk_in, *tv_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const auto type = compute_type(q_in);
  const Tensor q = prepared(q_in, type), k = prepared(k_in, type), v = prepared(v_in, type);
  const Tensor out = prepared(out_in, type), lse = prepared(lse_in, type), go = prepared(grad_out_in, type);
  Tensor tq, tk, tv, tout, mu, gto, dtq, dtk, dtv;
  if constexpr (kTangent) {
    tq = prepared(*tq_in, type);
    tk = prepared(*tk_in, type);
    tv = prepared(*tv_in, type);
    tout = prepared(*tout_in, type);
    mu = prepared(*mu_in, type);
    gto = prepared(*grad_tout_in, type);
    dtq = at::empty_like(q);
    dtk = at::zeros_like(k);
    dtv = at::zeros_like(v);
  }
  const Dims g = dims_of(q, k, v, causal, scale);
  Tensor dq = at::empty_like(q), dk = at::zeros_like(k), dv = at::zeros_like(v);
  Tensor holder;
  const bool* mask = mask_ptr(key_padding_mask, holder);
  if (q.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(type, "flowcore_attn_bwd_cuda", [&] {
      auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
      backward_kernel<scalar_t, kTangent><<<grid_of(q), kRowsPerBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(
          g, ptr(q), ptr(k), ptr(v), ptr(tq), ptr(tk), ptr(tv), mask, ptr(out), ptr(tout), ptr(lse), ptr(mu), ptr(go),
          ptr(gto), ptr(dq), ptr(dk), ptr(dv), ptr(dtq), ptr(dtk), ptr(dtv));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const auto io = q_in.scalar_type();
  auto cast = [io](const Tensor& t) { return t.defined() ? t.to(io) : t; };
  return {cast(dq), cast(dk), cast(dv), cast(dtq), cast(dtk), cast(dtv)};
}

std::tuple<Tensor, Tensor> attn_fwd_cuda(const Tensor& q, const Tensor& k, const Tensor& v,
                                         const std::optional<Tensor>& key_padding_mask, bool causal, double scale) {
  auto r = forward<false>(q, k, v, nullptr, nullptr, nullptr, key_padding_mask, causal, scale);
  return {std::get<0>(r), std::get<2>(r)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> attn_fwd_jvp_cuda(const Tensor& q, const Tensor& k, const Tensor& v,
                                                             const Tensor& tq, const Tensor& tk, const Tensor& tv,
                                                             const std::optional<Tensor>& key_padding_mask, bool causal,
                                                             double scale) {
  return forward<true>(q, k, v, &tq, &tk, &tv, key_padding_mask, causal, scale);
}

std::tuple<Tensor, Tensor, Tensor> attn_bwd_cuda(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                                 const Tensor& v, const Tensor& out, const Tensor& lse,
                                                 const std::optional<Tensor>& key_padding_mask, bool causal,
                                                 double scale) {
  auto r = backward<false>(grad_out, nullptr, q, k, v, nullptr, nullptr, nullptr, out, nullptr, lse, nullptr,
                           key_padding_mask, causal, scale);
  return {std::get<0>(r), std::get<1>(r), std::get<2>(r)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> attn_jvp_bwd_cuda(
    const Tensor& grad_out, const Tensor& grad_tout, const Tensor& q, const Tensor& k, const Tensor& v,
    const Tensor& tq, const Tensor& tk, const Tensor& tv, const Tensor& out, const Tensor& tout, const Tensor& lse,
    const Tensor& mu, const std::optional<Tensor>& key_padding_mask, bool causal, double scale) {
  return backward<true>(grad_out, &grad_tout, q, k, v, &tq, &tk, &tv, out, &tout, lse, &mu, key_padding_mask, causal,
                        scale);
}

}  // namespace
}  // namespace flowcore

TORCH_LIBRARY_IMPL(flowcore, CUDA, m) {
  m.impl("attn_fwd", &flowcore::attn_fwd_cuda);
  m.impl("attn_fwd_jvp", &flowcore::attn_fwd_jvp_cuda);
  m.impl("attn_bwd", &flowcore::attn_bwd_cuda);
  m.impl("attn_jvp_bwd", &flowcore::attn_jvp_bwd_cuda);
}
