"""HybridPatchTSMixer: transformers' PatchTSMixer with the TSMixer paper's online reconciliation heads.

Ekambaram et al., "TSMixer: Lightweight MLP-Mixer Model for Multivariate Time Series Forecasting",
KDD 2023 (arXiv 2306.09364). transformers ships the backbone as ``PatchTSMixer``; what it lacks, and
what this module adds by subclassing its classes:

* the cross-channel forecast reconciliation head (section 4, "hybrid channel modelling"): a
  channel-independent backbone whose forecasts are corrected by a small head that sees all channels;
* the online hierarchical patch reconciliation head (section 4): patch-level aggregate forecasts of the
  horizon, a consistency loss, and the reconciled forecast;
* the V-TSMixer backbone (``mode="flatten"``), which the paper compares with;
* exogenous channels: ``prediction_channel_indices`` forecasts a subset; ``future_values`` may hold
  all channels (transformers' contract) or only the forecast ones.

With both heads off, :class:`HybridPatchTSMixerForPrediction` computes exactly what
``PatchTSMixerForPrediction`` computes on the same weights, and loads its checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import initialization as init
from transformers.models.patchtsmixer.modeling_patchtsmixer import (
    NegativeBinomialOutput,
    NormalOutput,
    PatchTSMixerEncoder,
    PatchTSMixerForPrediction,
    PatchTSMixerForPredictionHead,
    PatchTSMixerForPredictionOutput,
    PatchTSMixerForPretraining,
    PatchTSMixerGatedAttention,
    PatchTSMixerModel,
    PatchTSMixerPositionalEncoding,
    PatchTSMixerPreTrainedModel,
    PatchTSMixerPretrainHead,
    StudentTOutput,
)
from transformers.utils import can_return_tuple

from ..configuration.hybrid_patchtsmixer import HybridPatchTSMixerConfig

__all__ = [
    "CrossChannelReconciliationHead",
    "MaskDropout",
    "HierarchicalPatchReconciliationHead",
    "HybridPatchTSMixerForPrediction",
    "HybridPatchTSMixerForPredictionOutput",
    "HybridPatchTSMixerForPretraining",
    "HybridPatchTSMixerModel",
    "HybridPatchTSMixerPreTrainedModel",
]


@dataclass
class HybridPatchTSMixerForPredictionOutput(PatchTSMixerForPredictionOutput):
    r"""``PatchTSMixerForPredictionOutput`` plus what the reconciliation heads produce.

    Args:
        loss: total loss, ``forecast_loss + w_agg * aggregate_loss + w_cons * consistency_loss``.
        prediction_outputs (`(batch_size, prediction_length, num_forecast_channels)`): the reconciled
            forecast, in the scale of ``past_values``.
        base_prediction_outputs: the backbone's forecast before any reconciliation head.
        aggregate_outputs (`(batch_size, num_aggregates, num_forecast_channels)`): the hierarchy head's
            patch-level aggregate (mean) forecasts of the horizon.
        forecast_loss / aggregate_loss / consistency_loss: the loss terms (the last two only with the
            hierarchy head).
    """

    base_prediction_outputs: torch.Tensor | None = None
    aggregate_outputs: torch.Tensor | None = None
    forecast_loss: torch.Tensor | None = None
    aggregate_loss: torch.Tensor | None = None
    consistency_loss: torch.Tensor | None = None


class MaskDropout(nn.Dropout):
    """``nn.Dropout`` that keeps a one-byte mask for backward instead of a float one.

    On CPU, ``F.dropout`` multiplies by a float noise tensor and autograd keeps it: 4 bytes per element of
    every dropout in the network. ``torch.native_dropout`` keeps a bool mask. Same distribution and
    scaling (eval mode is the identity, as before); in a PatchTSMixer training step this is a fifth less
    activation memory for 6-8 % more CPU time (benchmarks/patchtsmixer.py).
    """

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return inputs
        if self.p >= 1.0:  # native_dropout would scale by 1 / 0
            return super().forward(inputs)
        return torch.native_dropout(inputs, self.p, True)[0]


class HybridPatchTSMixerPreTrainedModel(PatchTSMixerPreTrainedModel):
    """Base class: config class, weight init of the reconciliation heads (zero output layers)."""

    config_class = HybridPatchTSMixerConfig
    config: HybridPatchTSMixerConfig
    _no_split_modules = ["PatchTSMixerLayer"]
    # Trainer.predict returns only the forecast; the rest stays out of the accumulated outputs.
    _keys_to_ignore_at_inference = [
        "last_hidden_state", "hidden_states", "loc", "scale", "base_prediction_outputs", "aggregate_outputs",
        "forecast_loss", "aggregate_loss", "consistency_loss",
    ]

    def _init_weights(self, module):
        # Both reconciliation heads are residual corrections whose output layer starts at zero, so that at
        # initialisation (and when a plain PatchTSMixer checkpoint is loaded) the hybrid model forecasts
        # what the channel-independent backbone forecasts; training moves them away from zero. The flag
        # sits on the Linear itself: transformers initialises module by module, leaves first.
        if getattr(module, "_zero_init", False):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
            return
        super()._init_weights(module)

    def post_init(self):
        """transformers' ``post_init``, after swapping every ``nn.Dropout`` for :class:`MaskDropout`."""
        for module in list(self.modules()):
            for name, child in list(module.named_children()):
                if type(child) is nn.Dropout:
                    setattr(module, name, MaskDropout(child.p, child.inplace))
        super().post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``, keeping the sin-cos positional encoding frozen.

        transformers (5.x) reloads every saved tensor as a trainable parameter, which silently makes
        PatchTSMixer's fixed sin-cos encoding (``requires_grad=False`` when built) trainable after a reload.
        """
        model = super().from_pretrained(*args, **kwargs)
        loaded = model[0] if isinstance(model, tuple) else model
        if getattr(loaded.config, "positional_encoding_type", None) == "sincos":
            for module in loaded.modules():
                if isinstance(module, PatchTSMixerPositionalEncoding):
                    module.position_enc.requires_grad_(False)
        return model


# -- backbone ------------------------------------------------------------------------------------------


class HybridPatchTSMixerEncoder(PatchTSMixerEncoder):
    """PatchTSMixer's encoder with the V-TSMixer input (paper section 4): in ``mode="flatten"`` the
    ``num_input_channels`` patches of a time step are concatenated into one ``patch_length * channels``
    vector before the patch embedding, and the mixer runs on one "channel"."""

    def __init__(self, config: HybridPatchTSMixerConfig):
        super().__init__(config)
        self.flatten_channels = config.mode == "flatten"
        if self.flatten_channels:
            self.patcher = nn.Linear(config.patch_length * config.num_input_channels, config.d_model)
            self._init_weights(self.patcher)

    def forward(self, past_values: torch.Tensor, output_hidden_states: bool | None = None, **kwargs):
        """``past_values``: patches ``(batch, channels, num_patches, patch_length)``."""
        if self.flatten_channels:
            batch, channels, num_patches, patch_length = past_values.shape
            past_values = past_values.transpose(1, 2).reshape(batch, 1, num_patches, channels * patch_length)
        return super().forward(past_values, output_hidden_states=output_hidden_states, **kwargs)


class HybridPatchTSMixerModel(HybridPatchTSMixerPreTrainedModel, PatchTSMixerModel):
    """``PatchTSMixerModel`` (scaling, patching, masking, mixer encoder) that also knows ``mode="flatten"``.

    ``last_hidden_state`` is ``(batch, channels, num_patches, d_model)``, or ``(batch, 1, num_patches,
    d_model)`` in flatten mode.
    """

    def __init__(self, config: HybridPatchTSMixerConfig, mask_input: bool = False):
        PatchTSMixerModel.__init__(self, config, mask_input=mask_input)
        if config.mode == "flatten":
            self.encoder = HybridPatchTSMixerEncoder(config)

    def forward(self, past_values: torch.Tensor, observed_mask: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, **kwargs):
        """See ``PatchTSMixerModel.forward``; checks the input shape first."""
        _check_past_values(past_values, observed_mask, self.config)
        return PatchTSMixerModel.forward(
            self, past_values, observed_mask=observed_mask, output_hidden_states=output_hidden_states, **kwargs
        )


# -- heads ---------------------------------------------------------------------------------------------


class HybridPatchTSMixerForPredictionHead(PatchTSMixerForPredictionHead):
    """transformers' forecast head (flatten patches x features, dropout, linear to the horizon), which can
    also return every channel before ``prediction_channel_indices`` is applied (the reconciliation heads
    need them all), and which in ``mode="flatten"`` forecasts all channels from the one flattened stream."""

    def __init__(self, config: HybridPatchTSMixerConfig, distribution_output=None):
        super().__init__(config, distribution_output=distribution_output)
        self.prediction_length = config.prediction_length
        self.flatten_channels = config.mode == "flatten"
        if self.flatten_channels:
            self.num_channels = config.num_input_channels
            self.base_forecast_block = nn.Linear(
                config.num_patches * config.d_model, config.prediction_length * config.num_input_channels
            )

    def forward(self, hidden_features: torch.Tensor, select_channels: bool = True):
        """``(batch, channels, num_patches, d_model)`` -> ``(batch, prediction_length, channels)``.

        Same operations in the same order as ``PatchTSMixerForPredictionHead.forward`` (so outputs are
        bit-identical); ``select_channels=False`` skips the final ``prediction_channel_indices`` selection.
        """
        hidden_features = self.dropout_layer(self.flatten(hidden_features))
        forecast = self.base_forecast_block(hidden_features)  # (batch, channels, prediction_length)
        if self.flatten_channels:
            forecast = forecast.reshape(forecast.shape[0], self.num_channels, self.prediction_length)
        if isinstance(forecast, tuple):
            forecast = tuple(z.transpose(-1, -2) for z in forecast)
        else:
            forecast = forecast.transpose(-1, -2)
        if select_channels and self.prediction_channel_indices is not None:
            if isinstance(forecast, tuple):
                forecast = tuple(z[..., self.prediction_channel_indices] for z in forecast)
            else:
                forecast = forecast[..., self.prediction_channel_indices]
        return forecast


class CrossChannelReconciliationHead(nn.Module):
    """Cross-channel forecast reconciliation head (paper section 4, "hybrid channel modelling").

    The channel-independent base forecast ``y`` (``(batch, horizon, channels)``, in the scaled space) is
    zero-padded by ``reconciliation_context`` steps at both ends of the horizon; for every horizon step
    the window of ``2 * ctx + 1`` steps x all channels is flattened, passed through gated attention
    (the backbone's ``PatchTSMixerGatedAttention``) and a linear layer that outputs one correction per
    channel, which is added to ``y`` (residual). The output layer starts at zero.
    """

    def __init__(self, config: HybridPatchTSMixerConfig):
        super().__init__()
        self.context = config.reconciliation_context
        self.num_channels = config.num_input_channels
        window = (2 * self.context + 1) * self.num_channels
        self.gating_block = PatchTSMixerGatedAttention(in_size=window, out_size=window)
        self.dropout = nn.Dropout(config.reconciliation_dropout)
        self.projection = nn.Linear(window, self.num_channels)
        self.projection._zero_init = True

    def forward(self, forecast: torch.Tensor) -> torch.Tensor:
        batch, horizon, channels = forecast.shape
        padded = F.pad(forecast, (0, 0, self.context, self.context))  # zero-pad the time axis
        # (batch, horizon, channels, 2*ctx+1) -> (batch, horizon, (2*ctx+1) * channels), time-major
        windows = padded.unfold(1, 2 * self.context + 1, 1).transpose(-1, -2).reshape(batch, horizon, -1)
        correction = self.projection(self.dropout(self.gating_block(windows)))
        return forecast + correction


class HierarchicalPatchReconciliationHead(nn.Module):
    """Online hierarchical patch reconciliation head (paper section 4).

    The horizon is cut into patches of ``hierarchy_patch_length`` steps whose means form the upper level
    of a two-level temporal hierarchy. From the backbone's embedding the head forecasts these aggregates
    ``h`` (one linear layer, like the base head); the base forecast and ``h`` are concatenated and a linear
    layer outputs a residual correction of the base forecast (starts at zero). Training adds the MSE of
    ``h`` against the aggregated truth and the consistency MSE between the aggregated base forecast (or,
    with ``hierarchy_consistency="reconciled"``, the reconciled one) and ``h`` (see
    :class:`HybridPatchTSMixerForPrediction`). Means rather than sums, so that aggregation
    commutes with the per-channel RevIN scaling of the backbone.
    """

    def __init__(self, config: HybridPatchTSMixerConfig):
        super().__init__()
        self.patch_length = config.effective_hierarchy_patch_length
        self.num_aggregates = config.num_hierarchy_aggregates
        self.prediction_length = config.prediction_length
        self.num_channels = config.num_input_channels
        self.flatten_channels = config.mode == "flatten"
        out = self.num_aggregates * (self.num_channels if self.flatten_channels else 1)
        self.dropout = nn.Dropout(config.head_dropout)
        self.aggregate_block = nn.Linear(config.num_patches * config.d_model, out)
        self.reconcile_dropout = nn.Dropout(config.reconciliation_dropout)
        self.reconcile_block = nn.Linear(self.prediction_length + self.num_aggregates, self.prediction_length)
        self.reconcile_block._zero_init = True

    def aggregate(self, values: torch.Tensor) -> torch.Tensor:
        """Patch means over the time axis: ``(batch, horizon, channels)`` -> ``(batch, aggregates, channels)``."""
        # ceil_mode: a last, shorter patch is averaged over the steps it has (padding=0, so the divisor
        # of an overhanging window is its in-bounds length).
        pooled = F.avg_pool1d(values.transpose(1, 2), self.patch_length, self.patch_length, ceil_mode=True)
        return pooled.transpose(1, 2)

    def forward(self, hidden_features: torch.Tensor, base_forecast: torch.Tensor):
        """Returns ``(reconciled (batch, horizon, channels), aggregates (batch, num_aggregates, channels))``."""
        batch = base_forecast.shape[0]
        aggregates = self.aggregate_block(self.dropout(hidden_features.flatten(-2)))
        aggregates = aggregates.reshape(batch, self.num_channels, self.num_aggregates)
        base = base_forecast.transpose(1, 2)  # (batch, channels, horizon)
        correction = self.reconcile_block(self.reconcile_dropout(torch.cat([base, aggregates], dim=-1)))
        return (base + correction).transpose(1, 2), aggregates.transpose(1, 2)


# -- models --------------------------------------------------------------------------------------------


class HybridPatchTSMixerForPrediction(HybridPatchTSMixerPreTrainedModel, PatchTSMixerForPrediction):
    r"""PatchTSMixer forecaster with the paper's online reconciliation heads (model_type ``hybrid_patchtsmixer``).

    Forward contract of ``PatchTSMixerForPrediction``: ``past_values`` ``(batch, context_length,
    num_input_channels)``, optional ``observed_mask`` and ``future_values`` ``(batch, prediction_length,
    num_input_channels)`` (or only the ``prediction_channel_indices`` channels); returns ``loss`` and
    ``prediction_outputs`` ``(batch, prediction_length, num_forecast_channels)``.

    Order (paper section 4): backbone -> base head (all channels, scaled space) -> hierarchical patch
    reconciliation -> cross-channel reconciliation -> channel selection -> RevIN de-scaling.

    Example::

        >>> from hf_plugins import HybridPatchTSMixerConfig, HybridPatchTSMixerForPrediction
        >>> config = HybridPatchTSMixerConfig(context_length=512, prediction_length=96, num_input_channels=7,
        ...                                   use_cross_channel_head=True, use_hierarchy_head=True)
        >>> model = HybridPatchTSMixerForPrediction(config)
        >>> # or, from a PatchTSMixer checkpoint: HybridPatchTSMixerForPrediction.from_pretrained(path, use_cross_channel_head=True)
    """

    def __init__(self, config: HybridPatchTSMixerConfig):
        # Parent __init__ is not called: it would build the plain model and head only to replace them.
        PatchTSMixerPreTrainedModel.__init__(self, config)
        self.loss = config.loss
        self.prediction_channel_indices = config.prediction_channel_indices
        self.num_parallel_samples = config.num_parallel_samples
        self.distribution_output = _distribution_output(config)
        self.model = HybridPatchTSMixerModel(config)
        self.head = HybridPatchTSMixerForPredictionHead(config, distribution_output=self.distribution_output)
        self.hierarchy_head = HierarchicalPatchReconciliationHead(config) if config.use_hierarchy_head else None
        self.cross_channel_head = CrossChannelReconciliationHead(config) if config.use_cross_channel_head else None
        self.post_init()

    @classmethod
    def from_patchtsmixer(cls, model: PatchTSMixerForPrediction, **config_overrides) -> "HybridPatchTSMixerForPrediction":
        """Wrap an in-memory ``PatchTSMixerForPrediction`` (its weights are copied), e.g. to add heads."""
        values = model.config.to_dict()
        for key in ("model_type", "transformers_version", "architectures"):
            values.pop(key, None)
        values.update(config_overrides)
        hybrid = cls(HybridPatchTSMixerConfig(**values))
        missing, unexpected = hybrid.load_state_dict(model.state_dict(), strict=False)
        bad = [k for k in missing if not k.startswith(("hierarchy_head.", "cross_channel_head."))]
        if bad or unexpected:
            raise ValueError(f"PatchTSMixer weights do not fit: missing {bad}, unexpected {list(unexpected)}")
        return hybrid.to(next(model.parameters()).device)

    @can_return_tuple
    def forward(
        self,
        past_values: torch.Tensor,
        observed_mask: torch.Tensor | None = None,
        future_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> HybridPatchTSMixerForPredictionOutput:
        r"""
        Args:
            past_values (`(batch_size, context_length, num_input_channels)`): the history, all channels
                (targets and exogenous inputs).
            observed_mask (same shape, *optional*): 1 where ``past_values`` was observed.
            future_values (`(batch_size, prediction_length, C)`, *optional*): the labels; ``C`` is
                ``num_input_channels`` (the forecast channels are picked out, as in transformers) or the
                number of ``prediction_channel_indices``.
            output_hidden_states (`bool`, *optional*): return the mixer layers' outputs.
            return_loss (`bool`, defaults to True): compute the loss when ``future_values`` is given.
        Other keyword arguments (``past_time_features`` from the data windows...) are ignored.
        """
        if self.distribution_output is not None:  # nll: no heads (config-checked); transformers' path
            _check_past_values(past_values, observed_mask, self.config)
            return PatchTSMixerForPrediction.forward(
                self, past_values, observed_mask=observed_mask, future_values=future_values,
                output_hidden_states=output_hidden_states, return_loss=return_loss,
            )
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        model_output = self.model(past_values, observed_mask=observed_mask, output_hidden_states=output_hidden_states)
        hidden = model_output.last_hidden_state

        base = self.head(hidden, select_channels=False)  # (batch, horizon, all channels), scaled space
        forecast, aggregates = base, None
        if self.hierarchy_head is not None:
            forecast, aggregates = self.hierarchy_head(hidden, forecast)
        if self.cross_channel_head is not None:
            forecast = self.cross_channel_head(forecast)

        loc, scale = model_output.loc, model_output.scale
        indices = self.prediction_channel_indices
        if indices is not None:  # exogenous channels are inputs only from here on
            forecast, base, loc, scale = forecast[..., indices], base[..., indices], loc[..., indices], scale[..., indices]
            aggregates = aggregates[..., indices] if aggregates is not None else None
        # RevIN de-scaling, exactly as PatchTSMixerForPrediction does it
        y_hat = forecast * scale + loc
        base_hat = base * scale + loc if forecast is not base else y_hat
        agg_hat = aggregates * scale + loc if aggregates is not None else None

        loss = forecast_loss = aggregate_loss = consistency_loss = None
        if future_values is not None and return_loss:
            target = self._select_targets(future_values)
            forecast_loss = F.mse_loss(y_hat, target)
            loss = forecast_loss
            if agg_hat is not None:
                # Hierarchy losses (paper section 4): aggregate forecast vs aggregated truth, and
                # consistency between the aggregated base (or reconciled) forecast and the aggregate forecast.
                aggregate_loss = F.mse_loss(agg_hat, self.hierarchy_head.aggregate(target))
                aggregated = base_hat if self.config.hierarchy_consistency == "base" else y_hat
                consistency_loss = F.mse_loss(self.hierarchy_head.aggregate(aggregated), agg_hat)
                loss = (loss + self.config.hierarchy_aggregate_loss_weight * aggregate_loss
                        + self.config.hierarchy_consistency_loss_weight * consistency_loss)

        return HybridPatchTSMixerForPredictionOutput(
            loss=loss,
            prediction_outputs=y_hat,
            last_hidden_state=hidden,
            hidden_states=model_output.hidden_states,
            loc=loc,
            scale=scale,
            base_prediction_outputs=base_hat,
            aggregate_outputs=agg_hat,
            forecast_loss=forecast_loss,
            aggregate_loss=aggregate_loss,
            consistency_loss=consistency_loss,
        )

    def _select_targets(self, future_values: torch.Tensor) -> torch.Tensor:
        config = self.config
        indices = self.prediction_channel_indices
        allowed = {config.num_input_channels} | ({len(indices)} if indices is not None else set())
        if future_values.dim() != 3 or future_values.shape[1] != config.prediction_length or future_values.shape[-1] not in allowed:
            raise ValueError(
                f"future_values has shape {tuple(future_values.shape)}; expected (batch, prediction_length="
                f"{config.prediction_length}, C) with C in {sorted(allowed)} (all input channels"
                + (", or only the prediction_channel_indices channels)" if indices is not None else ")")
            )
        if indices is not None and future_values.shape[-1] == config.num_input_channels:
            future_values = future_values[..., indices]
        return future_values


class HybridPatchTSMixerPretrainHead(PatchTSMixerPretrainHead):
    """transformers' masked-reconstruction head; in flatten mode it rebuilds every channel's patch."""

    def __init__(self, config: HybridPatchTSMixerConfig):
        super().__init__(config)
        self.flatten_channels = config.mode == "flatten"
        self.num_channels = config.num_input_channels
        self.patch_length = config.patch_length
        if self.flatten_channels:
            self.base_pt_block = nn.Linear(config.d_model, config.patch_length * config.num_input_channels)

    def forward(self, hidden_features):
        out = super().forward(hidden_features)
        if self.flatten_channels:  # (batch, 1, patches, channels * patch_length) -> (batch, channels, patches, patch_length)
            batch, _, num_patches, _ = out.shape
            out = out.reshape(batch, num_patches, self.num_channels, self.patch_length).transpose(1, 2)
        return out


class HybridPatchTSMixerForPretraining(HybridPatchTSMixerPreTrainedModel, PatchTSMixerForPretraining):
    """Masked self-supervised pretraining (the paper's "SS" rows): transformers' ``PatchTSMixerForPretraining``
    on the hybrid backbone (all three modes). Its ``model.*`` weights load into
    :class:`HybridPatchTSMixerForPrediction` with ``from_pretrained`` (the forecast and reconciliation heads
    are then initialised), or in memory with ``forecaster.model.load_state_dict(pretrainer.model.state_dict())``.
    Masking is set by ``mask_type``, ``random_mask_ratio``, ``num_forecast_mask_patches`` of the config.
    """

    def __init__(self, config: HybridPatchTSMixerConfig):
        PatchTSMixerPreTrainedModel.__init__(self, config)
        self.model = HybridPatchTSMixerModel(config, mask_input=True)
        self.head = HybridPatchTSMixerPretrainHead(config)
        self.masked_loss = config.masked_loss
        self.post_init()


# -- helpers -------------------------------------------------------------------------------------------


def _distribution_output(config):
    if config.loss == "mse":
        return None
    outputs = {"student_t": StudentTOutput, "normal": NormalOutput, "negative_binomial": NegativeBinomialOutput}
    if config.distribution_output not in outputs:
        raise ValueError(
            f"distribution_output={config.distribution_output!r} is invalid: expected one of {', '.join(outputs)}"
        )
    return outputs[config.distribution_output](dim=config.prediction_length)


def _check_past_values(past_values, observed_mask, config) -> None:
    expected = (config.context_length, config.num_input_channels)
    if past_values.dim() != 3 or tuple(past_values.shape[1:]) != expected:
        raise ValueError(
            f"past_values has shape {tuple(past_values.shape)}; expected (batch, context_length={expected[0]}, "
            f"num_input_channels={expected[1]})"
        )
    if observed_mask is not None and observed_mask.shape != past_values.shape:
        raise ValueError(
            f"observed_mask has shape {tuple(observed_mask.shape)}; expected the shape of past_values "
            f"{tuple(past_values.shape)}"
        )
