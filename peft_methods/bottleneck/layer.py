"""Bottleneck adapter modules and the peft tuner layer that wraps a transformer sub-layer.

How the adapter is hooked in: the tuner replaces each adapted *sub-layer module* (for AST in transformers 5:
``ASTLayer.attention`` and ``ASTLayer.mlp``, whose outputs the block adds to its residual stream) by a
:class:`BottleneckLayer` that holds the original module as ``base_layer`` and the adapters in
``ModuleDict``s keyed by adapter name. Being a ``BaseTunerLayer`` is what lets peft's machinery work
unchanged: structural state-dict selection for ``save_pretrained`` (every child except ``base_layer``),
``set_adapter`` / ``disable_adapter`` / ``delete_adapter`` / ``unload``, ``modules_to_save`` and dtype
casting. A forward hook would not be saved, switched or unloaded by peft. Wrapping the whole sub-layer
(rather than its last ``nn.Linear``) is what gives the parallel form access to the sub-layer *input*.

For post-LN blocks (BERT, RoBERTa...) the residual add and the layer norm happen inside the output module
(``BertSelfOutput`` / ``BertOutput``), so the wrapper re-states that module's three-line forward to put the
adapter between the sub-layer and its residual + norm, where Houlsby et al. (2019, Fig. 2) place it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers.activations import ACT2FN

# How a wrapped module is called and where its sub-layer input / output are:
#   "sublayer": module(x, ...) -> y or (y, ...); the block adds y to the residual (AST, ViT, Wav2Vec2, CLIP, LLaMA).
#   "post_ln_output": module(h, input_tensor) -> LayerNorm(dropout(dense(h)) + input_tensor) (BERT family).
WRAP_KINDS = ("sublayer", "post_ln_output")


class BottleneckAdapter(nn.Module):
    """Down projection -> non-linearity -> up projection (Houlsby et al. 2019, Fig. 2; paper section 3.1).

    With ``init_weights=True`` the up projection starts at zero, so the adapter outputs zero and the model
    starts as the base; the down projection keeps PyTorch's Kaiming-uniform init so that its gradient is not
    zero (the reference PETL_AST code zero-initialises both, which freezes both weights at zero).
    """

    def __init__(self, hidden_size: int, bottleneck: int, non_linearity: str = "gelu", dropout: float = 0.0,
                 init_weights: bool = True):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.act = ACT2FN[non_linearity]
        self.up = nn.Linear(bottleneck, hidden_size)
        if init_weights:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(self.dropout(x))))


class ConformerAdapter(nn.Module):
    """Conformer convolution module as an adapter (paper section 3.2, after Gulati et al. 2020, Fig. 2).

    LayerNorm -> pointwise (hidden -> 2*b) -> GLU -> depth-wise conv over the token axis (kernel k, "same"
    padding) -> BatchNorm -> SiLU -> pointwise (b -> hidden). The last pointwise projection starts at zero
    (identity at init). Unlike the reference code, the LayerNorm output is actually used.
    Input/output: ``(batch, tokens, hidden)``.
    """

    def __init__(self, hidden_size: int, bottleneck: int, kernel_size: int = 8, dropout: float = 0.0,
                 init_weights: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.pointwise_in = nn.Linear(hidden_size, 2 * bottleneck)
        self.depthwise = nn.Conv1d(bottleneck, bottleneck, kernel_size, groups=bottleneck, padding="same")
        self.batch_norm = nn.BatchNorm1d(bottleneck)
        self.act = nn.SiLU()
        self.pointwise_out = nn.Linear(bottleneck, hidden_size)
        if init_weights:
            nn.init.zeros_(self.pointwise_out.weight)
            nn.init.zeros_(self.pointwise_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"ConformerAdapter expects hidden states of shape (batch, tokens, hidden), got {tuple(x.shape)}")
        h = nn.functional.glu(self.pointwise_in(self.dropout(self.norm(x))), dim=-1)
        h = self.act(self.batch_norm(self.depthwise(h.transpose(1, 2)))).transpose(1, 2)
        return self.pointwise_out(h)


class BottleneckLayer(nn.Module, BaseTunerLayer):
    """A sub-layer module with bottleneck adapters beside (parallel) or after (sequential) it.

    Args:
        base_layer: the wrapped sub-layer module.
        hidden_size: width of the sub-layer's output (the residual stream).
        wrap_kind: ``"sublayer"`` or ``"post_ln_output"`` (see module docstring).

    Several adapters may live in one layer; the active ones are applied in order: a parallel adapter adds
    ``s * A(x)`` (``x`` the sub-layer input), a sequential one replaces ``y`` by ``y + s * A(y)``.
    Adapters are non-linear, so they cannot be merged into the base weights.
    """

    adapter_layer_names = ("bottleneck_adapter", "bottleneck_scale")
    other_param_names = ("bottleneck_mode", "bottleneck_scaling", "bottleneck_residual")

    def __init__(self, base_layer: nn.Module, hidden_size: int, wrap_kind: str = "sublayer", **kwargs):
        super().__init__()
        if wrap_kind not in WRAP_KINDS:
            raise ValueError(f"BottleneckLayer wrap_kind={wrap_kind!r} is not allowed; use one of {WRAP_KINDS}")
        self.base_layer = base_layer
        self.hidden_size = hidden_size
        self.wrap_kind = wrap_kind
        self.bottleneck_adapter = nn.ModuleDict({})
        self.bottleneck_scale = nn.ParameterDict({})
        self.bottleneck_mode: dict[str, str] = {}
        self.bottleneck_scaling: dict[str, float] = {}
        self.bottleneck_residual: dict[str, bool] = {}
        self._disable_adapters = False
        self.merged_adapters = []
        self.kwargs = kwargs

    def update_layer(self, adapter_name: str, config) -> None:
        """Create adapter ``adapter_name`` from a :class:`BottleneckConfig`."""
        size = config.bottleneck_size(self.hidden_size)
        if config.adapter_block == "conformer":
            adapter = ConformerAdapter(self.hidden_size, size, config.conformer_kernel_size, config.adapter_dropout,
                                       config.init_weights)
        else:
            adapter = BottleneckAdapter(self.hidden_size, size, config.non_linearity, config.adapter_dropout,
                                        config.init_weights)
        if not config.init_weights:  # a random, non-zero start (tests of save/load and placement)
            for p in adapter.parameters():
                if p.dim() > 1:
                    nn.init.normal_(p, std=1.0 / math.sqrt(p.shape[-1]))
        self.bottleneck_adapter[adapter_name] = adapter
        if config.scaling == "learned":
            self.bottleneck_scale[adapter_name] = nn.Parameter(torch.ones(()))
            self.bottleneck_scaling[adapter_name] = 1.0
        else:
            self.bottleneck_scaling[adapter_name] = float(config.scaling)
        self.bottleneck_mode[adapter_name] = config.mode
        self.bottleneck_residual[adapter_name] = bool(config.residual)
        self._move_to_base(adapter_name)
        self.set_adapter(self.active_adapters)

    def _move_to_base(self, adapter_name: str) -> None:
        ref = next((p for p in self.get_base_layer().parameters() if p.is_floating_point()), None)
        adapter_params = list(self.bottleneck_adapter[adapter_name].parameters())
        if ref is None or ref.device.type == "meta" or any(p.device.type == "meta" for p in adapter_params):
            return  # low_cpu_mem_usage loading: peft materialises the weights from the state dict
        self.bottleneck_adapter[adapter_name].to(ref.device)
        if adapter_name in self.bottleneck_scale:
            self.bottleneck_scale[adapter_name] = nn.Parameter(
                self.bottleneck_scale[adapter_name].data.to(ref.device),
                requires_grad=self.bottleneck_scale[adapter_name].requires_grad,
            )

    # -- peft's merge API: adapters are non-linear ---------------------------------------------------------

    def merge(self, safe_merge: bool = False, adapter_names=None) -> None:
        raise ValueError(
            "bottleneck adapters are non-linear (down -> activation -> up) and cannot be merged into the base "
            "weights; keep the PeftModel, or use unload() to get the base model back"
        )

    def unmerge(self) -> None:
        return None

    # -- forward -------------------------------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any):
        active = [n for n in self.active_adapters if n in self.bottleneck_adapter]
        if self.disable_adapters or not active:
            return self.base_layer(*args, **kwargs)
        if self.wrap_kind == "post_ln_output":
            return self._forward_post_ln(active, *args, **kwargs)
        x = args[0] if args else kwargs.get("hidden_states")
        if x is None:
            raise ValueError(
                f"BottleneckLayer around {type(self.base_layer).__name__} found no sub-layer input: expected the "
                "hidden states as first positional argument or as `hidden_states=`"
            )
        out = self.base_layer(*args, **kwargs)
        if isinstance(out, tuple):
            return (self._adapt(active, x, out[0]), *out[1:])
        if hasattr(out, "last_hidden_state") or isinstance(out, dict):
            raise ValueError(
                f"BottleneckLayer cannot adapt {type(self.base_layer).__name__}: it returns {type(out).__name__}, "
                "expected a tensor or a tuple whose first element is the sub-layer output"
            )
        return self._adapt(active, x, out)

    def _forward_post_ln(self, active, hidden_states, input_tensor, *args, **kwargs):
        # BertSelfOutput / BertOutput: LayerNorm(dropout(dense(h)) + input_tensor). The adapter goes between the
        # sub-layer output and the residual + norm (Houlsby et al. 2019, Fig. 2); input_tensor is the sub-layer
        # input, read by parallel adapters.
        base = self.base_layer
        y = base.dropout(base.dense(hidden_states))
        y = self._adapt(active, input_tensor, y)
        return base.LayerNorm(y + input_tensor)

    def _adapt(self, active: list[str], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out_dtype = y.dtype
        for name in active:
            adapter = self.bottleneck_adapter[name]
            dtype = next(adapter.parameters()).dtype
            scale = self.bottleneck_scale[name] if name in self.bottleneck_scale else self.bottleneck_scaling[name]
            if self.bottleneck_mode[name] == "parallel":
                # He et al. 2022 / paper section 3.1: beside the sub-layer, from its input.
                y = y + (adapter(self._cast_input_dtype(x, dtype)) * scale).to(out_dtype)
            else:
                # Houlsby et al. 2019: after the sub-layer, on its output, with the adapter's own residual.
                delta = (adapter(self._cast_input_dtype(y, dtype)) * scale).to(out_dtype)
                y = y + delta if self.bottleneck_residual[name] else delta
        return y

    def __repr__(self) -> str:
        return "bottleneck." + super().__repr__()


# `import peft` may have run the registry while this package was half-imported: finish it now.
from ...registry import register_peft_methods  # noqa: E402

register_peft_methods()
