// Entry points of the fused JVP-attention op, one per device. Shapes: q, tq (B, H, Lq, D);
// k, tk (B, Hkv, Lk, D); v, tv (B, Hkv, Lk, Dv) with Hkv dividing H; key_padding_mask bool (B, Lk),
// True = attend; causal is top-left aligned (query i sees keys j <= i). lse and mu are (B, H, Lq) in
// the accumulation type (float, or double for double inputs).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace flowcore {

using at::Tensor;

// Validates shapes, dtypes and devices shared by every entry point (raises c10::ValueError / TypeError).
void check_attention_inputs(const Tensor& q, const Tensor& k, const Tensor& v,
                            const std::optional<Tensor>& key_padding_mask);
void check_tangents(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& tq,
                    const Tensor& tk, const Tensor& tv);

std::tuple<Tensor, Tensor> attn_fwd_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                                        const std::optional<Tensor>& key_padding_mask, bool causal,
                                        double scale);
std::tuple<Tensor, Tensor, Tensor, Tensor> attn_fwd_jvp_cpu(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& tq, const Tensor& tk,
    const Tensor& tv, const std::optional<Tensor>& key_padding_mask, bool causal, double scale);
std::tuple<Tensor, Tensor, Tensor> attn_bwd_cpu(const Tensor& grad_out, const Tensor& q,
                                                const Tensor& k, const Tensor& v, const Tensor& out,
                                                const Tensor& lse,
                                                const std::optional<Tensor>& key_padding_mask,
                                                bool causal, double scale);
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> attn_jvp_bwd_cpu(
    const Tensor& grad_out, const Tensor& grad_tout, const Tensor& q, const Tensor& k,
    const Tensor& v, const Tensor& tq, const Tensor& tk, const Tensor& tv, const Tensor& out,
    const Tensor& tout, const Tensor& lse, const Tensor& mu,
    const std::optional<Tensor>& key_padding_mask, bool causal, double scale);

}  // namespace flowcore
