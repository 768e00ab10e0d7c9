"""MatFormer: a Llama-style decoder with nested FFN granularities (Devvrit et al., arXiv 2310.07707).

What is new here is only the nested FFN (:class:`MatFormerMLP`, paper §3 Eq. 1) and the granularity machinery
(joint loss, Eq. 2; run-time switching and Mix'n'Match, §3.3/§4.1; submodel extraction; self-speculative
decoding, §4.1.1). Attention, RMSNorm, rotary embeddings, the decoder-layer forward, the model forward and
the generation machinery are transformers' Llama ones, reused by subclassing. Module names are Llama's
(``q_proj``... ``gate_proj/up_proj/down_proj``) so peft target modules work unchanged.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaMLP,
    LlamaModel,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg

from ..configuration.matformer import MatFormerConfig

__all__ = [
    "MatFormerCausalLMOutputWithPast",
    "MatFormerDecoderLayer",
    "MatFormerForCausalLM",
    "MatFormerMLP",
    "MatFormerModel",
    "MatFormerPreTrainedModel",
]


@dataclass
class MatFormerCausalLMOutputWithPast(CausalLMOutputWithPast):
    """:class:`~transformers.modeling_outputs.CausalLMOutputWithPast` plus the loss of each granularity.

    Args:
        granularity_losses (`torch.FloatTensor` of shape `(num_granularities,)`, *optional*):
            In a joint or sampled training step, the (detached) loss of each configured granularity, in the
            order of ``config.granularity_names``; NaN for granularities not run in this step.
    """

    granularity_losses: torch.FloatTensor | None = None


class MatFormerMLP(LlamaMLP):
    """Llama's gated FFN whose hidden units are nested (paper §3, Eq. 1).

    Granularity ``m`` uses the first ``m`` hidden units: rows ``[:m]`` of ``gate_proj`` and ``up_proj`` (the
    same prefix for both halves of the gated unit) and columns ``[:m]`` of ``down_proj``. ``active_width``
    selects ``m``; at full width this is exactly :class:`LlamaMLP`.
    """

    def __init__(self, config: MatFormerConfig, layer_idx: int = 0):
        width = config.layer_intermediate_sizes[layer_idx]
        # LlamaMLP reads one int `intermediate_size`; a MatFormer layer may have its own (Mix'n'Match).
        super().__init__(
            SimpleNamespace(
                hidden_size=config.hidden_size,
                intermediate_size=width,
                mlp_bias=config.mlp_bias,
                hidden_act=config.hidden_act,
            )
        )
        self.config = config
        self.layer_idx = layer_idx
        self.active_width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, full = self.active_width, self.intermediate_size
        if m >= full:
            return super().forward(x)
        gate, up, down = self.gate_proj, self.up_proj, self.down_proj
        if type(gate) is nn.Linear and type(up) is nn.Linear and type(down) is nn.Linear:
            # Eq. 1: FFN_m(x) = W_down[:, :m] (act(W_gate[:m] x) * W_up[:m] x); slicing the weights means
            # the gradient of the unused rows/columns is exactly zero.
            h = self.act_fn(F.linear(x, gate.weight[:m], None if gate.bias is None else gate.bias[:m]))
            h = h * F.linear(x, up.weight[:m], None if up.bias is None else up.bias[:m])
            return F.linear(h, down.weight[:, :m], down.bias)
        # Wrapped projections (peft adapters, quantised layers): run them whole, keep the first m outputs,
        # and zero-pad the input of down_proj, which equals using its first m columns.
        h = self.act_fn(gate(x)[..., :m]) * up(x)[..., :m]
        return down(F.pad(h, (0, full - m)))

    def extra_repr(self) -> str:
        return f"layer_idx={self.layer_idx}, intermediate_size={self.intermediate_size}, active_width={self.active_width}"


class MatFormerDecoderLayer(LlamaDecoderLayer):
    """Llama's decoder layer (its forward unchanged) with a :class:`MatFormerMLP`."""

    def __init__(self, config: MatFormerConfig, layer_idx: int):
        # LlamaDecoderLayer.__init__ would build a LlamaMLP from one int width; build the same members here.
        GradientCheckpointingLayer.__init__(self)
        self.hidden_size = config.hidden_size
        self.self_attn = LlamaAttention(config=config, layer_idx=layer_idx)
        self.mlp = MatFormerMLP(config, layer_idx)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def __call__(self, *args, **kwargs):
        # Pin the FFN width at call time: gradient checkpointing re-runs `forward` during backward, when the
        # joint loop (or the user) may have switched granularity since.
        kwargs.setdefault("matformer_width", self.mlp.active_width)
        return super().__call__(*args, **kwargs)

    def forward(self, hidden_states, *args, matformer_width: int | None = None, **kwargs):
        """Llama's decoder-layer forward with the FFN at ``matformer_width`` (default: the active width)."""
        previous = self.mlp.active_width
        if matformer_width is not None:
            self.mlp.active_width = matformer_width
        try:
            return super().forward(hidden_states, *args, **kwargs)
        finally:
            self.mlp.active_width = previous


