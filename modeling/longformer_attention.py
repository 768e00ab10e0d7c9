"""A faster, exact implementation of Longformer's sliding-window + global self-attention.

transformers' :class:`~transformers.models.longformer.modeling_longformer.LongformerSelfAttention` computes the
band of width ``2w + 1`` (``w`` = one-sided window) with overlapping chunks of ``2w`` queries against ``2w`` keys
(about twice the useful work), diagonalises them with several pad/reshape copies, and is eager only. The
attention it defines is simple (Beltagy et al. 2020, Section 3.1):

* a query ``i`` without global attention attends to the keys ``j`` with ``|i - j| <= w`` that are neither
  padding nor global, plus to every global key (with the *local* key/value projections);
* a global query attends to every non-padding key with the separate ``*_global`` projections;
* padding queries output zeros.

:class:`FastLongformerSelfAttention` computes exactly that, but blocked: the sequence is cut into blocks of
``w`` queries, each block attends to its three neighbouring key blocks (``3w`` keys) plus the ``G`` global keys
under a band mask, through :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels on CPU and
GPU, no ``L x (2w+1)`` probability tensor kept for backward). The global rows are one more SDPA call. It is a
subclass with the same parameters, so a checkpoint does not change; :func:`set_attention_backend` switches any
model built from Longformer layers between the two implementations in place.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.led.modeling_led import LEDEncoderSelfAttention
from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

ATTENTION_BACKENDS = ("fast", "hf")


class _BlockedSlidingWindowAttention:
    """The blocked forward shared by the Longformer and LED encoder variants (a mixin placed before the
    transformers class, so ``super().forward`` is transformers' own implementation)."""

    def forward(
        self,
        hidden_states,
        attention_mask=None,
        is_index_masked=None,
        is_index_global_attn=None,
        is_global_attn=None,
        output_attentions=False,
    ):
        if output_attentions:
            return super().forward(
                hidden_states,
                attention_mask=attention_mask,
                is_index_masked=is_index_masked,
                is_index_global_attn=is_index_global_attn,
                is_global_attn=is_global_attn,
                output_attentions=output_attentions,
            )
        batch_size, seq_len, embed_dim = hidden_states.shape
        w = self.one_sided_attn_window_size
        if embed_dim != self.embed_dim:
            raise ValueError(f"hidden_states: expected last dimension {self.embed_dim}, got shape {tuple(hidden_states.shape)}")
        if seq_len % w != 0:
            raise ValueError(
                f"hidden_states: sequence length {seq_len} must be a multiple of the one-sided window {w} "
                "(LongformerModel pads inputs to a multiple of attention_window)"
            )
        if attention_mask is None:
            attention_mask = hidden_states.new_zeros(batch_size, seq_len)
        if is_index_masked is None:
            is_index_masked = attention_mask < 0
        if is_index_global_attn is None:
            is_index_global_attn = attention_mask > 0
        if is_global_attn is None:
            is_global_attn = bool(is_index_global_attn.any())
        local_ok = attention_mask == 0  # keys taking part in the band: not padding, not global
        dropout = self.dropout if self.training else 0.0

        n_heads, head_dim = self.num_heads, self.head_dim
        # Same arithmetic as the parent (project, then divide the query by sqrt(head_dim)).
        query = self.query(hidden_states) / math.sqrt(head_dim)
        key = self.key(hidden_states)
        value = self.value(hidden_states)

        n_blocks = seq_len // w
        # (B, L, H*d) -> (B, nb, H, w, d): block c holds queries [c*w, (c+1)*w).
        q_blocks = query.view(batch_size, n_blocks, w, n_heads, head_dim).permute(0, 1, 3, 2, 4)
        k_blocks = _neighbourhood(key.view(batch_size, seq_len, n_heads, head_dim), w)
        v_blocks = _neighbourhood(value.view(batch_size, seq_len, n_heads, head_dim), w)
        # Key t of block c is position (c-1)*w + t; query s of block c is c*w + s: |i-j| <= w <=> s <= t <= s+2w.
        band = _band(w, hidden_states.device)
        key_ok = F.pad(local_ok, (w, w), value=False).unfold(1, 3 * w, w)  # (B, nb, 3w)
        # The diagonal is always allowed so that no row is empty (padding and global query rows are replaced below).
        mask = (band[0] & key_ok[:, :, None, :]) | band[1]  # (B, nb, w, 3w)

        if is_global_attn:
            g_idx, g_ok = _global_indices(is_index_global_attn)  # (B, G), (B, G)
            g_keys = _gather(key, g_idx).view(batch_size, 1, -1, n_heads, head_dim).permute(0, 1, 3, 2, 4)
            g_vals = _gather(value, g_idx).view(batch_size, 1, -1, n_heads, head_dim).permute(0, 1, 3, 2, 4)
            n_global = g_idx.shape[1]
            expand = (batch_size, n_blocks, n_heads, n_global, head_dim)
            k_blocks = torch.cat([g_keys.expand(expand), k_blocks], dim=3)
            v_blocks = torch.cat([g_vals.expand(expand), v_blocks], dim=3)
            mask = torch.cat([g_ok[:, None, None, :].expand(batch_size, n_blocks, w, n_global), mask], dim=3)

        out = F.scaled_dot_product_attention(
            q_blocks.reshape(batch_size * n_blocks, n_heads, w, head_dim),
            k_blocks.reshape(batch_size * n_blocks, n_heads, -1, head_dim),
            v_blocks.reshape(batch_size * n_blocks, n_heads, -1, head_dim),
            attn_mask=mask.reshape(batch_size * n_blocks, 1, w, -1),
            dropout_p=dropout,
            scale=1.0,
        )
        out = out.view(batch_size, n_blocks, n_heads, w, head_dim).permute(0, 1, 3, 2, 4).reshape(
            batch_size, seq_len, embed_dim
        )

        if is_global_attn:
            out = self._with_global_rows(hidden_states, out, g_idx, g_ok, is_index_masked, dropout)
        # Padding queries output zeros, as in the parent.
        out = out.masked_fill(is_index_masked[:, :, None], 0.0)
        return (out,)

    def _with_global_rows(self, hidden_states, out, g_idx, g_ok, is_index_masked, dropout):
        """Global queries attend to every non-padding key with the ``*_global`` projections."""
        batch_size, seq_len, _ = hidden_states.shape
        n_heads, head_dim = self.num_heads, self.head_dim
        g_hidden = _gather(hidden_states, g_idx)  # (B, G, D)
        q = (self.query_global(g_hidden) / math.sqrt(head_dim)).view(batch_size, -1, n_heads, head_dim)
        k = self.key_global(hidden_states).view(batch_size, seq_len, n_heads, head_dim)
        v = self.value_global(hidden_states).view(batch_size, seq_len, n_heads, head_dim)
        g_out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=~is_index_masked[:, None, None, :],
            dropout_p=dropout,
            scale=1.0,
        )  # (B, H, G, d)
        g_out = g_out.transpose(1, 2).reshape(batch_size, -1, self.embed_dim)
        # Write the valid global rows only (index_put out of place: no duplicate index, exact gradients).
        rows, slots = g_ok.nonzero(as_tuple=True)
        return out.index_put((rows, g_idx[rows, slots]), g_out[rows, slots])


