// Operator schemas of the fused JVP-attention op (namespace flowcore), input validation shared by the
// CPU and CUDA kernels, the CPU registrations, and the pybind11 module flowcore._C that loads them.
// Fake (meta) kernels and autograd formulas are registered from Python (flowcore/ops/_registration.py).
#include "jvp_attention.h"

#include <torch/extension.h>
#include <torch/library.h>

namespace flowcore {

namespace {
bool supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}
}  // namespace

void check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor& v,
                            const std::optional<Tensor>& key_padding_mask) {
  TORCH_CHECK_VALUE(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
                    "flowcore attention: q, k, v must have shape (B, H, N, D); got q ", q.sizes(), ", k ",
                    k.sizes(), ", v ", v.sizes());
  TORCH_CHECK_TYPE(supported_dtype(q.scalar_type()),
                   "flowcore attention: q must be float32, float64, bfloat16 or float16, got ", q.scalar_type());
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
                   "flowcore attention: q, k, v must share a dtype; got ", q.scalar_type(), ", ", k.scalar_type(),
                   ", ", v.scalar_type());
  TORCH_CHECK_VALUE(k.device() == q.device() && v.device() == q.device(),
                    "flowcore attention: q, k, v must be on one device");
  TORCH_CHECK_VALUE(k.size(0) == q.size(0) && v.size(0) == q.size(0), "flowcore attention: batch sizes differ");
  TORCH_CHECK_VALUE(k.size(1) == v.size(1) && k.size(1) > 0 && q.size(1) % k.size(1) == 0,
                    "flowcore attention: k and v need the same number of heads H_kv, dividing the heads of q; got q ",
                    q.sizes(), ", k ", k.sizes(), ", v ", v.sizes());
  TORCH_CHECK_VALUE(k.size(2) == v.size(2), "flowcore attention: k and v must have the same length");
  TORCH_CHECK_VALUE(q.size(3) == k.size(3) && q.size(3) > 0 && v.size(3) > 0,
                    "flowcore attention: q and k must share a non-empty head dim");
  if (key_padding_mask.has_value()) {
    const Tensor& m = *key_padding_mask;
    TORCH_CHECK_TYPE(m.scalar_type() == at::kBool, "flowcore attention: key_padding_mask must be bool, got ",
                     m.scalar_type());
    TORCH_CHECK_VALUE(m.dim() == 2 && m.size(0) == q.size(0) && m.size(1) == k.size(2),
                      "flowcore attention: key_padding_mask must have shape (B, N_k) = (", q.size(0), ", ", k.size(2),
                      "), got ", m.sizes());
    TORCH_CHECK_VALUE(m.device() == q.device(), "flowcore attention: key_padding_mask must be on the device of q");
  }
}

void check_tangents(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& tq, const Tensor& tk,
                    const Tensor& tv) {
  const std::pair<const Tensor*, const Tensor*> pairs[] = {{&q, &tq}, {&k, &tk}, {&v, &tv}};
  for (const auto& [x, t] : pairs) {
    TORCH_CHECK_VALUE(t->sizes() == x->sizes(), "flowcore attention: a tangent has shape ", t->sizes(),
                      ", its primal ", x->sizes());
    TORCH_CHECK_TYPE(t->scalar_type() == x->scalar_type(), "flowcore attention: a tangent has dtype ",
                     t->scalar_type(), ", its primal ", x->scalar_type());
    TORCH_CHECK_VALUE(t->device() == x->device(), "flowcore attention: a tangent is on another device than its primal");
  }
}

}  // namespace flowcore

TORCH_LIBRARY(flowcore, m) {
  m.def("attn_fwd(Tensor q, Tensor k, Tensor v, Tensor? key_padding_mask, bool causal, float scale) "
        "-> (Tensor out, Tensor lse)");
  m.def("attn_fwd_jvp(Tensor q, Tensor k, Tensor v, Tensor tq, Tensor tk, Tensor tv, Tensor? key_padding_mask, "
        "bool causal, float scale) -> (Tensor out, Tensor tout, Tensor lse, Tensor mu)");
  m.def("attn_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
        "Tensor? key_padding_mask, bool causal, float scale) -> (Tensor dq, Tensor dk, Tensor dv)");
  m.def("attn_jvp_bwd(Tensor grad_out, Tensor grad_tout, Tensor q, Tensor k, Tensor v, Tensor tq, Tensor tk, "
        "Tensor tv, Tensor out, Tensor tout, Tensor lse, Tensor mu, Tensor? key_padding_mask, bool causal, "
        "float scale) -> (Tensor dq, Tensor dk, Tensor dv, Tensor dtq, Tensor dtk, Tensor dtv)");
}

TORCH_LIBRARY_IMPL(flowcore, CPU, m) {
  m.impl("attn_fwd", &flowcore::attn_fwd_cpu);
  m.impl("attn_fwd_jvp", &flowcore::attn_fwd_jvp_cpu);
  m.impl("attn_bwd", &flowcore::attn_bwd_cpu);
  m.impl("attn_jvp_bwd", &flowcore::attn_jvp_bwd_cpu);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "flowcore fused JVP attention kernels (ops registered under torch.ops.flowcore)";
#ifdef FLOWCORE_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