class MatFormerPreTrainedModel(LlamaPreTrainedModel):
    """Base class: weight init, loading, and the granularity controls shared by every MatFormer model."""

    config: MatFormerConfig
    config_class = MatFormerConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MatFormerDecoderLayer"]
    _can_record_outputs = {"hidden_states": MatFormerDecoderLayer, "attentions": LlamaAttention}

    # -- granularity (paper §3.3: one model, many sizes) ---------------------------------------------

    def _matformer_mlps(self) -> list[MatFormerMLP]:
        mlps = [m for m in self.modules() if isinstance(m, MatFormerMLP)]
        return sorted(mlps, key=lambda m: m.layer_idx)

    @property
    def active_widths(self) -> list[int]:
        """The FFN width each layer uses now."""
        return [m.active_width for m in self._matformer_mlps()]

    def set_granularity(self, granularity: str | int | list | None = None):
        """Choose the submodel the forward pass runs (no copy; paper §3.3).

        Args:
            granularity: a name from ``config.granularity_names`` (``"s"``, ``"m"``, ``"l"``, ``"xl"``), an
                FFN width, ``None``/``"full"`` for the stored width, or a list with one name/width per layer
                (Mix'n'Match, paper §4.1).

        Returns:
            ``self``, so calls chain (``model.set_granularity("s").generate(...)``).
        """
        widths = self.config.resolve_widths(granularity)
        for mlp in self._matformer_mlps():
            mlp.active_width = widths[mlp.layer_idx]
        return self

    @contextlib.contextmanager
    def granularity(self, granularity: str | int | list | None):
        """Context manager: run a block at ``granularity``, then restore the previous widths."""
        previous = self.active_widths
        self.set_granularity(granularity)
        try:
            yield self
        finally:
            self.set_granularity(previous)

    def num_parameters_at(self, granularity: str | int | list | None = None) -> int:
        """Parameters of the submodel at ``granularity`` (default: the active widths), as if extracted."""
        from ..matformer_utils import count_parameters_for_widths

        widths = self.active_widths if granularity is None else self.config.resolve_widths(granularity)
        return count_parameters_for_widths(self.config, widths, lm_head=hasattr(self, "lm_head"))

    def extract_submodel(self, granularity: str | int | list | None = None):
        """A standalone, smaller model of the same class whose weights are the slices of this one.

        The result has a per-layer ``intermediate_size`` (the chosen widths); it saves and loads like any
        model and its logits equal this model's at that granularity. The granularities that fit in every
        layer of the submodel stay available in it (with their names and loss weights).

        Args:
            granularity: as for :meth:`set_granularity`; ``None`` takes the active widths.
        """
        widths = self.active_widths if granularity is None else self.config.resolve_widths(granularity)
        cfg = self.config
        keep = [i for i, w in enumerate(cfg.granularities) if w <= min(widths)]
        new_config = type(cfg).from_dict(
            {
                **cfg.to_dict(),
                "intermediate_size": widths[0] if len(set(widths)) == 1 else list(widths),
                "granularities": [cfg.granularities[i] for i in keep],
                "granularity_names": [cfg.granularity_names[i] for i in keep],
                "granularity_loss_weights": [cfg.granularity_loss_weights[i] for i in keep],
                "default_granularity": None,
            }
        )
        new_config._attn_implementation = cfg._attn_implementation
        new_config.dtype = cfg.dtype
        state = self.state_dict()
        for name, mlp in self.named_modules():
            if isinstance(mlp, MatFormerMLP):
                m = widths[mlp.layer_idx]
                for proj in ("gate_proj", "up_proj"):
                    for kind in ("weight", "bias"):
                        key = f"{name}.{proj}.{kind}"
                        if key in state:
                            state[key] = state[key][:m]
                state[f"{name}.down_proj.weight"] = state[f"{name}.down_proj.weight"][:, :m]
        first = next(self.parameters())
        with torch.device("meta"):
            sub = type(self)(new_config)
        sub.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True, assign=True)
        if getattr(sub.config, "tie_word_embeddings", False) and hasattr(sub, "tie_weights"):
            sub.tie_weights()
        # Non-persistent buffers (rotary frequencies) are not in the state dict: rebuild those modules.
        for name, module in list(sub.named_modules()):
            if isinstance(module, LlamaRotaryEmbedding):
                parent = sub.get_submodule(name.rpartition(".")[0]) if "." in name else sub
                setattr(parent, name.rpartition(".")[2], LlamaRotaryEmbedding(config=sub.config))
        sub.to(device=first.device)
        if getattr(self, "generation_config", None) is not None and hasattr(sub, "generation_config"):
            sub.generation_config = self.generation_config.__class__.from_dict(self.generation_config.to_dict())
        sub.train(self.training)
        return sub

    def _apply_default_granularity(self) -> None:
        if self.config.default_granularity is not None:
            self.set_granularity(self.config.default_granularity)