class FastLongformerSelfAttention(_BlockedSlidingWindowAttention, LongformerSelfAttention):
    """Drop-in replacement of ``LongformerSelfAttention`` (same weights, same outputs), blocked SDPA inside.

    ``output_attentions=True`` falls back to the parent's implementation, because the fused kernels do not
    return probabilities.
    """


class FastLEDEncoderSelfAttention(_BlockedSlidingWindowAttention, LEDEncoderSelfAttention):
    """The same for LED's encoder (``LEDEncoderSelfAttention`` is a copy of ``LongformerSelfAttention``)."""


_BACKEND_CLASSES = {
    LongformerSelfAttention: {"fast": FastLongformerSelfAttention, "hf": LongformerSelfAttention},
    FastLongformerSelfAttention: {"fast": FastLongformerSelfAttention, "hf": LongformerSelfAttention},
    LEDEncoderSelfAttention: {"fast": FastLEDEncoderSelfAttention, "hf": LEDEncoderSelfAttention},
    FastLEDEncoderSelfAttention: {"fast": FastLEDEncoderSelfAttention, "hf": LEDEncoderSelfAttention},
}


def set_attention_backend(model: nn.Module, backend: str) -> nn.Module:
    """Switch every Longformer self-attention in ``model`` to ``"fast"`` or ``"hf"``, in place.

    Works on any module tree built from transformers' ``LongformerSelfAttention`` or ``LEDEncoderSelfAttention``
    (``LongformerModel``, ``LongformerForMaskedLM``, ``LEDForConditionalGeneration``,
    ``LongformerRTDForPreTraining``...). Parameters are untouched: the classes have the same weights, only
    ``forward`` differs.
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention_backend={backend!r}: expected one of {ATTENTION_BACKENDS}")
    for module in model.modules():
        targets = _BACKEND_CLASSES.get(type(module))
        if targets is not None:
            # Same parameters and buffers: swapping the class keeps every weight and hook.
            module.__class__ = targets[backend]
    return model


# -- helpers -------------------------------------------------------------------------------------------


def _neighbourhood(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, L, H, d) -> (B, L/w, H, 3w, d): for each block of ``w`` queries, the keys of blocks c-1, c, c+1."""
    padded = F.pad(x, (0, 0, 0, 0, w, w))  # zeros outside the sequence (masked by the band)
    blocks = padded.unfold(1, 3 * w, w)  # (B, nb, H, d, 3w)
    return blocks.transpose(-1, -2)


_BAND_CACHE: dict = {}


def _band(w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The static (w, 3w) band ``s <= t <= s + 2w`` and its diagonal ``t == s + w``."""
    key = (w, str(device))
    if key not in _BAND_CACHE:
        s = torch.arange(w, device=device)[:, None]
        t = torch.arange(3 * w, device=device)[None, :]
        _BAND_CACHE[key] = ((t >= s) & (t <= s + 2 * w), t == s + w)
    return _BAND_CACHE[key]


def _global_indices(is_index_global_attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the global tokens of each row, left-aligned and padded with 0: (B, G) and its validity."""
    counts = is_index_global_attn.sum(dim=1)
    n_global = int(counts.max())
    # A stable sort puts the global positions first, in order.
    order = torch.sort(is_index_global_attn.to(torch.int8), dim=1, descending=True, stable=True).indices
    idx = order[:, :n_global]
    ok = torch.arange(n_global, device=idx.device)[None, :] < counts[:, None]
    return idx.masked_fill(~ok, 0), ok


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x: (B, L, D), idx: (B, G) -> (B, G, D)."""
    return x.gather(1, idx[:, :, None].expand(-1, -1, x.shape[-1]))
