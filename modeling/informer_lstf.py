"""InformerLSTF: the Informer of Zhou et al., "Informer: Beyond Efficient Transformer for Long Sequence
Time-Series Forecasting" (AAAI 2021), as a transformers model.

What it adds over transformers' ``InformerForPrediction`` (see ``informer_lstf_attention`` for the
attention): ProbSparse attention that really costs O(L log L); the paper's one-shot generative decoder
(start token + zero placeholders, the whole horizon in one forward pass, no step-by-step loop); the
paper's embeddings (Conv1d token + sinusoidal position + time-feature embeddings), final LayerNorms, the
stacked encoder, and a point head with MSE besides the distribution heads.

Contract: ``forward(past_values, past_time_features, future_values=None, future_time_features=None)``;
the decoder input is built inside the model from ``past_values``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.time_series_utils import NormalOutput, StudentTOutput
from transformers.utils import ModelOutput

from ..configuration.informer_lstf import InformerLSTFConfig
from .informer_lstf_attention import InformerLSTFAttention

__all__ = [
    "InformerLSTFForPrediction",
    "InformerLSTFModel",
    "InformerLSTFModelOutput",
    "InformerLSTFPreTrainedModel",
    "InformerLSTFPredictionOutput",
    "InformerLSTFSampleOutput",
]


# -- outputs -------------------------------------------------------------------------------------------


@dataclass
class InformerLSTFModelOutput(ModelOutput):
    """Output of :class:`InformerLSTFModel`.

    Args:
        last_hidden_state: ``(batch, label_length + prediction_length, d_model)`` decoder output (after the
            final LayerNorm); the last ``prediction_length`` steps are the forecast positions.
        encoder_last_hidden_state: ``(batch, encoded_length, d_model)`` encoder output (distilled).
        encoder_hidden_states / decoder_hidden_states: per-layer outputs when ``output_hidden_states``.
    """

    last_hidden_state: torch.Tensor | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class InformerLSTFPredictionOutput(ModelOutput):
    """Output of :class:`InformerLSTFForPrediction`.

    Args:
        loss: MSE (``loss="mse"``) or mean negative log-likelihood (``loss="nll"``) when ``future_values``
            is given.
        prediction_outputs: ``(batch, prediction_length, output_size)`` point forecast (the distribution's
            location for ``loss="nll"``).
        distribution_params: for ``loss="nll"``, the distribution parameters, each
            ``(batch, prediction_length, output_size)`` (``(df, loc, scale)`` or ``(loc, scale)``).
        encoder_last_hidden_state / encoder_hidden_states / decoder_hidden_states: with
            ``output_hidden_states=True``.
    """

    loss: torch.Tensor | None = None
    prediction_outputs: torch.Tensor | None = None
    distribution_params: tuple[torch.Tensor, ...] | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class InformerLSTFSampleOutput(ModelOutput):
    """Output of :meth:`InformerLSTFForPrediction.sample`.

    Args:
        sequences: ``(batch, num_samples, prediction_length, output_size)`` sample paths.
    """

    sequences: torch.Tensor | None = None


# -- embeddings (Sec. 3 "Input representation", Appendix B; reference `models/embed.py`) ------------------


class InformerLSTFTokenEmbedding(nn.Conv1d):
    """Value ("scalar projection") embedding: Conv1d, kernel 3, circular padding."""

    def __init__(self, input_size: int, d_model: int, bias: bool = True):
        super().__init__(input_size, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=bias)

    def forward(self, values: torch.Tensor) -> torch.Tensor:  # (B, L, C) -> (B, L, d_model)
        return super().forward(values.transpose(1, 2)).transpose(1, 2)


class InformerLSTFEmbedding(nn.Module):
    """Token + sinusoidal positional + time-feature (Linear on calendar features) embeddings, then dropout."""

    def __init__(self, config: InformerLSTFConfig):
        super().__init__()
        self.d_model = config.d_model
        bias = config.embedding_bias
        self.value_embedding = InformerLSTFTokenEmbedding(config.input_size, config.d_model, bias=bias)
        self.time_embedding = (
            nn.Linear(config.num_time_features, config.d_model, bias=bias) if config.num_time_features else None
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, values: torch.Tensor, time_features: torch.Tensor | None) -> torch.Tensor:
        hidden = self.value_embedding(values) + _sinusoidal_positions(values.shape[1], self.d_model, values)
        if self.time_embedding is not None:
            hidden = hidden + self.time_embedding(time_features)
        return self.dropout(hidden)


def _sinusoidal_positions(length: int, d_model: int, like: torch.Tensor) -> torch.Tensor:
    """The Transformer's fixed position encoding (sin on even, cos on odd dimensions), computed on the fly."""
    position = torch.arange(length, device=like.device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d_model, 2, device=like.device, dtype=torch.float32) * -(math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model, device=like.device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div[: d_model // 2])
    return pe.to(like.dtype)


# -- encoder (Sec. 3.2) ---------------------------------------------------------------------------------


class InformerLSTFDistilLayer(nn.Module):
    """Self-attention distilling (Eq. 5): Conv1d(k=3, circular) -> BatchNorm -> ELU -> MaxPool(3, stride 2).

    transformers' ``InformerConvLayer`` computes the same thing but is a ``GradientCheckpointingLayer``: under
    gradient checkpointing its BatchNorm would update the running statistics twice per step. This one is a
    plain module (it is cheap to keep for backward).
    """

    def __init__(self, d_model: int):
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel_size=3, padding=1, padding_mode="circular")
        self.norm = nn.BatchNorm1d(d_model)
        self.activation = nn.ELU()
        self.pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, L, d) -> (B, ceil(L / 2), d)
        hidden = self.pool(self.activation(self.norm(self.conv(hidden.transpose(1, 2)))))
        return hidden.transpose(1, 2)