class MatFormerModel(MatFormerPreTrainedModel, LlamaModel):
    """The bare MatFormer decoder (:class:`~transformers.LlamaModel` with nested FFNs)."""

    def __init__(self, config: MatFormerConfig):
        # LlamaModel.__init__ would build Llama decoder layers; the members and the forward are Llama's.
        LlamaPreTrainedModel.__init__(self, config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [MatFormerDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()
        self._apply_default_granularity()


class MatFormerForCausalLM(MatFormerPreTrainedModel, LlamaForCausalLM):
    """MatFormer language model (MatLM) with the joint multi-granularity objective (paper §3, Eq. 2).

    In training mode, a forward pass with ``labels`` optimises ``config.granularity_training``:

    * ``"joint"``: Σ_i λ_i L(F_i(x), y) over every configured granularity, on the same batch;
    * ``"sampled"``: the loss of one granularity drawn with probability ∝ λ_i (one FFN pass per step);
    * ``"current"``: only the active granularity.

    The output's ``granularity_losses`` holds each granularity's loss (see :class:`MatFormerTrainer` in
    ``hf_plugins.matformer_utils`` to log them through ``Trainer``). In eval mode, and without labels, the
    forward pass is the plain Llama one at the active granularity, so ``generate`` (with its KV cache) and
    assisted generation work as for any causal LM.
    """

    def __init__(self, config: MatFormerConfig):
        LlamaPreTrainedModel.__init__(self, config)
        self.model = MatFormerModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._speculative_stats = None
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        granularity_training: str | None = None,
        **kwargs,
    ) -> MatFormerCausalLMOutputWithPast:
        r"""Llama's causal-LM forward; with ``labels`` in training mode, the MatFormer objective.

        granularity_training (`str`, *optional*): overrides ``config.granularity_training`` for this call.
        """
        self._check_inputs(input_ids, inputs_embeds, labels)
        mode = granularity_training or self.config.granularity_training
        names = self.config.granularity_names
        common = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
        if labels is None or not self.training or mode == "current" or not names:
            out = LlamaForCausalLM.forward(self, cache=cache, labels=labels, use_cache=use_cache, **common)
            return MatFormerCausalLMOutputWithPast(**out)

        weights = self.config.granularity_loss_weights
        if mode == "joint":
            chosen = [i for i, w in enumerate(weights) if w > 0]
        else:  # "sampled": one granularity per step, drawn with probability ∝ λ_i
            chosen = [int(torch.multinomial(torch.tensor(weights, dtype=torch.float), 1).item())]
        losses = torch.full((len(names),), float("nan"))
        total, out = None, None
        with self.granularity(self.active_widths):  # restores the active widths afterwards
            for i in chosen:
                self.set_granularity(names[i])
                out = LlamaForCausalLM.forward(self, labels=labels, use_cache=False, **common)
                term = out.loss if mode == "sampled" else weights[i] * out.loss
                total = term if total is None else total + term
                losses[i] = out.loss.detach().float().cpu()
        return MatFormerCausalLMOutputWithPast(
            loss=total,
            logits=out.logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            granularity_losses=losses,
        )

    def _check_inputs(self, input_ids, inputs_embeds, labels) -> None:
        if input_ids is not None and input_ids.dim() != 2:
            raise ValueError(f"input_ids: expected shape (batch, sequence_length), got {tuple(input_ids.shape)}")
        if inputs_embeds is not None and (inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size):
            raise ValueError(
                f"inputs_embeds: expected shape (batch, sequence_length, {self.config.hidden_size}), "
                f"got {tuple(inputs_embeds.shape)}"
            )
        ref = input_ids if input_ids is not None else inputs_embeds
        if labels is not None and ref is not None and tuple(labels.shape) != tuple(ref.shape[:2]):
            raise ValueError(f"labels: expected shape {tuple(ref.shape[:2])} (as the input), got {tuple(labels.shape)}")

    # -- self-speculative decoding (paper §4.1.1) ----------------------------------------------------

    def _get_candidate_generator(self, *args, **kwargs):
        """transformers' candidate generator, instrumented to count proposed/accepted draft tokens."""
        generator = super()._get_candidate_generator(*args, **kwargs)
        stats = self._speculative_stats
        if stats is None:
            return generator
        get_candidates, update = generator.get_candidates, generator.update_candidate_strategy

        def counting_get_candidates(input_ids, *a, **k):
            candidates, logits = get_candidates(input_ids, *a, **k)
            stats.proposed += int(candidates.shape[1] - input_ids.shape[1])
            stats.rounds += 1
            return candidates, logits

        def counting_update(input_ids, scores, num_matches):
            stats.accepted += int(num_matches)
            return update(input_ids, scores, num_matches)

        generator.get_candidates = counting_get_candidates
        generator.update_candidate_strategy = counting_update
        return generator

    # -- MatFormer-izing a dense checkpoint ----------------------------------------------------------

    @classmethod
    def from_dense(
        cls,
        dense_model: Any,
        granularities: list[int] | None = None,
        calibration_input_ids: torch.LongTensor | None = None,
        **config_overrides,
    ) -> "MatFormerForCausalLM":
        """Turn a dense Llama-style causal LM into a MatFormer, to be trained jointly afterwards.

        Every FFN's hidden units are permuted so the most important come first, so that prefixes (the
        nested granularities) keep the most useful units; a permutation of hidden units does not change
        the function, so the result equals the dense model exactly at full width.

        Importance of unit j: with ``calibration_input_ids``, the mean |act(g_j·x) (u_j·x)| over the
        calibration tokens times ||W_down[:, j]||; without, ||W_gate[j]|| ||W_up[j]|| ||W_down[:, j]||.

        Args:
            dense_model: a ``LlamaForCausalLM`` (or any model with the same parameter names).
            granularities: the nested widths; default ``{1/8, 1/4, 1/2, 1} x intermediate_size`` (the paper's
                {0.5, 1, 2, 4} x d_model when d_ff = 4 d_model).
            calibration_input_ids: optional token ids whose activations measure importance.
            config_overrides: extra :class:`MatFormerConfig` fields (``granularity_names``...).
        """
        dense_cfg = dense_model.config
        inter = dense_cfg.intermediate_size
        if not isinstance(inter, int):
            raise ValueError(f"from_dense: expected one int intermediate_size in the dense config, got {inter!r}")
        if granularities is None:
            granularities = sorted({max(1, inter // 8), max(1, inter // 4), max(1, inter // 2), inter})
        data = {k: v for k, v in dense_cfg.to_dict().items() if k not in ("model_type", "architectures")}
        data.update(intermediate_size=inter, granularities=list(granularities), **config_overrides)
        config = MatFormerConfig.from_dict(data)
        config._attn_implementation = dense_cfg._attn_implementation
        scores = _dense_importance(dense_model, calibration_input_ids)
        state = {k: v.detach().clone() for k, v in dense_model.state_dict().items()}
        for prefix, score in scores.items():
            order = torch.argsort(score, descending=True, stable=True)
            for proj in ("gate_proj", "up_proj"):
                for kind in ("weight", "bias"):
                    key = f"{prefix}.{proj}.{kind}"
                    if key in state:
                        state[key] = state[key][order]
            key = f"{prefix}.down_proj.weight"
            state[key] = state[key][:, order]
        model = cls(config)
        model.load_state_dict(state, strict=True)
        return model.to(next(dense_model.parameters()).device)


@torch.no_grad()
def _dense_importance(model, calibration_input_ids) -> dict[str, torch.Tensor]:
    """Importance of every FFN hidden unit, per MLP module name (see ``from_dense``)."""
    mlps = {
        name: m
        for name, m in model.named_modules()
        if all(hasattr(m, p) for p in ("gate_proj", "up_proj", "down_proj", "act_fn"))
    }
    if not mlps:
        raise ValueError("from_dense: the dense model has no gated FFN modules (gate_proj/up_proj/down_proj)")
    down_norms = {n: m.down_proj.weight.float().norm(dim=0) for n, m in mlps.items()}
    if calibration_input_ids is None:
        return {
            n: m.gate_proj.weight.float().norm(dim=1) * m.up_proj.weight.float().norm(dim=1) * down_norms[n]
            for n, m in mlps.items()
        }
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name, m in mlps.items():

        def hook(module, args, _output, name=name):
            x = args[0]
            h = (module.act_fn(module.gate_proj(x)) * module.up_proj(x)).abs().float()
            sums[name] = sums.get(name, 0) + h.reshape(-1, h.shape[-1]).mean(0)

        hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(input_ids=calibration_input_ids.to(next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {n: sums[n] * down_norms[n] for n in mlps}
