"""MatFormer helpers outside the model: parameter counts, Mix'n'Match enumeration, self-speculative decoding,
and a ``Trainer`` that logs the loss of every granularity.

Paper: Devvrit, Kudugunta, Kusupati et al., "MatFormer: Nested Transformer for Elastic Inference"
(arXiv 2310.07707, NeurIPS 2024).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

__all__ = [
    "MatFormerTrainer",
    "MixNMatchCandidate",
    "SpeculativeStats",
    "count_parameters_for_widths",
    "mix_n_match_configurations",
    "self_speculative_generate",
]


def count_parameters_for_widths(config, widths: Sequence[int], lm_head: bool = True) -> int:
    """Parameters of a MatFormer/Llama causal LM whose layer i has FFN width ``widths[i]``.

    Counts what ``extract_submodel(widths).num_parameters()`` counts (tied embeddings once), without
    building the model; ``lm_head=False`` for the bare decoder (``MatFormerModel``).
    """
    h, n_layers = config.hidden_size, config.num_hidden_layers
    if len(widths) != n_layers:
        raise ValueError(f"widths has {len(widths)} entries; expected num_hidden_layers={n_layers}")
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q_out = config.num_attention_heads * head_dim
    kv_out = config.num_key_value_heads * head_dim
    attn = h * q_out + 2 * h * kv_out + q_out * h
    if config.attention_bias:
        attn += q_out + 2 * kv_out + h
    total = config.vocab_size * h + h  # embeddings, final norm
    if lm_head and not config.tie_word_embeddings:
        total += config.vocab_size * h
    for w in widths:
        ffn = 3 * h * int(w) + ((2 * int(w) + h) if config.mlp_bias else 0)
        total += attn + ffn + 2 * h  # two RMSNorms
    return total


@dataclass
class MixNMatchCandidate:
    """One Mix'n'Match submodel: a granularity per layer and its size."""

    names: list[str]
    widths: list[int]
    num_parameters: int

    @property
    def label(self) -> str:
        """A compact name such as ``s-s-m-m``."""
        return "-".join(self.names)


def mix_n_match_configurations(
    config_or_model: Any,
    adjacent_only: bool = True,
    include_uniform: bool = True,
    max_parameters: int | None = None,
) -> list[MixNMatchCandidate]:
    """Enumerate the Mix'n'Match submodels the paper recommends, smallest first (paper §4.1).

    The paper's heuristic: configurations whose granularity is monotonically non-decreasing with depth and
    changes slowly lie on the accuracy-vs-parameters frontier. We enumerate every non-decreasing sequence of
    the configured granularities over the layers; with ``adjacent_only`` (default) only sequences that use
    at most two neighbouring granularities (``s..s m..m``, ``m..m l..l``, ...), the slowest changes.

    Args:
        config_or_model: a :class:`MatFormerConfig` or a model that has one.
        adjacent_only: keep only sequences mixing two neighbouring granularities.
        include_uniform: keep the plain S/M/L/XL models too.
        max_parameters: keep only submodels with at most this many parameters.

    Returns:
        :class:`MixNMatchCandidate` list sorted by parameter count.
    """
    config = getattr(config_or_model, "config", config_or_model)
    names, widths = list(config.granularity_names), list(config.granularities)
    n_layers = config.num_hidden_layers
    out = []
    for idx in itertools.combinations_with_replacement(range(len(widths)), n_layers):  # non-decreasing
        distinct = len(set(idx))
        if distinct == 1 and not include_uniform:
            continue
        if adjacent_only and max(idx) - min(idx) > 1:
            continue
        layer_widths = [widths[i] for i in idx]
        count = count_parameters_for_widths(config, layer_widths)
        if max_parameters is not None and count > max_parameters:
            continue
        out.append(MixNMatchCandidate([names[i] for i in idx], layer_widths, count))
    return sorted(out, key=lambda c: (c.num_parameters, c.widths))


@dataclass
class SpeculativeStats:
    """What a self-speculative generation did: draft tokens proposed and accepted, rounds, time."""

    proposed: int = 0
    accepted: int = 0
    rounds: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    draft_widths: list[int] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens / proposed draft tokens."""
        return self.accepted / self.proposed if self.proposed else float("nan")

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("nan")


