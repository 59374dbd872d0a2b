"""``OSDNAttention``: an OSDN token mixer shaped like flash-linear-attention's DeltaNet layer (issue 5).

q/k/v projections, an optional short causal depthwise convolution with SiLU, β = sigmoid(b_proj x) (E5),
α = sigmoid(a_proj x) when APF is on (E1), η per head through softplus (E8, η > 0, or a fixed η = 0 for
the DeltaNet ablation), a learnable prior d° per head (E1), a per-head RMS norm of the output and the
o projection. The recurrence itself is always the Triton kernel of spec §6: ``osdn_fast.chunk_osdn``
(chunkwise C1–C3) for training and prefill, ``osdn_fast.fused_recurrent_osdn`` (E1–E8 token by token) for
decoding from a cache that carries the state h = Sᵀ, the preconditioner d and the convolution windows.
There is no pure-torch path for the recurrence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import chunk_osdn, fused_recurrent_osdn

__all__ = ["OSDNCache", "ShortConvolution", "OSDNAttention"]


@dataclass
class OSDNCache:
    """Decoding cache of one :class:`OSDNAttention` layer (T1: carrying it equals one run over [0, T)).

    Attributes
    ----------
    state : Tensor [B, H, K, V], float32
        h_t = S_tᵀ after the last processed token (E5).
    precond : Tensor [B, H, K], float32
        The learner's d_t after the last processed token (E8).
    conv : tuple of 3 Tensors [B, D, W − 1] or None
        The last W − 1 inputs of the q, k, v short convolutions (W = conv_size).
    seen : int
        Number of tokens processed so far.
    """

    state: torch.Tensor
    precond: torch.Tensor
    conv: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    seen: int = 0


class ShortConvolution(nn.Module):
    """Causal depthwise 1-D convolution with SiLU, as flash-linear-attention's ShortConvolution
    (the inputs of E3–E6 are its outputs; it is not part of the recurrence E1–E8).

    Parameters
    ----------
    dim : int
        Channels D.
    kernel_size : int
        Window W (the output at t sees inputs t − W + 1 … t).
    bias : bool

    Shapes: ``forward(x [B, T, D], cache [B, D, W − 1] or None) -> (y [B, T, D], new cache [B, D, W − 1])``.
    """

    def __init__(self, dim: int, kernel_size: int = 4, bias: bool = False):
        super().__init__()
        self.dim, self.kernel_size = dim, kernel_size
        self.conv = nn.Conv1d(dim, dim, kernel_size, groups=dim, bias=bias, padding=0)

    def forward(self, x: torch.Tensor, cache: Optional[torch.Tensor] = None):
        B, T, D = x.shape
        W = self.kernel_size
        xt = x.transpose(1, 2)  # [B, D, T]
        past = cache if cache is not None else xt.new_zeros(B, D, W - 1)
        full = torch.cat([past.to(xt.dtype), xt], dim=-1)  # [B, D, W - 1 + T]
        y = F.silu(self.conv(full)).transpose(1, 2)
        return y, full[:, :, full.shape[-1] - (W - 1):].detach() if W > 1 else full[:, :, :0]


class OSDNAttention(nn.Module):
    """OSDN token mixer (spec E1–E8 through the kernels of §6; C1–C3 in training), DeltaNet-shaped.

    Parameters
    ----------
    hidden_size : int
        Model width D.
    num_heads : int
        H; the key and value head widths are K = expand_k·D/H and V = expand_v·D/H.
    expand_k, expand_v : float
    use_short_conv : bool
        Causal depthwise convolution (width ``conv_size``) with SiLU on q, k, v; without it SiLU is applied
        to the projections directly.
    conv_size : int
    use_apf : bool
        APF gate α_t = sigmoid(a_proj x_t) per head (E1); off: α ≡ 1.
    eta_init : float
        Initial η per head (E8). 0 gives the DeltaNet ablation with a fixed η = 0 (no parameter).
    learn_eta : bool
        η = softplus(η_raw) is a parameter [H] (positive parametrisation); else a fixed buffer.
    learn_d_prior : bool
        d° [H, K] is a parameter, initialised at ones (E1, spec default); else a buffer of ones.
    d_min, d_max : float
        Clip bounds of E2.
    chunk_size : int
        C of C1–C3 in ``chunk_osdn``.
    norm_eps : float
        RMS norm epsilon of the output.

    Shapes
    ------
    ``forward(x [B, T, D], cache=None, use_cache=False) -> (y [B, T, D], cache or None)``.
    q, k are L2-normalised in the kernel (use_qk_l2norm_in_kernel, spec §2); scale = K^(-1/2) (E6).
    """

    def __init__(self, hidden_size: int = 256, num_heads: int = 4, expand_k: float = 1.0, expand_v: float = 1.0,
                 use_short_conv: bool = True, conv_size: int = 4, use_apf: bool = False, eta_init: float = 1.0,
                 learn_eta: bool = True, learn_d_prior: bool = True, d_min: float = 0.0,
                 d_max: Optional[float] = None, chunk_size: int = 64, norm_eps: float = 1e-5):
        super().__init__()
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.key_dim, self.value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        if self.key_dim % num_heads or self.value_dim % num_heads:
            raise ValueError(f"num_heads: {num_heads} must divide key_dim {self.key_dim} and value_dim "
                             f"{self.value_dim}")
        self.head_k_dim, self.head_v_dim = self.key_dim // num_heads, self.value_dim // num_heads
        self.use_short_conv, self.conv_size, self.use_apf = use_short_conv, conv_size, use_apf
        self.d_min, self.d_max, self.chunk_size, self.norm_eps = d_min, d_max, chunk_size, norm_eps
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.b_proj = nn.Linear(hidden_size, num_heads, bias=False)
        self.a_proj = nn.Linear(hidden_size, num_heads, bias=True) if use_apf else None
        if use_apf:  # start with a long forgetting horizon, α ≈ sigmoid(3) ≈ 0.95
            nn.init.constant_(self.a_proj.bias, 3.0)
        if use_short_conv:
            self.q_conv1d = ShortConvolution(self.key_dim, conv_size)
            self.k_conv1d = ShortConvolution(self.key_dim, conv_size)
            self.v_conv1d = ShortConvolution(self.value_dim, conv_size)
        if eta_init < 0:
            raise ValueError(f"eta_init: expected ≥ 0, got {eta_init}")
        self.learn_eta = bool(learn_eta and eta_init > 0)
        if self.learn_eta:
            raw = math.log(math.expm1(eta_init))  # softplus⁻¹
            self.eta_raw = nn.Parameter(torch.full((num_heads,), raw))
        else:
            self.register_buffer("eta_fixed", torch.full((num_heads,), float(eta_init)))
        self._eta_cache = None  # (η_raw's storage and version, softplus(η_raw)) for calls without a gradient to η
        ones = torch.ones(num_heads, self.head_k_dim)
        if learn_d_prior:
            self.d_prior = nn.Parameter(ones)
        else:
            self.register_buffer("d_prior", ones)
        self.o_norm_weight = nn.Parameter(torch.ones(self.head_v_dim))
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    @property
    def eta(self) -> torch.Tensor:
        """η per head [H] (E8): softplus(η_raw) when learnt, else the fixed value."""
        return F.softplus(self.eta_raw) if self.learn_eta else self.eta_fixed

    def _eta_arg(self) -> torch.Tensor:
        """η [H] as the kernels get it (E8). Where no gradient flows to η (inference, decoding) one tensor is reused
        while η_raw is unchanged (same storage, no in-place change), so that the kernels' value check η ≥ 0, which
        reads η on the host (a device sync), runs once per η and not once per token (``validation._eta_min``)."""
        if not self.learn_eta:
            return self.eta_fixed
        raw = self.eta_raw
        if torch.is_grad_enabled() and raw.requires_grad:
            return F.softplus(raw)
        key = (raw.data_ptr(), raw._version, raw.device, raw.dtype)
        if self._eta_cache is None or self._eta_cache[0] != key:
            # an ordinary tensor even under torch.inference_mode, so that it keeps its version counter
            with torch.inference_mode(False), torch.no_grad():
                self._eta_cache = (key, F.softplus(raw))
        return self._eta_cache[1]

    def _features(self, x, cache: Optional[OSDNCache]):
        B, T, _ = x.shape
        H, K, V = self.num_heads, self.head_k_dim, self.head_v_dim
        conv_in = cache.conv if cache is not None else None
        if self.use_short_conv:
            q, cq = self.q_conv1d(self.q_proj(x), None if conv_in is None else conv_in[0])
            k, ck = self.k_conv1d(self.k_proj(x), None if conv_in is None else conv_in[1])
            v, cv = self.v_conv1d(self.v_proj(x), None if conv_in is None else conv_in[2])
            conv_out = (cq, ck, cv)
        else:
            q, k, v = F.silu(self.q_proj(x)), F.silu(self.k_proj(x)), F.silu(self.v_proj(x))
            conv_out = None
        q, k, v = q.view(B, T, H, K), k.view(B, T, H, K), v.view(B, T, H, V)
        beta = torch.sigmoid(self.b_proj(x).float()).to(x.dtype)  # [B, T, H], E5
        alpha = torch.sigmoid(self.a_proj(x).float()).to(x.dtype) if self.use_apf else None  # E1
        return q, k, v, beta, alpha, conv_out

    def forward(self, x: torch.Tensor, cache: Optional[OSDNCache] = None, use_cache: bool = False):
        """Mix tokens. Training / prefill (T > 1 or no cache): ``chunk_osdn``; decoding one token from a
        cache: ``fused_recurrent_osdn``. Returns (y [B, T, D], the updated cache if ``use_cache``)."""
        B, T, _ = x.shape
        q, k, v, beta, alpha, conv_out = self._features(x, cache)
        kwargs = dict(g=None, alpha=alpha, eta=self._eta_arg(), d_prior=self.d_prior,
                      initial_state=None if cache is None else cache.state,
                      initial_precond=None if cache is None else cache.precond,
                      output_final_state=use_cache, d_min=self.d_min, d_max=self.d_max,
                      use_qk_l2norm_in_kernel=True, chunk_size=self.chunk_size)
        if cache is not None and T == 1:
            o, h, d = fused_recurrent_osdn(q, k, v, beta, **kwargs)
        else:
            o, h, d = chunk_osdn(q, k, v, beta, **kwargs)
        o = o.float()
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + self.norm_eps) * self.o_norm_weight
        y = self.o_proj(o.to(x.dtype).reshape(B, T, self.value_dim))
        new_cache = None
        if use_cache:
            new_cache = OSDNCache(state=h, precond=d, conv=conv_out,
                                  seen=(0 if cache is None else cache.seen) + T)
        return y, new_cache
