"""A plain torch recurrence of OSDN (spec E1–E8), differentiable by autograd.

Token by token, in the dtype of its inputs (use float64 for a reference). It exists to cross-check the
Triton kernels' gradients through torch autograd, independently of the NumPy VJP in :mod:`osdn_ref`.
"""

from __future__ import annotations

import torch


def naive_recurrent_osdn(
    q, k, v, beta, g=None, alpha=None, eta=1.0, d_prior=None, scale=None, initial_state=None,
    initial_precond=None, output_final_state=False, d_min=0.0, d_max=None, use_qk_l2norm_in_kernel=False,
    cu_seqlens=None,
):
    """OSDN by E1–E8 in torch (same arguments as ``chunk_osdn``, spec §6).

    Parameters
    ----------
    q, k : [B, T, H, K]; v : [B, T, H, V]; beta, g, alpha : [B, T, H]; eta : float or [H];
    d_prior : [H, K]; initial_state : [N, H, K, V]; initial_precond : [N, H, K]

    Returns
    -------
    o [B, T, H, V], h_T [N, H, K, V] or None, d_T [N, H, K] or None, in the inputs' dtype.
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dt = q.dtype
    if use_qk_l2norm_in_kernel:
        q = q / torch.sqrt((q * q).sum(-1, keepdim=True) + 1e-6)
        k = k / torch.sqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    scale = K ** -0.5 if scale is None else scale
    g = torch.zeros(B, T, H, dtype=dt, device=q.device) if g is None else g
    alpha = torch.ones(B, T, H, dtype=dt, device=q.device) if alpha is None else alpha
    eta = torch.as_tensor(eta, dtype=dt, device=q.device).reshape(-1).expand(H)
    dp = torch.ones(H, K, dtype=dt, device=q.device) if d_prior is None else d_prior
    dmax = float("inf") if d_max is None else d_max
    if cu_seqlens is None:
        segs = [(b, b, 0, T) for b in range(B)]
    else:
        cs = [int(x) for x in cu_seqlens]
        segs = [(n, 0, cs[n], cs[n + 1]) for n in range(len(cs) - 1)]
    outs = [[None] * T for _ in range(B)]
    hs, ds = [], []
    for n, b, t0, t1 in segs:
        h = torch.zeros(H, K, V, dtype=dt, device=q.device) if initial_state is None else initial_state[n]
        d = dp if initial_precond is None else initial_precond[n]
        for t in range(t0, t1):
            a = alpha[b, t][:, None]
            dbar = dp + a * (d - dp)  # E1
            p = torch.clamp(dbar, d_min, dmax)  # E2
            kt = k[b, t]
            kw = p * kt  # E3
            gam = torch.exp(g[b, t])[:, None, None]
            r = v[b, t] - torch.einsum("hkv,hk->hv", gam * h, kt)  # E4
            h = gam * h + beta[b, t][:, None, None] * kw[:, :, None] * r[:, None, :]  # E5
            outs[b][t] = scale * torch.einsum("hkv,hk->hv", h, q[b, t])  # E6
            k2 = kt * kt
            u = beta[b, t][:, None] * k2
            s = k2.sum(-1, keepdim=True)
            rho = 1 - (u * dbar).sum(-1, keepdim=True)  # E7
            nz = s > 0
            d = dbar + torch.where(nz, eta[:, None] * rho / torch.where(nz, s, torch.ones_like(s)), 0.0) * u  # E8
        hs.append(h)
        ds.append(d)
    o = torch.stack([torch.stack(row) for row in outs])
    if not output_final_state:
        return o, None, None
    return o, torch.stack(hs), torch.stack(ds)
