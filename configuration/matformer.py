"""MatFormer configuration (Devvrit, Kudugunta, Kusupati et al., "MatFormer: Nested Transformer for Elastic
Inference", arXiv 2310.07707, NeurIPS 2024).

A MatFormer language model (MatLM) is a Llama-style decoder whose FFN blocks are *nested*: granularity i uses
the first ``m_i`` hidden units of every FFN (paper §3, Eq. 1: ``FFN_i(x) = W2[:, :m_i] σ(W1[:m_i] x)``). The
configuration is therefore a :class:`~transformers.LlamaConfig` plus the nested widths, their names, the
loss weights of the joint objective (§3, Eq. 2) and how granularities are visited during training.
"""

from __future__ import annotations

from collections.abc import Sequence

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig

from ..registry import PluginSpec

#: FFN widths of the four default granularities, as multiples of ``hidden_size`` (paper §3: g = 4
#: exponentially spaced granularities with d_ff = 4 d_model, i.e. {0.5, 1, 2, 4} x d_model = S, M, L, XL).
DEFAULT_GRANULARITY_RATIOS = (0.5, 1.0, 2.0, 4.0)
DEFAULT_GRANULARITY_NAMES = ("s", "m", "l", "xl")
GRANULARITY_TRAINING_MODES = ("joint", "sampled", "current")


