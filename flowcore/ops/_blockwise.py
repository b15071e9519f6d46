"""Fused JVP attention written blockwise in PyTorch: the same online recurrence as the C++/CUDA kernels.

Used (a) as the kernels of the ``flowcore::attn_*`` ops when the compiled extension is not built, and
(b) for double backward (it is built from differentiable torch ops). Memory is O(N) beyond the inputs:
only one (query block x key block) tile of scores lives at a time.

One batch x head, c = scale, S = c Q K^T (-inf where masked), P = softmax(S), O = P V:
    Sdot = c (Qdot K^T + Q Kdot^T),  mu = rowsum(P o Sdot),  Odot = (P o Sdot) V - mu O + P Vdot
Backward with G = dL/dO, H = dL/dOdot (H = None: through O only), x = G V^T + H Vdot^T - G.O - H.Odot,
y = H V^T - H.O, sc = Sdot - mu:
    dS = P (x + sc y),  dSdot = P y,  dV = P^T G + (P sc)^T H,  dVdot = P^T H,
    dQ = c (dS K + dSdot Kdot),  dK = c (dS^T Q + dSdot^T Qdot),  dQdot = c dSdot K,  dKdot = c dSdot^T Q.
Grouped-query heads are handled by viewing q as (B, H_kv, H/H_kv, N, D) against k, v (B, H_kv, 1, N, D).
"""

from __future__ import annotations

import torch

BLOCK_M = 256
BLOCK_N = 512


