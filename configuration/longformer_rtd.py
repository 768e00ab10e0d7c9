"""Configuration of BudgetLongformer (Niklaus & Giofre 2022, arXiv 2211.17135): Longformer pretrained with
ELECTRA's replaced-token detection (Clark et al. 2020).

The config *is* the discriminator's ``LongformerConfig`` (same fields, same meaning) plus the generator's size
and the pretraining objective's knobs; :meth:`LongformerRTDConfig.discriminator_config` and
:meth:`LongformerRTDConfig.generator_config` give the two plain ``LongformerConfig`` objects. No torch here.
"""

from __future__ import annotations

from transformers import LongformerConfig

from ..registry import PluginSpec

ATTENTION_BACKENDS = ("fast", "hf")
# Fields of the joint model that a plain LongformerConfig does not have.
_RTD_FIELDS = (
    "generator_size_ratio",
    "generator_hidden_size",
    "generator_num_hidden_layers",
    "generator_num_attention_heads",
    "generator_intermediate_size",
    "rtd_weight",
    "mlm_probability",
    "sampling_temperature",
    "attention_backend",
)


class LongformerRTDConfig(LongformerConfig):
    r"""Configuration of :class:`~hf_plugins.LongformerRTDForPreTraining`.

    Every ``LongformerConfig`` field describes the discriminator (the model that is kept and exported). Defaults
    follow ``allenai/longformer-base-4096`` (RoBERTa vocabulary size, 4,096 + 2 positions, window 512,
    ``layer_norm_eps=1e-5``, which is also what LED uses, so :meth:`to_led` is exact).

    Args:
        generator_size_ratio (`float`, defaults to 0.25): the generator's hidden size as a fraction of the
            discriminator's (ELECTRA Section 3.2 finds 1/4 to 1/2 best); ignored if ``generator_hidden_size`` is set.
        generator_hidden_size (`int`, *optional*): explicit generator width.
        generator_num_hidden_layers (`int`, *optional*): generator depth (default: the discriminator's, as in
            ELECTRA, where only the width shrinks).
        generator_num_attention_heads (`int`, *optional*): default keeps the discriminator's head size (64 for
            base), i.e. ``generator_hidden_size // head_dim``.
        generator_intermediate_size (`int`, *optional*): default ``4 * generator_hidden_size``.
        rtd_weight (`float`, defaults to 50.0): lambda in ``loss = L_MLM + lambda * L_disc`` (ELECTRA Eq. 1 / Section 2).
        mlm_probability (`float`, defaults to 0.15): the masking rate the collator uses by default (stored so that
            a checkpoint records how it was trained).
        sampling_temperature (`float`, defaults to 1.0): temperature of the generator softmax that replacements
            are sampled from.
        attention_backend (`str`, defaults to `"fast"`): ``"fast"`` (blocked SDPA, exact) or ``"hf"``
            (transformers' ``LongformerSelfAttention``). Weights are the same for both.
    """

    model_type = "longformer_rtd"

    vocab_size: int = 50265
    max_position_embeddings: int = 4098
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    generator_size_ratio: float = 0.25
    generator_hidden_size: int | None = None
    generator_num_hidden_layers: int | None = None
    generator_num_attention_heads: int | None = None
    generator_intermediate_size: int | None = None
    rtd_weight: float = 50.0
    mlm_probability: float = 0.15
    sampling_temperature: float = 1.0
    attention_backend: str = "fast"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._check()

    # -- the two plain Longformer configs ----------------------------------------------------------------

    def discriminator_config(self) -> LongformerConfig:
        """The discriminator as a plain ``LongformerConfig`` (what :meth:`export_discriminator` writes)."""
        data = {k: v for k, v in self.to_dict().items() if k not in _RTD_FIELDS}
        for key in ("model_type", "architectures", "auto_map", "transformers_version"):
            data.pop(key, None)
        return LongformerConfig(**data)

    def generator_config(self) -> LongformerConfig:
        """The generator: the discriminator's config with the generator's width, depth and heads."""
        config = self.discriminator_config()
        hidden = self.resolved_generator_hidden_size()
        config.hidden_size = hidden
        config.num_hidden_layers = self.generator_num_hidden_layers or self.num_hidden_layers
        config.num_attention_heads = self.resolved_generator_heads()
        config.intermediate_size = self.generator_intermediate_size or 4 * hidden
        window = self.attention_window
        if isinstance(window, list) and len(window) != config.num_hidden_layers:
            config.attention_window = max(window)
        return config

    def resolved_generator_hidden_size(self) -> int:
        if self.generator_hidden_size is not None:
            return int(self.generator_hidden_size)
        head_dim = self.hidden_size // self.num_attention_heads
        # Round to whole heads of the discriminator's head size.
        heads = max(1, round(self.hidden_size * self.generator_size_ratio / head_dim))
        return heads * head_dim

    def resolved_generator_heads(self) -> int:
        if self.generator_num_attention_heads is not None:
            return int(self.generator_num_attention_heads)
        head_dim = self.hidden_size // self.num_attention_heads
        return max(1, self.resolved_generator_hidden_size() // head_dim)

    # -- validation --------------------------------------------------------------------------------------

    def _check(self) -> None:
        def fail(field, value, allowed):
            raise ValueError(f"LongformerRTDConfig.{field}={value!r}: {allowed}")

        if self.hidden_size % self.num_attention_heads:
            fail("hidden_size", self.hidden_size, f"must be a multiple of num_attention_heads={self.num_attention_heads}")
        windows = self.attention_window if isinstance(self.attention_window, list) else [self.attention_window]
        if isinstance(self.attention_window, list) and len(windows) != self.num_hidden_layers:
            fail("attention_window", self.attention_window, f"a list needs one even value per layer ({self.num_hidden_layers})")
        if any((not isinstance(w, int)) or w <= 0 or w % 2 for w in windows):
            fail("attention_window", self.attention_window, "must be a positive even int (or a list of them)")
        if not 0.0 < self.generator_size_ratio <= 1.0:
            fail("generator_size_ratio", self.generator_size_ratio, "must be in (0, 1]")
        if self.generator_hidden_size is not None and self.generator_hidden_size <= 0:
            fail("generator_hidden_size", self.generator_hidden_size, "must be a positive int or None")
        if self.generator_num_hidden_layers is not None and self.generator_num_hidden_layers <= 0:
            fail("generator_num_hidden_layers", self.generator_num_hidden_layers, "must be a positive int or None")
        gen_hidden, gen_heads = self.resolved_generator_hidden_size(), self.resolved_generator_heads()
        if gen_hidden % gen_heads:
            fail("generator_num_attention_heads", gen_heads, f"must divide the generator hidden size {gen_hidden}")
        if self.rtd_weight < 0:
            fail("rtd_weight", self.rtd_weight, "must be >= 0 (ELECTRA uses 50)")
        if not 0.0 < self.mlm_probability < 1.0:
            fail("mlm_probability", self.mlm_probability, "must be in (0, 1)")
        if self.sampling_temperature <= 0:
            fail("sampling_temperature", self.sampling_temperature, "must be > 0")
        if self.attention_backend not in ATTENTION_BACKENDS:
            fail("attention_backend", self.attention_backend, f"expected one of {ATTENTION_BACKENDS}")
        if self.pad_token_id is None or self.max_position_embeddings <= self.pad_token_id + 1:
            fail("max_position_embeddings", self.max_position_embeddings, "must exceed pad_token_id + 1 (RoBERTa offset)")


PLUGIN = PluginSpec(
    name="longformer_rtd",
    config=LongformerRTDConfig,
    auto={
        "AutoModel": "hf_plugins.modeling.longformer_rtd:LongformerRTDForPreTraining",
        "AutoModelForPreTraining": "hf_plugins.modeling.longformer_rtd:LongformerRTDForPreTraining",
    },
    exports={
        "LongformerRTDConfig": "hf_plugins.configuration.longformer_rtd",
        "LongformerRTDForPreTraining": "hf_plugins.modeling.longformer_rtd",
        "LongformerRTDPreTrainedModel": "hf_plugins.modeling.longformer_rtd",
        "LongformerRTDForPreTrainingOutput": "hf_plugins.modeling.longformer_rtd",
        "longformer_to_led": "hf_plugins.modeling.longformer_rtd",
        "FastLongformerSelfAttention": "hf_plugins.modeling.longformer_attention",
        "set_attention_backend": "hf_plugins.modeling.longformer_attention",
        "DataCollatorForRTD": "hf_plugins.data.collators",
    },
)