def self_speculative_generate(
    model,
    input_ids,
    draft: Any = "s",
    draft_model=None,
    max_new_tokens: int = 64,
    num_assistant_tokens: int | None = None,
    assistant_confidence_threshold: float | None = None,
    **generate_kwargs,
):
    """Greedy self-speculative decoding (paper §4.1.1): a nested submodel drafts, the model verifies.

    One call of transformers' assisted generation, ``model.generate(input_ids,
    assistant_model=model.extract_submodel(draft))``, instrumented to count how many draft tokens were
    accepted. With greedy decoding the output equals ``model.generate(input_ids)``.

    Args:
        model: a :class:`MatFormerForCausalLM` (its active granularity is the verifier).
        input_ids: the prompt, shape ``(1, length)`` (assisted generation supports batch size 1).
        draft: the draft granularity (name, width or per-layer list), extracted once.
        draft_model: an already extracted draft (then ``draft`` is ignored); reuse it across calls.
        num_assistant_tokens: draft tokens per round to start with (transformers adapts it; default 20).
        assistant_confidence_threshold: the draft stops a round when its top probability falls below this
            (transformers' default 0.4); 0 always drafts ``num_assistant_tokens``.
        max_new_tokens, generate_kwargs: passed to ``generate``.

    Returns:
        ``(sequences, SpeculativeStats)``.
    """
    import torch

    if input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError(f"input_ids: expected shape (1, length), got {tuple(input_ids.shape)}")
    if draft_model is None:
        draft_model = model.extract_submodel(draft)
        draft_model.eval()
    if num_assistant_tokens is not None:
        draft_model.generation_config.num_assistant_tokens = int(num_assistant_tokens)
    if assistant_confidence_threshold is not None:
        draft_model.generation_config.assistant_confidence_threshold = float(assistant_confidence_threshold)
    stats = SpeculativeStats(draft_widths=list(getattr(draft_model, "active_widths", [])))
    generate_kwargs.setdefault("do_sample", False)
    model._speculative_stats = stats
    try:
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                input_ids, assistant_model=draft_model, max_new_tokens=max_new_tokens, **generate_kwargs
            )
        stats.seconds = time.perf_counter() - start
    finally:
        model._speculative_stats = None
    sequences = out.sequences if hasattr(out, "sequences") else out
    stats.new_tokens = int(sequences.shape[1] - input_ids.shape[1])
    return out, stats


# -- Trainer that logs each granularity's loss ---------------------------------------------------------


def _build_trainer_class():
    import torch
    from transformers import Trainer

    class MatFormerTrainer(Trainer):
        """``transformers.Trainer`` that logs the loss of every MatFormer granularity.

        Training: the per-granularity losses a joint/sampled step returns (``granularity_losses``) are
        averaged over the logging interval and logged as ``loss_s``, ``loss_m``... next to ``loss``.
        Evaluation: ``evaluate`` also runs the eval set at every granularity in ``eval_granularities``
        (default: all configured ones) and reports ``{prefix}_loss_{name}``; ``{prefix}_loss`` stays the
        loss at the model's active granularity.
        """

        def __init__(self, *args, eval_granularities: Sequence[str] | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.eval_granularities = eval_granularities
            self._granularity_sum = None
            self._granularity_count = None
            self._pending_eval_extras: dict[str, float] = {}

        def _matformer(self):
            model = self.accelerator.unwrap_model(self.model)
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            return base if hasattr(base, "set_granularity") else None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
            losses = outputs.get("granularity_losses") if isinstance(outputs, dict) else None
            if losses is not None and model.training:
                losses = losses.detach().float().cpu()
                seen = ~torch.isnan(losses)
                if self._granularity_sum is None:
                    self._granularity_sum = torch.zeros_like(losses)
                    self._granularity_count = torch.zeros_like(losses)
                self._granularity_sum += torch.where(seen, losses, torch.zeros_like(losses))
                self._granularity_count += seen.float()
            return (loss, outputs) if return_outputs else loss

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            base = self._matformer()
            if "loss" in logs and self._granularity_sum is not None and base is not None:
                for name, s, c in zip(base.config.granularity_names, self._granularity_sum, self._granularity_count):
                    if c > 0:
                        logs[f"loss_{name}"] = round(float(s / c), 4)
                self._granularity_sum = self._granularity_count = None
            if self._pending_eval_extras and any(k.endswith("_loss") for k in logs):
                logs.update(self._pending_eval_extras)
                self._pending_eval_extras = {}
            super().log(logs, start_time)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
            base = self._matformer()
            dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
            if base is None or isinstance(dataset, dict):
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            names = list(self.eval_granularities or base.config.granularity_names)
            extras: dict[str, float] = {}
            dataloader = self.get_eval_dataloader(eval_dataset)
            with base.granularity(base.active_widths):
                for name in names:
                    base.set_granularity(name)
                    out = self.evaluation_loop(
                        dataloader, description=f"Evaluation ({name})", prediction_loss_only=True,
                        ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix,
                    )
                    value = out.metrics.get(f"{metric_key_prefix}_loss")
                    if value is not None:
                        extras[f"{metric_key_prefix}_loss_{name}"] = float(value)
                        extras[f"{metric_key_prefix}_perplexity_{name}"] = float(math.exp(min(value, 50.0)))
            self._pending_eval_extras = extras
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            self._pending_eval_extras = {}
            metrics.update(extras)
            return metrics

    MatFormerTrainer.__module__ = __name__
    return MatFormerTrainer


def __getattr__(name: str):
    # The Trainer subclass is built on first use so that importing this module stays cheap.
    if name == "MatFormerTrainer":
        cls = _build_trainer_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
