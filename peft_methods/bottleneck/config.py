"""``BottleneckConfig``: where and how bottleneck adapters are placed (peft type ``BOTTLENECK``).

Cappellazzo et al. 2023 (arXiv 2312.03694), section 3: a bottleneck adapter is a down projection to
``hidden / reduction_factor`` units, a non-linearity and an up projection back to ``hidden``; it sits after
the multi-head self-attention (MHSA) sub-layer, after the feed-forward (FFN) sub-layer, or after both
(Houlsby et al. 2019), either *sequentially* (on the sub-layer's output, with a residual) or in *parallel*
(beside the sub-layer, reading its input; He et al. 2022). Pfeiffer et al. 2021 keep only the FFN adapter.
The paper's best configuration replaces the bottleneck by a Conformer-style convolution module
(section 3.2): ``ConformerAdapter`` with ``adapter_block="conformer"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from peft.config import PeftConfig
from peft.utils import PeftType

LOCATIONS = ("mhsa", "ffn", "both")
MODES = ("sequential", "parallel")
PRESETS = {"pfeiffer": "ffn", "houlsby": "both"}
BLOCKS = ("bottleneck", "conformer")
NON_LINEARITIES = ("gelu", "relu", "silu", "swish", "tanh", "gelu_new", "quick_gelu", "leaky_relu", "sigmoid")


@dataclass
class BottleneckConfig(PeftConfig):
    """Configuration of bottleneck adapters (Houlsby / Pfeiffer, sequential / parallel, Conformer).

    Args:
        preset: ``"pfeiffer"`` (one adapter after the FFN) or ``"houlsby"`` (after MHSA and after FFN);
            sets ``location``. ``None`` keeps ``location`` as given.
        location: ``"mhsa"``, ``"ffn"`` or ``"both"``: which sub-layers of every block get an adapter.
        mode: ``"sequential"`` (``y + s * A(y)`` on the sub-layer output ``y``) or ``"parallel"``
            (``y + s * A(x)`` with ``x`` the sub-layer's input, i.e. the output of the block's layer norm in a
            pre-LN block such as AST).
        reduction_factor: bottleneck width is ``round(hidden_size / reduction_factor)`` (the paper's RR;
            RR=96 gives 8 units on a 768-wide AST).
        bottleneck_dim: explicit bottleneck width, overriding ``reduction_factor``.
        non_linearity: activation between the projections (a key of ``transformers.activations.ACT2FN``).
        adapter_block: ``"bottleneck"`` (down -> act -> up) or ``"conformer"`` (LayerNorm -> pointwise ->
            GLU -> depth-wise conv over the tokens -> BatchNorm -> SiLU -> pointwise; section 3.2).
        conformer_kernel_size: kernel of the depth-wise convolution of the Conformer adapter.
        scaling: a float multiplying the adapter output, or ``"learned"`` (one trainable scalar per adapter,
            initialised to 1).
        residual: sequential mode only: ``y + s * A(y)`` when True (the paper's README: "sequential adapter
            benefits from residuals"), ``s * A(y)`` when False (then the model does not start as the base).
        adapter_dropout: dropout on the adapter input.
        init_weights: True: down projection with PyTorch's default (Kaiming-uniform) init and up projection
            zero, so the adapted model starts exactly as the base (Houlsby et al. section 2.1). The reference
            code zero-initialises both projections, which leaves their weights at zero forever (only the up
            bias learns); that is deliberately not reproduced. False: random up projection (for tests).
        layers_to_transform: block indices that get adapters (default: all).
        target_modules: explicit sub-layer modules (names or a regex), for architectures whose blocks are not
            recognised. Each must return the sub-layer output (a tensor, or a tuple whose first element is the
            output) that the block then adds to its residual stream; its first argument is the sub-layer input.
            When None (default), targets are resolved from the block layout (AST, ViT, DeiT, BERT/RoBERTa-style,
            Wav2Vec2/HuBERT-style, CLIP/LLaMA-style) and ``location``.
        exclude_modules: module names (or a regex) never adapted.
        modules_to_save: modules trained fully and saved with the adapter, e.g. ``["classifier"]``.
        train_layer_norms: also train (via ``modules_to_save``) the layer norms the paper trains: the norm in
            front of each adapted sub-layer (``layernorm_after`` for Pfeiffer, plus ``layernorm_before`` for
            Houlsby) and the encoder's final norm. The resolved names are written into ``modules_to_save``.
        max_length: input length (spectrogram frames) the AST will see, when it differs from the pretrained
            ``config.max_length``. The pretrained position embeddings are bilinearly interpolated to the new
            patch grid at injection (and again, identically, when the adapter is loaded), never re-initialised.
    """

    preset: Optional[str] = field(default=None, metadata={"help": "'pfeiffer' or 'houlsby' (sets location)."})
    location: str = field(default="ffn", metadata={"help": "'mhsa', 'ffn' or 'both'."})
    mode: str = field(default="sequential", metadata={"help": "'sequential' or 'parallel'."})
    reduction_factor: float = field(default=16.0, metadata={"help": "bottleneck = hidden / reduction_factor."})
    bottleneck_dim: Optional[int] = field(default=None, metadata={"help": "explicit bottleneck width."})
    non_linearity: str = field(default="gelu", metadata={"help": "activation between the projections."})
    adapter_block: str = field(default="bottleneck", metadata={"help": "'bottleneck' or 'conformer'."})
    conformer_kernel_size: int = field(default=8, metadata={"help": "depth-wise kernel of the Conformer adapter."})
    scaling: Union[float, str] = field(default=1.0, metadata={"help": "output scale, or 'learned'."})
    residual: bool = field(default=True, metadata={"help": "sequential mode: add the adapter to its input."})
    adapter_dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter input."})
    init_weights: bool = field(default=True, metadata={"help": "zero up projection (start as the base model)."})
    layers_to_transform: Optional[Union[list[int], int]] = field(default=None, metadata={"help": "block indices."})
    target_modules: Optional[Union[list[str], str]] = field(
        default=None, metadata={"help": "explicit sub-layer modules (default: resolved from the block layout)."}
    )
    exclude_modules: Optional[Union[list[str], str]] = field(default=None, metadata={"help": "never adapted."})
    modules_to_save: Optional[list[str]] = field(default=None, metadata={"help": "trained and saved fully."})
    train_layer_norms: bool = field(default=False, metadata={"help": "train the norms the paper trains."})
    max_length: Optional[int] = field(default=None, metadata={"help": "AST input frames (interpolates positions)."})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType.BOTTLENECK
        if self.preset is not None:
            preset = str(self.preset).lower()
            if preset not in PRESETS:
                raise ValueError(f"BottleneckConfig.preset={self.preset!r} is not allowed; use one of {sorted(PRESETS)} or None")
            self.preset = preset
            self.location = PRESETS[preset]
        _check_choice("location", self.location, LOCATIONS)
        _check_choice("mode", self.mode, MODES)
        _check_choice("adapter_block", self.adapter_block, BLOCKS)
        _check_choice("non_linearity", self.non_linearity, NON_LINEARITIES)
        if not isinstance(self.reduction_factor, (int, float)) or self.reduction_factor <= 0:
            raise ValueError(f"BottleneckConfig.reduction_factor={self.reduction_factor!r} must be a number > 0")
        if self.bottleneck_dim is not None and (not isinstance(self.bottleneck_dim, int) or self.bottleneck_dim < 1):
            raise ValueError(f"BottleneckConfig.bottleneck_dim={self.bottleneck_dim!r} must be an integer >= 1 or None")
        if not isinstance(self.conformer_kernel_size, int) or self.conformer_kernel_size < 1:
            raise ValueError(
                f"BottleneckConfig.conformer_kernel_size={self.conformer_kernel_size!r} must be an integer >= 1"
            )
        if isinstance(self.scaling, str):
            if self.scaling != "learned":
                raise ValueError(f"BottleneckConfig.scaling={self.scaling!r} must be a float or 'learned'")
        elif not isinstance(self.scaling, (int, float)):
            raise ValueError(f"BottleneckConfig.scaling={self.scaling!r} must be a float or 'learned'")
        if not 0.0 <= float(self.adapter_dropout) < 1.0:
            raise ValueError(f"BottleneckConfig.adapter_dropout={self.adapter_dropout!r} must be in [0, 1)")
        if isinstance(self.layers_to_transform, int):
            self.layers_to_transform = [self.layers_to_transform]
        if self.layers_to_transform is not None and not all(
            isinstance(i, int) and i >= 0 for i in self.layers_to_transform
        ):
            raise ValueError(
                f"BottleneckConfig.layers_to_transform={self.layers_to_transform!r} must be block indices >= 0"
            )
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 16):
            raise ValueError(f"BottleneckConfig.max_length={self.max_length!r} must be an integer >= 16 (frames) or None")
        if self.target_modules is not None and self.train_layer_norms:
            raise ValueError(
                "BottleneckConfig.train_layer_norms=True needs the block layout, so it cannot be combined with "
                f"explicit target_modules={self.target_modules!r}; list the norms in modules_to_save instead"
            )
        if isinstance(self.target_modules, (list, tuple, set)):
            self.target_modules = list(self.target_modules)

    @property
    def sub_layers(self) -> tuple[str, ...]:
        """The sub-layer roles that get adapters: ``("mhsa",)``, ``("ffn",)`` or both."""
        return ("mhsa", "ffn") if self.location == "both" else (self.location,)

    def bottleneck_size(self, hidden_size: int) -> int:
        """Width of the bottleneck for a sub-layer of width ``hidden_size``."""
        if self.bottleneck_dim is not None:
            return self.bottleneck_dim
        return max(1, int(round(hidden_size / self.reduction_factor)))


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"BottleneckConfig.{name}={value!r} is not allowed; use one of {list(allowed)}")


# `import peft` above may have run the registry while this module was half-imported: finish it now.
from ...registry import register_peft_methods  # noqa: E402

register_peft_methods()