class InformerLSTFFeedForward(nn.Module):
    """Position-wise FFN (the reference's two kernel-1 Conv1d, i.e. two Linear layers)."""

    def __init__(self, config: InformerLSTFConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.ffn_dim)
        self.fc2 = nn.Linear(config.ffn_dim, config.d_model)
        self.activation = F.gelu if config.activation_function == "gelu" else F.relu
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.activation(self.fc1(hidden)))))


class InformerLSTFEncoderLayer(GradientCheckpointingLayer):
    """Post-LN encoder layer: (ProbSparse) self-attention, then FFN, each with residual + LayerNorm."""

    def __init__(self, config: InformerLSTFConfig, layer_idx: int = 0):
        super().__init__()
        self.self_attn = InformerLSTFAttention(config, "encoder", layer_idx=layer_idx)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.feed_forward = InformerLSTFFeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.self_attn_layer_norm(hidden + self.dropout(self.self_attn(hidden)))
        return self.final_layer_norm(hidden + self.feed_forward(hidden))


class InformerLSTFEncoder(nn.Module):
    """Attention layers with a distilling layer between each pair, and a final LayerNorm (Fig. 3)."""

    def __init__(self, config: InformerLSTFConfig, num_layers: int, first_layer_idx: int = 0):
        super().__init__()
        self.layers = nn.ModuleList(
            InformerLSTFEncoderLayer(config, layer_idx=first_layer_idx + i) for i in range(num_layers)
        )
        self.distil_layers = nn.ModuleList(
            InformerLSTFDistilLayer(config.d_model) for _ in range(num_layers - 1 if config.distil else 0)
        )
        self.layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, all_hidden: list | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            hidden = layer(hidden)
            if i < len(self.distil_layers):
                hidden = self.distil_layers[i](hidden)
            if all_hidden is not None:
                all_hidden.append(hidden)
        return self.layer_norm(hidden)


class InformerLSTFEncoderStack(nn.Module):
    """InformerStack's encoder (Sec. 3.2 "the main stack ... a replica with halved input"): replica ``i``
    encodes the last ``L / 2**i`` steps; the outputs are concatenated along time."""

    def __init__(self, config: InformerLSTFConfig):
        super().__init__()
        offsets = [sum(config.encoder_stack[:i]) for i in range(len(config.encoder_stack))]
        self.encoders = nn.ModuleList(
            InformerLSTFEncoder(config, n, first_layer_idx=o) for n, o in zip(config.encoder_stack, offsets)
        )

    def forward(self, hidden: torch.Tensor, all_hidden: list | None = None) -> torch.Tensor:
        length = hidden.shape[1]
        outputs = [enc(hidden[:, length - (length >> i) :], all_hidden) for i, enc in enumerate(self.encoders)]
        return torch.cat(outputs, dim=1)


# -- decoder (Sec. 3.3) ---------------------------------------------------------------------------------


class InformerLSTFDecoderLayer(GradientCheckpointingLayer):
    """Masked (ProbSparse) self-attention, full cross-attention over the encoder output, FFN; post-LN."""

    def __init__(self, config: InformerLSTFConfig, layer_idx: int = 0):
        super().__init__()
        self.self_attn = InformerLSTFAttention(config, "decoder", layer_idx=layer_idx, mix=config.decoder_mix_attention)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.cross_attn = InformerLSTFAttention(config, "cross", layer_idx=layer_idx)
        self.cross_attn_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.feed_forward = InformerLSTFFeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor, encoder_hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.self_attn_layer_norm(hidden + self.dropout(self.self_attn(hidden)))
        hidden = self.cross_attn_layer_norm(hidden + self.dropout(self.cross_attn(hidden, encoder_hidden)))
        return self.final_layer_norm(hidden + self.feed_forward(hidden))


