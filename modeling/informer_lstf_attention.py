"""ProbSparse self-attention (Zhou et al., AAAI 2021, Sec. 3.1) in O(L log L) time and memory, and the
attention layer of InformerLSTF.

Why not transformers' ``InformerProbSparseAttention``: its key sample size is ``c * L_Q * ln L_K`` capped at
``L_K``, so it always "samples" every key and builds the full ``L_Q x L_K`` score matrix (plus a ``u x L_K``
one): more work than canonical attention. Here no ``L x L`` tensor is ever made:

* the sparsity measurement ``M(q_i, K) = max_j(q_i k_j^T / sqrt d) - 1/L_K sum_j q_i k_j^T / sqrt d`` (Eq. 4,
  the max-mean form of Lemma 1) is estimated on ``U = c * ceil(ln L_K)`` sampled keys per query:
  ``L_Q x U`` scores;
* only the top ``u = c * ceil(ln L_Q)`` queries ("active") attend to all keys: ``u x L_K`` scores;
* the other ("lazy") queries output ``mean(V)`` (encoder), or ``cumsum(V)`` in masked self-attention,
  as the reference code does (its ``_get_initial_context``).

Work and memory are ``L_Q * U + u * L_K`` score entries, i.e. O(L ln L).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..configuration.informer_lstf import _ceil_log

# Elements (batch * heads * queries * U * head_dim) gathered at once by the per-query sampler: ~64 MB in fp32.
_PER_QUERY_CHUNK_ELEMENTS = 1 << 24


def prob_sparse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    factor: int = 5,
    causal: bool = False,
    sampling: str = "shared",
    generator: torch.Generator | None = None,
    return_index: bool = False,
    return_parts: bool = False,
):
    """ProbSparse attention on ``(batch, heads, length, head_dim)`` tensors (Sec. 3.1, Eq. 3-4).

    Args:
        query / key / value: ``(B, H, L_Q, d)``, ``(B, H, L_K, d)``, ``(B, H, L_K, d)``.
        factor: the sampling factor c.
        causal: masked self-attention (decoder): active queries attend to keys ``j <= i`` only and lazy
            queries take ``cumsum(V)``; needs ``L_Q == L_K``. As in the reference code, which queries are
            active is decided on keys sampled from the whole sequence; every output row still only mixes
            values at positions ``<= i``.
        sampling: ``"shared"`` or ``"per_query"`` key sample (see :func:`sparsity_measurement`).
        generator: CPU generator for the key sample (default: torch's global RNG).
        return_index: also return the ``(B, H, u)`` indices of the active queries (``None`` when every
            query is active, i.e. ``u >= L_Q``, where the result equals canonical attention).
        return_parts: (non-causal only) return ``(out_top, index, mean_value)`` instead of the assembled
            output: the ``(B, H, u, d)`` outputs of the active queries, their indices, and the ``(B, H, d)``
            mean of V that every lazy query outputs; ``None`` when every query is active. The attention
            layer uses it to apply its output projection to ``u`` rows instead of ``L_Q``.

    Returns:
        ``(B, H, L_Q, d)`` attention output (and the active-query index if asked).
    """
    batch, heads, q_len, head_dim = query.shape
    k_len = key.shape[2]
    if causal and q_len != k_len:
        raise ValueError(f"causal ProbSparse attention is self-attention: got {q_len} queries and {k_len} keys")
    n_sample = min(factor * _ceil_log(k_len), k_len)
    n_top = min(factor * _ceil_log(q_len), q_len)

    if return_parts and (causal or n_top >= q_len):
        return None
    if n_top >= q_len:  # every query is active: canonical attention
        out = F.scaled_dot_product_attention(query, key, value, is_causal=causal)
        return (out, None) if return_index else out

    # The selection is an argmax (integer indices): no gradient flows through M, so the sampled scores
    # are computed without autograd and nothing of them is kept for backward.
    with torch.no_grad():
        measure = sparsity_measurement(query, key, n_sample, sampling=sampling, generator=generator)
        index = measure.topk(n_top, dim=-1, sorted=False).indices  # (B, H, u): the active queries
    gather_index = index.unsqueeze(-1).expand(-1, -1, -1, head_dim)
    q_top = query.gather(2, gather_index)  # (B, H, u, d)

    # Active queries attend to every key: a (B, H, u, L_K) score block, u = c ln L_Q.
    mask = None
    if causal:  # ProbMask of the reference: the causal mask restricted to the selected rows
        mask = torch.arange(k_len, device=query.device) <= index.unsqueeze(-1)
    out_top = F.scaled_dot_product_attention(q_top, key, value, attn_mask=mask)

    if return_parts:
        return out_top, index, value.mean(dim=2)
    # Lazy queries (Sec. 3.1: "the rest are filled with the mean"): mean(V); masked self-attention uses
    # the running sum of V, which only sees past values (reference `_get_initial_context`).
    if causal:
        context = value.cumsum(dim=2, dtype=torch.float32).to(value.dtype)
    else:
        context = value.mean(dim=2, keepdim=True).expand(batch, heads, q_len, head_dim)
    out = context.scatter(2, gather_index, out_top.to(context.dtype))
    return (out, index) if return_index else out


def sparsity_measurement(
    query: torch.Tensor,
    key: torch.Tensor,
    n_sample: int,
    sampling: str = "shared",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Estimate ``M_bar(q_i, K) = max_j s_ij - (1/L_K) sum_j s_ij`` on ``n_sample`` sampled keys per query.

    ``s_ij = q_i k_j^T`` (unscaled: a positive scale does not change the top-u choice). As in the reference
    code the sum runs over the sample but is divided by the full ``L_K``.

    Two samplers, both without any ``L_Q x L_K`` tensor:

    * ``"shared"`` (default): one sample of ``U`` key indices for every query of the batch: the scores are
      one ``(B, H, L_Q, U)`` matmul with the ``U`` gathered keys. Each query's estimate has the same
      distribution as with the reference's independent draws (U uniform keys); only the correlation across
      queries differs (all queries are ranked on the same keys, which if anything makes the ranking
      fairer). Cost: L_Q*U*d multiply-adds in a dense GEMM, memory B*H*L_Q*U.
    * ``"per_query"``: an independent ``(L_Q, U)`` index draw shared over batch and heads, exactly like the
      reference code. Gathering ``k_{idx[i, j]}`` for every query is ``B*H*L_Q*U*d`` elements (the
      reference materialises it all at once: larger than L^2 for short inputs, Informer2020 issue #313);
      here queries are processed in chunks so that at most ~16M elements exist at a time, and under
      ``no_grad`` nothing is kept for backward.
    """
    batch, heads, q_len, head_dim = query.shape
    k_len = key.shape[2]
    if sampling == "shared":
        idx = torch.randint(k_len, (n_sample,), generator=generator).to(key.device)
        scores = torch.matmul(query, key.index_select(2, idx).transpose(-1, -2))  # (B, H, L_Q, U)
        return scores.amax(dim=-1) - scores.sum(dim=-1) / k_len
    if sampling != "per_query":
        raise ValueError(f"sampling={sampling!r}: expected 'shared' or 'per_query'")
    idx = torch.randint(k_len, (q_len, n_sample), generator=generator).to(key.device)
    chunk = max(1, _PER_QUERY_CHUNK_ELEMENTS // max(1, batch * heads * n_sample * head_dim))
    parts = []
    for start in range(0, q_len, chunk):
        rows = idx[start : start + chunk]  # (c, U)
        k_sample = key[:, :, rows]  # (B, H, c, U, d)
        scores = torch.matmul(k_sample, query[:, :, start : start + chunk].unsqueeze(-1)).squeeze(-1)  # (B, H, c, U)
        parts.append(scores.amax(dim=-1) - scores.sum(dim=-1) / k_len)
    return torch.cat(parts, dim=-1)


class InformerLSTFAttention(nn.Module):
    """Multi-head attention layer: projections, ProbSparse or full attention, output projection.

    ``kind`` is ``"encoder"`` (self-attention), ``"decoder"`` (masked self-attention) or ``"cross"``
    (decoder-encoder attention, always canonical as in the paper's Fig. 2). ``mix`` re-lays the output as
    the reference code's ``AttentionLayer(mix=True)`` (used by the decoder self-attention): the
    ``(heads, time, head_dim)`` result is read as ``(time, heads * head_dim)`` without transposing.
    """

    def __init__(self, config, kind: str, layer_idx: int = 0, mix: bool = False):
        super().__init__()
        if kind not in ("encoder", "decoder", "cross"):
            raise ValueError(f"kind={kind!r}: expected 'encoder', 'decoder' or 'cross'")
        self.kind = kind
        self.mix = mix
        self.num_heads = config.num_attention_heads
        self.head_dim = config.d_model // config.num_attention_heads
        self.use_prob = config.attention_type == "prob" and kind != "cross"
        self.factor = config.sampling_factor
        self.sampling = config.probsparse_sampling
        self.deterministic_eval = config.deterministic_eval_sampling
        self.layer_idx = layer_idx
        self.attention_dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.d_model, config.d_model)
        self.k_proj = nn.Linear(config.d_model, config.d_model)
        self.v_proj = nn.Linear(config.d_model, config.d_model)
        self.out_proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, hidden_states: torch.Tensor, key_value_states: torch.Tensor | None = None) -> torch.Tensor:
        batch, q_len, _ = hidden_states.shape
        source = hidden_states if key_value_states is None else key_value_states
        k_len = source.shape[1]
        query = self.q_proj(hidden_states).view(batch, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key = self.k_proj(source).view(batch, k_len, self.num_heads, self.head_dim).transpose(1, 2)
        value = self.v_proj(source).view(batch, k_len, self.num_heads, self.head_dim).transpose(1, 2)
        causal = self.kind == "decoder"
        if self.use_prob:
            generator = None
            if self.deterministic_eval and not self.training:
                generator = torch.Generator().manual_seed(1000 * (self.kind == "decoder") + self.layer_idx)
            parts = None
            if not causal and not self.mix and isinstance(self.out_proj, nn.Linear):
                parts = prob_sparse_attention(query, key, value, factor=self.factor, sampling=self.sampling,
                                              generator=generator, return_parts=True)
            if parts is not None:
                return self._project_sparse(*parts, q_len)
            out = prob_sparse_attention(
                query, key, value, factor=self.factor, causal=causal, sampling=self.sampling, generator=generator
            )
        else:
            dropout = self.attention_dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, is_causal=causal)
        if self.mix:
            out = out.contiguous().view(batch, q_len, -1)
        else:
            out = out.transpose(1, 2).reshape(batch, q_len, -1)
        return self.out_proj(out)

    def _project_sparse(self, out_top, index, mean_value, q_len: int) -> torch.Tensor:
        """The output projection of a non-causal ProbSparse result, applied to the ``u`` active rows only.

        Every lazy query of head ``h`` outputs ``mean(V_h)``, so a time step whose queries are lazy in every
        head gets the same vector ``W_o concat_h mean(V_h) + b``; a step that is active in head ``h`` differs
        from it by ``W_o[:, h] (out_h - mean(V_h))`` (the projection is linear). So the projection costs
        ``H * u`` rows instead of ``L_Q``: with ``u = c ln L`` a quarter of the layer's matrix products
        disappears at long inputs, and the result equals ``out_proj`` of the assembled output.
        """
        batch, heads, n_top, head_dim = out_top.shape
        base = self.out_proj(mean_value.reshape(batch, 1, heads * head_dim))  # (B, 1, d_model)
        weight = self.out_proj.weight.view(-1, heads, head_dim)  # (d_model, H, head_dim)
        delta = out_top - mean_value.unsqueeze(2).to(out_top.dtype)
        contribution = torch.einsum("bhuk,ohk->bhuo", delta, weight.to(delta.dtype)).to(base.dtype)  # (B, H, u, d_model)
        rows = index.reshape(batch, heads * n_top, 1).expand(-1, -1, base.shape[-1])
        return base.expand(batch, q_len, -1).scatter_add(1, rows, contribution.reshape(batch, heads * n_top, -1))