@strict
class MatFormerConfig(LlamaConfig):
    r"""Configuration of :class:`~hf_plugins.MatFormerModel` / :class:`~hf_plugins.MatFormerForCausalLM`.

    Every Llama field keeps its meaning; the MatFormer fields are:

    Args:
        granularities (`list[int]`, *optional*):
            The nested FFN widths, strictly increasing (paper §3). Defaults to ``{0.5, 1, 2, 4} x hidden_size``.
        granularity_names (`list[str]`, *optional*):
            One name per granularity, used by ``set_granularity("s")`` and in the logged losses. Defaults to
            ``["s", "m", "l", "xl"]`` for four granularities, else ``["g0", "g1", ...]``.
        intermediate_size (`int` or `list[int]`, *optional*):
            The stored FFN width, one for all layers or one per layer (an extracted Mix'n'Match submodel has
            a list). Defaults to the largest granularity. Every granularity must fit in every layer.
        granularity_loss_weights (`list[float]`, *optional*):
            The weights λ_i of the joint objective Σ_i λ_i L(F_i(x), y) (paper §3, Eq. 2); also the sampling
            probabilities (normalised) of ``granularity_training="sampled"``. Defaults to 1.0 each
            (MatFormer-OLMo's uniform sum).
        granularity_training (`str`, *optional*, defaults to ``"joint"``):
            What a forward pass with ``labels`` in training mode optimises: ``"joint"`` (every granularity on
            the same batch, the paper's objective), ``"sampled"`` (one granularity drawn per step, a cheaper
            variant) or ``"current"`` (only the active granularity, like a plain model).
        default_granularity (`str`, `int` or `list`, *optional*):
            The granularity active after loading (a name, a width, or one width/name per layer for
            Mix'n'Match). ``None`` means the full stored width.
    """

    model_type = "matformer"

    intermediate_size: int | list[int] | None = None
    granularities: list[int] | None = None
    granularity_names: list[str] | None = None
    granularity_loss_weights: list[float] | None = None
    granularity_training: str = "joint"
    default_granularity: str | int | list[str | int] | None = None

    def __post_init__(self, **kwargs):
        hidden = self.hidden_size
        if self.granularities is None:
            self.granularities = [max(1, int(round(r * hidden))) for r in DEFAULT_GRANULARITY_RATIOS]
        self.granularities = [int(g) for g in self.granularities]
        if self.intermediate_size is None:
            self.intermediate_size = max(self.granularities) if self.granularities else 4 * hidden
        if isinstance(self.intermediate_size, Sequence):
            self.intermediate_size = [int(w) for w in self.intermediate_size]
        if self.granularity_names is None:
            n = len(self.granularities)
            self.granularity_names = (
                list(DEFAULT_GRANULARITY_NAMES) if n == len(DEFAULT_GRANULARITY_NAMES) else [f"g{i}" for i in range(n)]
            )
        self.granularity_names = [str(n) for n in self.granularity_names]
        if self.granularity_loss_weights is None:
            self.granularity_loss_weights = [1.0] * len(self.granularities)
        self.granularity_loss_weights = [float(w) for w in self.granularity_loss_weights]
        # Checked here (not only in validate_architecture, which wraps errors) so users get a ValueError.
        self.validate_matformer()
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation: the Llama checks plus the nested-width checks."""
        super().validate_architecture()
        self.validate_matformer()

    def validate_matformer(self):
        """Raise ``ValueError`` naming the field when the nested widths, names, weights or mode are invalid."""
        sizes = self.layer_intermediate_sizes
        if len(sizes) != self.num_hidden_layers:
            raise ValueError(
                f"MatFormerConfig.intermediate_size has {len(sizes)} entries ({self.intermediate_size}); "
                f"expected one int or one per layer (num_hidden_layers={self.num_hidden_layers})"
            )
        if any(w < 1 for w in sizes):
            raise ValueError(f"MatFormerConfig.intermediate_size={self.intermediate_size}: widths must be >= 1")
        g = self.granularities
        if any(w < 1 for w in g) or any(a >= b for a, b in zip(g, g[1:])):
            raise ValueError(
                f"MatFormerConfig.granularities={g}: expected positive FFN widths in strictly increasing order"
            )
        if g and g[-1] > min(sizes):
            raise ValueError(
                f"MatFormerConfig.granularities={g}: the largest width {g[-1]} exceeds the smallest stored "
                f"intermediate_size {min(sizes)}; every granularity must fit in every layer"
            )
        if len(self.granularity_names) != len(g) or len(set(self.granularity_names)) != len(g):
            raise ValueError(
                f"MatFormerConfig.granularity_names={self.granularity_names}: expected {len(g)} distinct names, "
                f"one per granularity {g}"
            )
        if "full" in self.granularity_names:
            raise ValueError("MatFormerConfig.granularity_names: 'full' is reserved for the full stored width")
        weights = self.granularity_loss_weights
        if len(weights) != len(g) or any(w < 0 for w in weights) or (g and sum(weights) <= 0):
            raise ValueError(
                f"MatFormerConfig.granularity_loss_weights={weights}: expected {len(g)} non-negative weights "
                "with a positive sum, one per granularity"
            )
        if self.granularity_training not in GRANULARITY_TRAINING_MODES:
            raise ValueError(
                f"MatFormerConfig.granularity_training={self.granularity_training!r}: expected one of "
                f"{GRANULARITY_TRAINING_MODES}"
            )
        if self.default_granularity is not None:
            self.resolve_widths(self.default_granularity)  # raises ValueError when it does not fit

    # -- helpers -------------------------------------------------------------------------------------

    @property
    def layer_intermediate_sizes(self) -> list[int]:
        """The stored FFN width of every layer."""
        if isinstance(self.intermediate_size, Sequence):
            return list(self.intermediate_size)
        return [int(self.intermediate_size)] * self.num_hidden_layers

    def resolve_width(self, granularity: str | int | None, layer_idx: int | None = None) -> int:
        """The FFN width of one granularity: a name (``"s"``), a width, or ``None``/``"full"`` (stored width)."""
        sizes = self.layer_intermediate_sizes
        full = sizes[layer_idx] if layer_idx is not None else min(sizes)
        if granularity is None or granularity == "full":
            return full
        if isinstance(granularity, str):
            if granularity not in self.granularity_names:
                raise ValueError(
                    f"granularity {granularity!r} is unknown; expected one of {self.granularity_names}, 'full', "
                    "an int width, or one of those per layer"
                )
            width = self.granularities[self.granularity_names.index(granularity)]
        elif isinstance(granularity, bool) or not isinstance(granularity, int):
            raise ValueError(f"granularity {granularity!r}: expected a name, an int width or None")
        else:
            width = int(granularity)
        if not 1 <= width <= full:
            where = f"layer {layer_idx}" if layer_idx is not None else "every layer"
            raise ValueError(f"granularity {granularity!r} -> width {width} does not fit {where} (1..{full})")
        return width

    def resolve_widths(self, granularity) -> list[int]:
        """Per-layer FFN widths for a granularity name/width (all layers) or a per-layer list (Mix'n'Match)."""
        n = self.num_hidden_layers
        if isinstance(granularity, (list, tuple)):
            if len(granularity) != n:
                raise ValueError(
                    f"per-layer granularity has {len(granularity)} entries; expected num_hidden_layers={n}"
                )
            return [self.resolve_width(g, i) for i, g in enumerate(granularity)]
        if granularity is None or granularity == "full":
            return self.layer_intermediate_sizes
        return [self.resolve_width(granularity, i) for i in range(n)]


PLUGIN = PluginSpec(
    name="matformer",
    config=MatFormerConfig,
    auto={
        "AutoModel": "hf_plugins.modeling.matformer:MatFormerModel",
        "AutoModelForCausalLM": "hf_plugins.modeling.matformer:MatFormerForCausalLM",
    },
    exports={
        "MatFormerConfig": "hf_plugins.configuration.matformer",
        "MatFormerModel": "hf_plugins.modeling.matformer",
        "MatFormerForCausalLM": "hf_plugins.modeling.matformer",
        "MatFormerPreTrainedModel": "hf_plugins.modeling.matformer",
        "MatFormerMLP": "hf_plugins.modeling.matformer",
        "MatFormerCausalLMOutputWithPast": "hf_plugins.modeling.matformer",
        "MatFormerTrainer": "hf_plugins.matformer_utils",
        "MixNMatchCandidate": "hf_plugins.matformer_utils",
        "mix_n_match_configurations": "hf_plugins.matformer_utils",
        "count_parameters_for_widths": "hf_plugins.matformer_utils",
        "self_speculative_generate": "hf_plugins.matformer_utils",
        "SpeculativeStats": "hf_plugins.matformer_utils",
    },
)