# -- models ---------------------------------------------------------------------------------------------


class InformerLSTFPreTrainedModel(PreTrainedModel):
    """Base class: weight initialisation as in the reference code, gradient checkpointing support."""

    config_class = InformerLSTFConfig
    config: InformerLSTFConfig
    base_model_prefix = "model"
    main_input_name = "past_values"
    input_modalities = ("time",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["InformerLSTFEncoderLayer", "InformerLSTFDecoderLayer"]

    def _init_weights(self, module: nn.Module):
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            # PyTorch's default (reference code): Kaiming-uniform(a=sqrt(5)) weights, U(+-1/sqrt(fan_in)) bias;
            # the token embedding's weights are Kaiming-normal (fan_in, leaky_relu) as in the reference
            if isinstance(module, InformerLSTFTokenEmbedding):
                init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="leaky_relu")
            else:
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                init.uniform_(module.bias, -bound, bound)
        else:
            super()._init_weights(module)


class InformerLSTFModel(InformerLSTFPreTrainedModel):
    """Encoder-decoder backbone: returns decoder hidden states for the start token and the horizon."""

    def __init__(self, config: InformerLSTFConfig):
        super().__init__(config)
        self.encoder_embedding = InformerLSTFEmbedding(config)
        self.decoder_embedding = InformerLSTFEmbedding(config)
        if config.encoder_stack is not None:
            self.encoder = InformerLSTFEncoderStack(config)
        else:
            self.encoder = InformerLSTFEncoder(config, config.encoder_layers)
        self.decoder_layers = nn.ModuleList(
            InformerLSTFDecoderLayer(config, layer_idx=i) for i in range(config.decoder_layers)
        )
        self.decoder_layer_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.post_init()

    def forward(
        self,
        past_values: torch.Tensor,
        past_time_features: torch.Tensor | None = None,
        future_time_features: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> InformerLSTFModelOutput | tuple:
        """Encode ``past_values`` and decode the generative-decoder input in one pass.

        Args:
            past_values: ``(batch, context_length, input_size)`` (normalised) history.
            past_time_features: ``(batch, context_length, num_time_features)`` calendar features.
            future_time_features: ``(batch, prediction_length, num_time_features)`` calendar features of
                the horizon (always known in advance).
        """
        config = self.config
        output_hidden_states = output_hidden_states if output_hidden_states is not None else config.output_hidden_states
        return_dict = return_dict if return_dict is not None else config.return_dict
        past_values, past_time_features, future_time_features = self._check_inputs(
            past_values, past_time_features, future_time_features
        )
        enc_hidden = [] if output_hidden_states else None
        dec_hidden = [] if output_hidden_states else None

        encoded = self.encoder(self.encoder_embedding(past_values, past_time_features), enc_hidden)

        # Generative-style decoder input (Sec. 3.3, Eq. 6): X_de = Concat(X_token, X_0), the last
        # label_length known steps followed by zero placeholders for the horizon.
        batch = past_values.shape[0]
        start = past_values[:, past_values.shape[1] - config.label_length :]
        placeholders = past_values.new_zeros(batch, config.prediction_length, config.input_size)
        decoder_values = torch.cat([start, placeholders], dim=1)
        decoder_time = None
        if config.num_time_features:
            decoder_time = torch.cat(
                [past_time_features[:, past_time_features.shape[1] - config.label_length :], future_time_features], dim=1
            )
        hidden = self.decoder_embedding(decoder_values, decoder_time)
        for layer in self.decoder_layers:
            hidden = layer(hidden, encoded)
            if dec_hidden is not None:
                dec_hidden.append(hidden)
        hidden = self.decoder_layer_norm(hidden)

        output = InformerLSTFModelOutput(
            last_hidden_state=hidden,
            encoder_last_hidden_state=encoded,
            encoder_hidden_states=tuple(enc_hidden) if enc_hidden is not None else None,
            decoder_hidden_states=tuple(dec_hidden) if dec_hidden is not None else None,
        )
        return output if return_dict else output.to_tuple()

    def _check_inputs(self, past_values, past_time_features, future_time_features):
        config = self.config
        expected = (config.context_length, config.input_size)
        if not torch.is_tensor(past_values) or past_values.dim() != 3 or tuple(past_values.shape[1:]) != expected:
            got = tuple(past_values.shape) if torch.is_tensor(past_values) else type(past_values).__name__
            raise ValueError(
                f"past_values must have shape (batch, context_length={config.context_length}, "
                f"input_size={config.input_size}), got {got}"
            )
        batch = past_values.shape[0]
        dtype = self.encoder_embedding.value_embedding.weight.dtype
        past_values = past_values.to(dtype)
        if not config.num_time_features:
            return past_values, None, None
        checked = []
        for name, tensor, length in (
            ("past_time_features", past_time_features, config.context_length),
            ("future_time_features", future_time_features, config.prediction_length),
        ):
            shape = (batch, length, config.num_time_features)
            if tensor is None:
                raise ValueError(
                    f"{name} is required: expected shape {shape} (calendar features for freq={config.freq!r}; "
                    "hf_plugins.data.time_features computes them); set num_time_features=0 to train without"
                )
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{name} must have shape {shape} (batch, length, num_time_features), got {tuple(tensor.shape)}")
            checked.append(tensor.to(dtype))
        return past_values, checked[0], checked[1]


class InformerLSTFForPrediction(InformerLSTFPreTrainedModel):
    """Informer with a forecasting head: point forecast + MSE (default) or a Student-t / normal head + NLL."""

    def __init__(self, config: InformerLSTFConfig):
        super().__init__(config)
        self.model = InformerLSTFModel(config)
        if config.loss == "mse":
            self.distribution = None
            self.projection = nn.Linear(config.d_model, config.output_size)
        else:
            output_cls = StudentTOutput if config.distribution_output == "student_t" else NormalOutput
            self.distribution = output_cls(dim=config.output_size)
            self.projection = self.distribution.get_parameter_projection(config.d_model)
        self.post_init()

    def forward(
        self,
        past_values: torch.Tensor,
        past_time_features: torch.Tensor | None = None,
        future_values: torch.Tensor | None = None,
        future_time_features: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> InformerLSTFPredictionOutput | tuple:
        """Forecast ``prediction_length`` steps in one forward pass; with ``future_values``, the loss.

        Args:
            past_values: ``(batch, context_length, input_size)``.
            past_time_features: ``(batch, context_length, num_time_features)``.
            future_values: ``(batch, prediction_length, output_size)`` targets (for the loss).
            future_time_features: ``(batch, prediction_length, num_time_features)``.
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        outputs = self.model(
            past_values, past_time_features, future_time_features, output_hidden_states=output_hidden_states, return_dict=True
        )
        hidden = outputs.last_hidden_state[:, -config.prediction_length :]
        if future_values is not None:
            expected = (past_values.shape[0], config.prediction_length, config.output_size)
            if tuple(future_values.shape) != expected:
                raise ValueError(
                    f"future_values must have shape (batch, prediction_length, output_size) = {expected}, "
                    f"got {tuple(future_values.shape)}"
                )
        loss = params = None
        if self.distribution is None:
            prediction = self.projection(hidden)
            if future_values is not None:
                loss = F.mse_loss(prediction.float(), future_values.float())
        else:
            params = self.projection(hidden)
            if config.output_size == 1:  # DistributionOutput(dim=1) has no event dimension
                params = tuple(p.unsqueeze(-1) for p in params)
            distribution = self._distribution(params)
            prediction = params[-2]  # the location: mean of the normal, median (and mean) of the Student-t
            if future_values is not None:
                target = future_values.to(prediction.dtype)
                loss = -distribution.log_prob(target.squeeze(-1) if config.output_size == 1 else target).mean()
        output = InformerLSTFPredictionOutput(
            loss=loss,
            prediction_outputs=prediction,
            distribution_params=params,
            encoder_last_hidden_state=outputs.encoder_last_hidden_state if output_hidden_states else None,
            encoder_hidden_states=outputs.encoder_hidden_states,
            decoder_hidden_states=outputs.decoder_hidden_states,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def sample(
        self,
        past_values: torch.Tensor,
        past_time_features: torch.Tensor | None = None,
        future_time_features: torch.Tensor | None = None,
        num_samples: int | None = None,
    ) -> InformerLSTFSampleOutput:
        """Draw sample paths from the distribution head: ONE forward pass, then ``num_samples`` draws.

        (transformers' ``InformerForPrediction.generate`` re-runs the decoder for every step and every
        sample; the generative decoder makes that unnecessary.)
        """
        if self.distribution is None:
            raise ValueError("sample() needs a distribution head: build the model with loss='nll'")
        num_samples = num_samples or self.config.num_parallel_samples
        params = self(past_values, past_time_features, future_time_features=future_time_features).distribution_params
        draws = self._distribution(params).sample((num_samples,))  # (S, B, T[, C])
        if self.config.output_size == 1:
            draws = draws.unsqueeze(-1)
        return InformerLSTFSampleOutput(sequences=draws.permute(1, 0, 2, 3))

    def _distribution(self, params: tuple[torch.Tensor, ...]) -> torch.distributions.Distribution:
        """The predictive distribution from ``distribution_params`` (each ``(batch, horizon, output_size)``)."""
        if self.config.output_size == 1:
            params = tuple(p.squeeze(-1) for p in params)
        return self.distribution.distribution(params)
