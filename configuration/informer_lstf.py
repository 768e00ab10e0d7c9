"""Configuration of InformerLSTF, the Informer of Zhou et al. (AAAI 2021) for long sequence time-series forecasting.

Imports no torch: ``import hf_plugins`` registers this config with ``AutoConfig`` cheaply.
"""

from __future__ import annotations

import math

from transformers import PretrainedConfig

from ..registry import PluginSpec

# Number of calendar features per sampling frequency. Mirrors
# ``hf_plugins.data.time_features.FREQ_FEATURES`` (not imported here: that package imports torch);
# tests/test_informer_lstf.py checks that the two agree.
TIME_FEATURES_PER_FREQ = {"s": 6, "t": 5, "min": 5, "h": 4, "d": 3, "b": 3, "w": 2, "m": 1}

ATTENTION_TYPES = ("prob", "full")
PROBSPARSE_SAMPLING = ("shared", "per_query")
LOSSES = ("mse", "nll")
DISTRIBUTIONS = ("student_t", "normal")
ACTIVATIONS = ("gelu", "relu")


class InformerLSTFConfig(PretrainedConfig):
    r"""Configuration of [`InformerLSTFModel`] / [`InformerLSTFForPrediction`].

    Defaults are the paper's ETTh1 multivariate setting (Zhou et al. 2021, Sec. 5 and the reference code's
    ``main_informer.py``): 96 -> 24 with a 48-step start token, d_model 512, 8 heads, 2 encoder layers and 1
    decoder layer, d_ff 2048, ProbSparse attention with factor c = 5, distilling on, dropout 0.05, GELU,
    MSE loss.

    Args:
        input_size: channels of ``past_values`` (the reference's ``enc_in`` = ``dec_in``): 7 for ETT "M" and
            "MS", 1 for "S".
        output_size: channels forecast (``c_out``); default ``input_size``. 1 for "MS" (all channels in, the
            target out).
        context_length: encoder input length (``seq_len``).
        label_length: start-token length of the generative decoder (Sec. 3.3 "Decoder"): the decoder input is
            the last ``label_length`` known steps followed by ``prediction_length`` zero placeholders.
        prediction_length: forecast horizon (``pred_len``).
        freq: sampling frequency of the calendar features (``h``, ``t``/``min``, ``s``, ``d``, ``b``, ``w``,
            ``m``), which fixes ``num_time_features`` when that is not given.
        num_time_features: number of calendar features per step (0: no time-feature embedding).
        d_model / num_attention_heads / ffn_dim: width, heads, feed-forward width.
        encoder_layers / decoder_layers: depth of the encoder and the decoder.
        encoder_stack: ``None`` for the single encoder, or the layer counts of the stacked-encoder variant
            (the reference's ``InformerStack``, e.g. ``[3, 2, 1]``): replica ``i`` reads the last
            ``context_length / 2**i`` steps and the outputs are concatenated along time (Sec. 3.2, Fig. 3).
        attention_type: ``"prob"`` (ProbSparse self-attention, Sec. 3.1) or ``"full"`` (canonical attention,
            the paper's Informer-dagger ablation).
        sampling_factor: the factor c: ``c * ceil(ln L_K)`` keys are sampled to score each query and
            ``c * ceil(ln L_Q)`` queries attend (Eq. 4 and Prop. 1).
        probsparse_sampling: ``"shared"`` (one key sample for all queries of a head; the fast default) or
            ``"per_query"`` (an independent sample per query, as the reference code draws it).
        deterministic_eval_sampling: in eval mode, draw the key samples from a fixed seed so that inference
            is reproducible (training always uses the global RNG).
        distil: self-attention distilling between encoder layers (Sec. 3.2, Eq. 5).
        embedding_bias: bias terms in the value (Conv1d) and time-feature (Linear) embeddings, as the reference
            code (Informer2020) has them; ``False`` gives the bias-free embeddings of later re-implementations
            (Time-Series-Library) and of checkpoints saved by hf-plugins before this option existed.
        decoder_mix_attention: the reference code's ``mix=True`` re-layout of the decoder self-attention output
            (the ``(heads, time, head_dim)`` result read as ``(time, heads * head_dim)`` before the output
            projection). It mixes positions, so the decoder is then not position-wise causal; nothing leaks,
            since every decoder input (start token, zero placeholders, calendar features) is known in advance.
        dropout / attention_dropout: dropout on embeddings and residual branches / on full-attention weights
            (the reference's ProbSparse path uses no attention dropout).
        activation_function: ``"gelu"`` or ``"relu"``.
        loss: ``"mse"`` (point forecast; the paper's setting) or ``"nll"`` (distribution head).
        distribution_output: ``"student_t"`` or ``"normal"`` for ``loss="nll"``.
        num_parallel_samples: default number of sample paths drawn by ``InformerLSTFForPrediction.sample``.
        init_std: kept for transformers' generic initialisation helpers; the model initialises like the
            reference code (PyTorch's default uniform fan-in init, Kaiming-normal token convolution).
    """

    model_type = "informer_lstf"
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "encoder_layers"}

    input_size: int = 7
    output_size: int | None = None
    context_length: int = 96
    label_length: int = 48
    prediction_length: int = 24
    freq: str = "h"
    num_time_features: int | None = None
    d_model: int = 512
    num_attention_heads: int = 8
    ffn_dim: int = 2048
    encoder_layers: int = 2
    decoder_layers: int = 1
    encoder_stack: list[int] | None = None
    attention_type: str = "prob"
    sampling_factor: int = 5
    probsparse_sampling: str = "shared"
    deterministic_eval_sampling: bool = True
    distil: bool = True
    embedding_bias: bool = True
    decoder_mix_attention: bool = True
    dropout: float = 0.05
    attention_dropout: float = 0.05
    activation_function: str = "gelu"
    layer_norm_eps: float = 1e-5
    loss: str = "mse"
    distribution_output: str = "student_t"
    num_parallel_samples: int = 100
    init_std: float = 0.02

    def __post_init__(self, **kwargs):
        if self.output_size is None:
            self.output_size = self.input_size
        if self.num_time_features is None:
            key = str(self.freq).lower()
            if key not in TIME_FEATURES_PER_FREQ:
                raise ValueError(
                    f"InformerLSTFConfig.freq={self.freq!r} is not supported; use one of "
                    f"{sorted(TIME_FEATURES_PER_FREQ)} or give num_time_features explicitly"
                )
            self.num_time_features = TIME_FEATURES_PER_FREQ[key]
        if self.encoder_stack is not None:
            self.encoder_stack = [int(n) for n in self.encoder_stack]
        self._check()
        super().__post_init__(**kwargs)

    # -- derived sizes ------------------------------------------------------------------------------------

    @property
    def decoder_length(self) -> int:
        """Length of the decoder input: start token plus horizon placeholders."""
        return self.label_length + self.prediction_length

    def probsparse_sizes(self, query_length: int, key_length: int) -> tuple[int, int]:
        """``(U_part, u)``: keys sampled per query and active queries, ``c * ceil(ln L)`` capped at L."""
        return (
            min(self.sampling_factor * _ceil_log(key_length), key_length),
            min(self.sampling_factor * _ceil_log(query_length), query_length),
        )

    # -- validation ---------------------------------------------------------------------------------------

    def _check(self) -> None:
        def bad(field, allowed):
            raise ValueError(f"InformerLSTFConfig.{field}={getattr(self, field)!r} is invalid: expected {allowed}")

        for field in ("input_size", "output_size", "context_length", "prediction_length", "d_model",
                      "num_attention_heads", "ffn_dim", "encoder_layers", "decoder_layers", "sampling_factor",
                      "num_parallel_samples"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad(field, "an integer >= 1")
        for field in ("label_length", "num_time_features"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                bad(field, "an integer >= 0")
        if self.label_length > self.context_length:
            bad("label_length", f"at most context_length={self.context_length} (the start token is the tail of the context)")
        if self.d_model % self.num_attention_heads:
            bad("d_model", f"a multiple of num_attention_heads={self.num_attention_heads}")
        if self.attention_type not in ATTENTION_TYPES:
            bad("attention_type", f"one of {ATTENTION_TYPES}")
        if self.probsparse_sampling not in PROBSPARSE_SAMPLING:
            bad("probsparse_sampling", f"one of {PROBSPARSE_SAMPLING}")
        if self.loss not in LOSSES:
            bad("loss", f"one of {LOSSES}")
        if self.distribution_output not in DISTRIBUTIONS:
            bad("distribution_output", f"one of {DISTRIBUTIONS}")
        if self.activation_function not in ACTIVATIONS:
            bad("activation_function", f"one of {ACTIVATIONS}")
        for field in ("dropout", "attention_dropout"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                bad(field, "a probability in [0, 1)")
        if self.encoder_stack is not None:
            if not self.encoder_stack or any(n < 1 for n in self.encoder_stack):
                bad("encoder_stack", "None or a non-empty list of layer counts >= 1, e.g. [3, 2, 1]")
            if self.context_length >> (len(self.encoder_stack) - 1) < 1:
                bad("encoder_stack", f"at most {int(math.log2(self.context_length)) + 1} replicas for "
                    f"context_length={self.context_length}")


def _ceil_log(length: int) -> int:
    """``ceil(ln L)`` as in the reference code (at least 1)."""
    return max(1, math.ceil(math.log(length))) if length > 1 else 1


PLUGIN = PluginSpec(
    name="informer_lstf",
    config=InformerLSTFConfig,
    auto={
        "AutoModel": "hf_plugins.modeling.informer_lstf:InformerLSTFModel",
        "AutoModelForTimeSeriesPrediction": "hf_plugins.modeling.informer_lstf:InformerLSTFForPrediction",
    },
    exports={
        "InformerLSTFConfig": "hf_plugins.configuration.informer_lstf",
        "InformerLSTFPreTrainedModel": "hf_plugins.modeling.informer_lstf",
        "InformerLSTFModel": "hf_plugins.modeling.informer_lstf",
        "InformerLSTFForPrediction": "hf_plugins.modeling.informer_lstf",
        "InformerLSTFModelOutput": "hf_plugins.modeling.informer_lstf",
        "InformerLSTFPredictionOutput": "hf_plugins.modeling.informer_lstf",
        "InformerLSTFSampleOutput": "hf_plugins.modeling.informer_lstf",
        "prob_sparse_attention": "hf_plugins.modeling.informer_lstf_attention",
    },
)
