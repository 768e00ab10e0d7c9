"""Configuration of HybridPatchTSMixer: transformers' PatchTSMixer plus the TSMixer paper's online heads.

TSMixer (Ekambaram et al., "TSMixer: Lightweight MLP-Mixer Model for Multivariate Time Series
Forecasting", KDD 2023, arXiv 2306.09364) is shipped by transformers as ``PatchTSMixer``, without the
paper's online reconciliation heads (section 4, "online forecast reconciliation") and without the
V-TSMixer ("flatten") backbone it compares with. This config is a ``PatchTSMixerConfig`` with those
pieces added; every PatchTSMixer field keeps its meaning, so PatchTSMixer checkpoints load into it.
Imports no torch.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import PatchTSMixerConfig

from ..registry import PluginSpec

MODES = ("common_channel", "mix_channel", "flatten")


@strict
class HybridPatchTSMixerConfig(PatchTSMixerConfig):
    r"""Config of :class:`~hf_plugins.HybridPatchTSMixerForPrediction` (model_type ``hybrid_patchtsmixer``).

    All arguments of ``transformers.PatchTSMixerConfig`` are accepted with the same meaning. Added:

    Args:
        mode (`str`, defaults to ``"common_channel"``):
            ``"common_channel"`` (CI-TSMixer: channel-independent backbone with shared weights),
            ``"mix_channel"`` (IC-TSMixer: inter-channel mixer in the backbone) or ``"flatten"``
            (V-TSMixer: the channels of a patch are flattened into one feature vector, paper section 4).
        use_cross_channel_head (`bool`, defaults to ``False``):
            Cross-channel forecast reconciliation head (paper section 4, "hybrid channel modelling"): the
            base forecasts of all channels in a window of ``±reconciliation_context`` steps around each
            horizon step go through gated attention and a linear layer that corrects every channel.
        reconciliation_context (`int`, defaults to 3):
            Half width of that window (the horizon is zero-padded by this many steps on both sides).
        use_hierarchy_head (`bool`, defaults to ``False``):
            Online hierarchical patch reconciliation head: forecasts the patch-level aggregates (means) of
            the horizon and reconciles the base forecast with them.
        hierarchy_patch_length (`int`, *optional*):
            Length of the horizon patches that are aggregated (default: ``patch_length``). A last patch
            shorter than this is averaged over the steps it has.
        hierarchy_aggregate_loss_weight (`float`, defaults to 1.0):
            Weight of the MSE between the aggregate forecasts and the aggregated ground truth.
        hierarchy_consistency_loss_weight (`float`, defaults to 1.0):
            Weight of the consistency MSE between the aggregated forecasts and the aggregate forecasts.
        hierarchy_consistency (`str`, defaults to ``"base"``):
            Which forecasts are aggregated for that consistency loss: ``"base"``, the base forecasts, so
            that the base head learns to agree with the aggregate level, or ``"reconciled"``, the head's
            output (what this library did before 2026-11-29).
        reconciliation_dropout (`float`, defaults to 0.0):
            Dropout before the output layer of each reconciliation head.

    With both heads off the model computes exactly what ``PatchTSMixerForPrediction`` computes.
    """

    model_type = "hybrid_patchtsmixer"

    use_cross_channel_head: bool = False
    reconciliation_context: int = 3
    use_hierarchy_head: bool = False
    hierarchy_patch_length: int | None = None
    hierarchy_aggregate_loss_weight: float | int = 1.0
    hierarchy_consistency_loss_weight: float | int = 1.0
    hierarchy_consistency: str = "base"
    reconciliation_dropout: float | int = 0.0

    def __post_init__(self, **kwargs):
        if self.prediction_channel_indices is not None:
            self.prediction_channel_indices = sorted(int(i) for i in self.prediction_channel_indices)
        self._check()
        super().__post_init__(**kwargs)

    # -- validation ------------------------------------------------------------------------------------

    def _check(self) -> None:
        def fail(name, value, allowed):
            raise ValueError(f"HybridPatchTSMixerConfig.{name}={value!r} is invalid: expected {allowed}")

        if self.mode not in MODES:
            fail("mode", self.mode, f"one of {', '.join(MODES)}")
        for name in ("context_length", "patch_length", "patch_stride", "d_model", "num_layers", "prediction_length",
                     "num_input_channels", "expansion_factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(name, value, "a positive integer")
        if self.patch_length >= self.context_length:
            fail("patch_length", self.patch_length, f"less than context_length={self.context_length}")
        if self.loss not in ("mse", "nll"):
            fail("loss", self.loss, "'mse' or 'nll'")
        if self.scaling not in ("std", "mean", True, False, None):
            fail("scaling", self.scaling, "'std', 'mean', True, False or None")
        for name in ("dropout", "head_dropout", "reconciliation_dropout"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                fail(name, value, "a probability in [0, 1)")
        if not isinstance(self.reconciliation_context, int) or self.reconciliation_context < 0:
            fail("reconciliation_context", self.reconciliation_context, "an integer >= 0")
        if self.hierarchy_patch_length is not None and not 1 <= self.hierarchy_patch_length <= self.prediction_length:
            fail("hierarchy_patch_length", self.hierarchy_patch_length,
                 f"None or an integer in [1, prediction_length={self.prediction_length}]")
        if self.hierarchy_consistency not in ("base", "reconciled"):
            fail("hierarchy_consistency", self.hierarchy_consistency, "'base' or 'reconciled'")
        for name in ("hierarchy_aggregate_loss_weight", "hierarchy_consistency_loss_weight"):
            if getattr(self, name) < 0:
                fail(name, getattr(self, name), "a weight >= 0")
        if (self.use_cross_channel_head or self.use_hierarchy_head or self.mode == "flatten") and self.loss != "mse":
            fail("loss", self.loss, "'mse' when a reconciliation head is on or mode='flatten' (the heads "
                 "reconcile point forecasts)")
        indices = self.prediction_channel_indices
        if indices is not None:
            if not indices or len(set(indices)) != len(indices) or not all(0 <= i < self.num_input_channels for i in indices):
                fail("prediction_channel_indices", indices,
                     f"a non-empty list of distinct channel indices in [0, num_input_channels={self.num_input_channels})")

    @property
    def effective_hierarchy_patch_length(self) -> int:
        """The horizon patch length the hierarchy head aggregates over."""
        return self.hierarchy_patch_length or min(self.patch_length, self.prediction_length)

    @property
    def num_hierarchy_aggregates(self) -> int:
        """Number of patch-level aggregates of the horizon (the last patch may be shorter)."""
        return -(-self.prediction_length // self.effective_hierarchy_patch_length)


PLUGIN = PluginSpec(
    name="hybrid_patchtsmixer",
    config=HybridPatchTSMixerConfig,
    auto={
        "AutoModel": "hf_plugins.modeling.hybrid_patchtsmixer:HybridPatchTSMixerModel",
        "AutoModelForTimeSeriesPrediction": "hf_plugins.modeling.hybrid_patchtsmixer:HybridPatchTSMixerForPrediction",
        "AutoModelForPreTraining": "hf_plugins.modeling.hybrid_patchtsmixer:HybridPatchTSMixerForPretraining",
    },
    exports={
        "HybridPatchTSMixerConfig": "hf_plugins.configuration.hybrid_patchtsmixer",
        "HybridPatchTSMixerModel": "hf_plugins.modeling.hybrid_patchtsmixer",
        "HybridPatchTSMixerForPrediction": "hf_plugins.modeling.hybrid_patchtsmixer",
        "HybridPatchTSMixerForPretraining": "hf_plugins.modeling.hybrid_patchtsmixer",
        "HybridPatchTSMixerForPredictionOutput": "hf_plugins.modeling.hybrid_patchtsmixer",
        "CrossChannelReconciliationHead": "hf_plugins.modeling.hybrid_patchtsmixer",
        "HierarchicalPatchReconciliationHead": "hf_plugins.modeling.hybrid_patchtsmixer",
    },
)