def _grouped(x: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """(B, H, N, D) -> (B, H_kv, H / H_kv, N, D)."""
    b, h, n, d = x.shape
    return x.reshape(b, kv_heads, h // kv_heads, n, d)


def _visible(i0: int, i1: int, j0: int, j1: int, causal: bool, mask: torch.Tensor | None, device) -> torch.Tensor | None:
    """Boolean (B or 1, 1, 1, i1 - i0, j1 - j0): query i sees key j (top-left causal j <= i, and the key-padding mask)."""
    vis = None
    if causal:
        rows = torch.arange(i0, i1, device=device)[:, None]
        cols = torch.arange(j0, j1, device=device)[None, :]
        vis = (cols <= rows)[None, None, None]
    if mask is not None:
        m = mask[:, None, None, None, j0:j1]
        vis = m if vis is None else vis & m
    return vis


def _key_end(i1: int, len_k: int, causal: bool) -> int:
    return min(i1, len_k) if causal else len_k


def attn_fwd_jvp(q, k, v, tq, tk, tv, mask, causal: bool, scale: float):
    """(O, Odot, LSE, mu); with tq = tk = tv = None only (O, None, LSE, None). LSE = +inf on empty rows."""
    kv_heads, b, h, len_q, len_k = k.shape[1], q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    tangent = tq is not None
    acc_type = torch.float64 if q.dtype == torch.float64 else torch.float32
    q5, k5, v5 = _grouped(q, kv_heads).to(acc_type), k[:, :, None].to(acc_type), v[:, :, None].to(acc_type)
    if tangent:
        tq5, tk5, tv5 = _grouped(tq, kv_heads).to(acc_type), tk[:, :, None].to(acc_type), tv[:, :, None].to(acc_type)
    outs, touts, lses, mus = [], [], [], []
    for i0 in range(0, len_q, BLOCK_M):
        i1 = min(i0 + BLOCK_M, len_q)
        qb = q5[..., i0:i1, :]
        stat_shape = qb.shape[:-1]
        m = torch.full(stat_shape, float("-inf"), dtype=acc_type, device=q.device)
        l = torch.zeros(stat_shape, dtype=acc_type, device=q.device)
        r = torch.zeros_like(l)
        acc = torch.zeros((*stat_shape, v.shape[-1]), dtype=acc_type, device=q.device)
        acc_t = torch.zeros_like(acc)
        for j0 in range(0, _key_end(i1, len_k, causal), BLOCK_N):
            j1 = min(j0 + BLOCK_N, _key_end(i1, len_k, causal))
            kb, vb = k5[..., j0:j1, :], v5[..., j0:j1, :]
            s = scale * (qb @ kb.transpose(-1, -2))
            vis = _visible(i0, i1, j0, j1, causal, mask, q.device)
            if vis is not None:
                s = s.masked_fill(~vis, float("-inf"))
            m_new = torch.maximum(m, s.detach().amax(-1))
            shift = torch.where(m_new == float("-inf"), torch.zeros_like(m_new), m_new)
            alpha = torch.exp(m - shift)
            p = torch.exp(s - shift[..., None])
            l = alpha * l + p.sum(-1)
            acc = alpha[..., None] * acc + p @ vb
            if tangent:
                sdot = scale * (tq5[..., i0:i1, :] @ kb.transpose(-1, -2) + qb @ tk5[..., j0:j1, :].transpose(-1, -2))
                ps = p * sdot
                r = alpha * r + ps.sum(-1)
                acc_t = alpha[..., None] * acc_t + ps @ vb + p @ tv5[..., j0:j1, :]
            m = m_new
        empty = l == 0
        l_safe = torch.where(empty, torch.ones_like(l), l)
        inv_l = torch.where(empty, torch.zeros_like(l), 1.0 / l_safe)
        out = acc * inv_l[..., None]
        outs.append(out)
        lses.append(torch.where(empty, torch.full_like(l, float("inf")), m + torch.log(l_safe)))
        if tangent:
            mu = r * inv_l
            mus.append(mu)
            touts.append(acc_t * inv_l[..., None] - mu[..., None] * out)
    out = torch.cat(outs, -2).reshape(b, h, len_q, v.shape[-1]).to(q.dtype)
    lse = torch.cat(lses, -1).reshape(b, h, len_q)
    if not tangent:
        return out, None, lse, None
    tout = torch.cat(touts, -2).reshape(b, h, len_q, v.shape[-1]).to(q.dtype)
    return out, tout, lse, torch.cat(mus, -1).reshape(b, h, len_q)


def attn_jvp_bwd(grad_out, grad_tout, q, k, v, tq, tk, tv, out, tout, lse, mu, mask, causal: bool, scale: float):
    """Gradients (dq, dk, dv, dtq, dtk, dtv) from G = grad_out and H = grad_tout; with grad_tout = None
    (tangent carries no gradient) only (dq, dk, dv, None, None, None) and the tangent inputs are unused."""
    kv_heads, len_q, len_k = k.shape[1], q.shape[2], k.shape[2]
    tangent = grad_tout is not None
    acc_type = lse.dtype
    g5 = lambda x: _grouped(x, kv_heads).to(acc_type)  # noqa: E731
    kv5 = lambda x: x[:, :, None].to(acc_type)  # noqa: E731
    q5, k5, v5, o5, gO = g5(q), kv5(k), kv5(v), g5(out), g5(grad_out)
    lse5, x_off = _grouped(lse[..., None], kv_heads)[..., 0], (gO * o5).sum(-1)
    if tangent:
        tq5, tk5, tv5, gT = g5(tq), kv5(tk), kv5(tv), g5(grad_tout)
        mu5 = _grouped(mu[..., None], kv_heads)[..., 0]
        x_off = x_off + (gT * g5(tout)).sum(-1)
        y_off = (gT * o5).sum(-1)
    q_blocks = [(i0, min(i0 + BLOCK_M, len_q)) for i0 in range(0, len_q, BLOCK_M)]
    dq_parts = [0.0] * len(q_blocks)
    dtq_parts = [0.0] * len(q_blocks)
    dk_parts, dv_parts, dtk_parts, dtv_parts = [], [], [], []
    for j0 in range(0, len_k, BLOCK_N):
        j1 = min(j0 + BLOCK_N, len_k)
        kb, vb = k5[..., j0:j1, :], v5[..., j0:j1, :]
        dk_j = dv_j = dtk_j = dtv_j = 0.0
        for n, (i0, i1) in enumerate(q_blocks):
            if causal and j0 >= i1:
                continue
            qb, gb = q5[..., i0:i1, :], gO[..., i0:i1, :]
            s = scale * (qb @ kb.transpose(-1, -2))
            vis = _visible(i0, i1, j0, j1, causal, mask, q.device)
            if vis is not None:
                s = s.masked_fill(~vis, float("-inf"))
            p = torch.exp(s - lse5[..., i0:i1, None])
            x = gb @ vb.transpose(-1, -2) - x_off[..., i0:i1, None]
            if tangent:
                tqb, tkb, tvb, hb = tq5[..., i0:i1, :], tk5[..., j0:j1, :], tv5[..., j0:j1, :], gT[..., i0:i1, :]
                sc = scale * (tqb @ kb.transpose(-1, -2) + qb @ tkb.transpose(-1, -2)) - mu5[..., i0:i1, None]
                x = x + hb @ tvb.transpose(-1, -2)
                y = hb @ vb.transpose(-1, -2) - y_off[..., i0:i1, None]
                ds, dsd, pd = p * (x + sc * y), p * y, p * sc
                dv_j = dv_j + (p.transpose(-1, -2) @ gb + pd.transpose(-1, -2) @ hb).sum(2, keepdim=True)
                dtv_j = dtv_j + (p.transpose(-1, -2) @ hb).sum(2, keepdim=True)
                dq_parts[n] = dq_parts[n] + scale * (ds @ kb + dsd @ tkb)
                dtq_parts[n] = dtq_parts[n] + scale * (dsd @ kb)
                dk_j = dk_j + scale * (ds.transpose(-1, -2) @ qb + dsd.transpose(-1, -2) @ tqb).sum(2, keepdim=True)
                dtk_j = dtk_j + scale * (dsd.transpose(-1, -2) @ qb).sum(2, keepdim=True)
            else:
                ds = p * x
                dv_j = dv_j + (p.transpose(-1, -2) @ gb).sum(2, keepdim=True)
                dq_parts[n] = dq_parts[n] + scale * (ds @ kb)
                dk_j = dk_j + scale * (ds.transpose(-1, -2) @ qb).sum(2, keepdim=True)
        dk_parts.append(_zeros_if_unset(dk_j, kb))
        dv_parts.append(_zeros_if_unset(dv_j, vb))
        if tangent:
            dtk_parts.append(_zeros_if_unset(dtk_j, kb))
            dtv_parts.append(_zeros_if_unset(dtv_j, vb))

    def gather_q(parts, like):
        blocks = [_zeros_if_unset(p, q5[..., i0:i1, :]) for p, (i0, i1) in zip(parts, q_blocks)]
        return torch.cat(blocks, -2).reshape(like.shape).to(like.dtype) if blocks else torch.zeros_like(like)

    def gather_kv(parts, like):
        return torch.cat(parts, -2)[:, :, 0].to(like.dtype) if parts else torch.zeros_like(like)

    dq, dk, dv = gather_q(dq_parts, q), gather_kv(dk_parts, k), gather_kv(dv_parts, v)
    if not tangent:
        return dq, dk, dv, None, None, None
    return dq, dk, dv, gather_q(dtq_parts, q), gather_kv(dtk_parts, k), gather_kv(dtv_parts, v)


def _zeros_if_unset(x, like: torch.Tensor) -> torch.Tensor:
    """A block that received no contribution (all of it hidden by causality) is zero."""
    return torch.zeros_like(like) if isinstance(x, float) else x
