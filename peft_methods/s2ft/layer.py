"""The S²FT tuner layer: a linear layer with trainable row or column slices (paper §3.2-§3.3).

For a selected index set ``S`` the adapter of a layer is a delta ``Δ`` that lives only on the selected slice:

* column components (``o``, ``down``): ``W[:, S] + Δ``, ``Δ`` of shape ``(out, |S|)``, so
  ``y = x Wᵀ + b + x[..., S] Δᵀ``;
* row components (``q``, ``k``, ``v``, ``gate``, ``up``): ``W[S, :] + Δ``, ``Δ`` of shape ``(|S|, in)``, so
  ``y[..., S] += x Δᵀ``.

Partial back-propagation (§3.3): the custom autograd functions below keep, for the weight gradient, only what
``∂L/∂Δ`` needs: for a column component a *copy* of the selected input columns ``x[..., S]`` (a view would keep
the whole activation alive), for a row component the input that the frozen projection already reads. The frozen
base weight is never given a gradient; gradients and optimizer state exist only for the deltas, which are plain
``nn.Parameter`` s, so gradient accumulation, clipping, gradient checkpointing and mixed precision work as usual.

Merging adds ``Δ`` into the slice (``W[:, S] += Δ``); the slice it overwrote is kept so that unmerging restores the
base weight bit for bit.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge

QUANTIZED_LINEAR_TYPES = ("Linear8bitLt", "Linear4bit")


class S2FTLayer(BaseTunerLayer):
    """Adapter state of one S²FT layer: per adapter a delta (trainable), its indices and its axis."""

    adapter_layer_names = ("s2ft_delta",)
    other_param_names = ("s2ft_index", "s2ft_axis")

    def __init__(self, base_layer: nn.Module, **kwargs) -> None:
        self.base_layer = base_layer
        self.s2ft_delta = nn.ParameterDict({})
        self.s2ft_index = BufferDict({}, persistent=True)
        self.s2ft_axis: dict[str, str] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._s2ft_merge_backup: list[torch.Tensor] = []  # slices overwritten by merge(), for a bit-exact unmerge
        base = self.get_base_layer()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.kwargs = kwargs

    @property
    def is_quantized(self) -> bool:
        return type(self.get_base_layer()).__name__ in QUANTIZED_LINEAR_TYPES

    def update_layer(
        self, adapter_name: str, index: torch.Tensor, axis: str, init_weights: bool = True, inference_mode: bool = False
    ) -> None:
        """Add (or replace) adapter ``adapter_name`` training the rows (``axis="row"``) or columns ``index``."""
        if axis not in ("row", "col"):
            raise ValueError(f"S2FT axis must be 'row' or 'col', got {axis!r}")
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        limit = self.out_features if axis == "row" else self.in_features
        if index.numel() == 0 or int(index.min()) < 0 or int(index.max()) >= limit:
            raise ValueError(
                f"S2FT adapter {adapter_name!r}: {axis} indices must be non-empty and in [0, {limit}), "
                f"got {index.numel()} indices in [{int(index.min()) if index.numel() else '-'}, "
                f"{int(index.max()) if index.numel() else '-'}]"
            )
        if torch.unique(index).numel() != index.numel():
            raise ValueError(f"S2FT adapter {adapter_name!r}: duplicate indices")
        shape = (self.out_features, index.numel()) if axis == "col" else (index.numel(), self.in_features)
        if init_weights:
            delta = torch.zeros(shape)
        else:  # tests only: a non-zero adapter
            delta = torch.randn(shape, generator=torch.Generator().manual_seed(index.numel() + limit)) * 0.02
        self.s2ft_delta[adapter_name] = nn.Parameter(delta)
        self.s2ft_index[adapter_name] = index
        self.s2ft_axis[adapter_name] = axis
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """The dense ``(out, in)`` weight change of ``adapter`` (zeros outside its slice)."""
        delta = self.s2ft_delta[adapter]
        index = self.s2ft_index[adapter].to(delta.device)
        dense = torch.zeros(self.out_features, self.in_features, dtype=delta.dtype, device=delta.device)
        return dense.index_add_(1 if self.s2ft_axis[adapter] == "col" else 0, index, delta.detach())


class Linear(nn.Module, S2FTLayer):
    """S²FT around an ``nn.Linear`` (fused forward/backward) or a bitsandbytes 8-bit/4-bit linear (delta added
    to the quantised layer's output, kept in higher precision; merging is refused there)."""

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        index: torch.Tensor,
        axis: str,
        init_weights: bool = True,
        **kwargs,
    ) -> None:
        super().__init__()
        S2FTLayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, index, axis, init_weights=init_weights)

    # -- forward --------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"S2FT layer got an input of shape {tuple(x.shape)}; expected the last dimension to be "
                f"in_features={self.in_features}"
            )
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if self.merged:
            return self.base_layer(x, *args, **kwargs)
        active = [a for a in self.active_adapters if a in self.s2ft_delta]
        base = self.get_base_layer()
        fusable = (
            len(active) == 1
            and not args
            and not kwargs
            and type(base) is nn.Linear
            and not base.weight.requires_grad
            and (base.bias is None or not base.bias.requires_grad)
        )
        if fusable:
            a = active[0]
            return _S2FTLinearFunction.apply(
                x, base.weight, base.bias, self.s2ft_delta[a], self.s2ft_index[a], self.s2ft_axis[a] == "col"
            )
        result = self.base_layer(x, *args, **kwargs)
        for a in active:
            delta, index = self.s2ft_delta[a], self.s2ft_index[a]
            if self.s2ft_axis[a] == "col":
                result = result + _S2FTColumnDeltaFunction.apply(x, delta, index).to(result.dtype)
            else:
                part = F.linear(self._cast_input_dtype(x, delta.dtype), delta).to(result.dtype)
                result = result.index_add(-1, index, part)
        return result

    # -- merge ----------------------------------------------------------------------------------------

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        """Add the deltas of ``adapter_names`` (default: the active ones) into the base weight slices."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        if not adapter_names:
            return
        if self.is_quantized:
            raise ValueError(
                f"S2FT cannot merge into a bitsandbytes {type(self.get_base_layer()).__name__} layer: writing the "
                "delta would re-quantise the whole weight and unmerging could not restore it. Load the base model "
                "unquantised (e.g. in bf16) and merge there, or keep the adapter unmerged."
            )
        weight = self.get_base_layer().weight
        for name in adapter_names:
            if name not in self.s2ft_delta:
                continue
            dim = 1 if self.s2ft_axis[name] == "col" else 0
            index = self.s2ft_index[name].to(weight.device)
            delta = self.s2ft_delta[name].detach().to(weight.device, weight.dtype)
            backup = weight.data.index_select(dim, index)
            merged_slice = backup + delta  # W[:, S] += Δ (exactly what the unmerged forward adds)
            if safe_merge and not torch.isfinite(merged_slice).all():
                raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken")
            weight.data.index_copy_(dim, index, merged_slice)
            self._s2ft_merge_backup.append(backup)
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Restore the slices that ``merge`` overwrote, last merged first (bit-exact)."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.")
            return
        weight = self.get_base_layer().weight
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            backup = self._s2ft_merge_backup.pop()
            dim = 1 if self.s2ft_axis[name] == "col" else 0
            weight.data.index_copy_(dim, self.s2ft_index[name].to(weight.device), backup.to(weight.device))

    def __repr__(self) -> str:
        return "s2ft." + super().__repr__()


# -- partial back-propagation ------------------------------------------------------------------------------


class _S2FTLinearFunction(torch.autograd.Function):
    """``y = x Wᵀ + b`` plus one adapter's slice, with a backward that needs only the slice's inputs (§3.3).

    Saved for backward: the (frozen) weight and the delta, which are parameters anyway, and
    ``x[..., S]`` (a copy) for column deltas or ``x`` for row deltas. ``∂L/∂W`` is never formed.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, delta, index, is_col):
        dim = 1 if is_col else 0
        # Same precision for base and delta (fp32 training): one matmul with W_eff = W + Δ on the slice, exactly
        # the merged weight. Lower-precision bases (bf16, autocast): the delta branch runs separately so that
        # small updates are not rounded away in W + Δ.
        one_matmul = weight.dtype == delta.dtype == x.dtype and not torch.is_autocast_enabled(x.device.type)
        if one_matmul:
            y = F.linear(x, weight.index_add(dim, index, delta), bias)
        else:
            y = F.linear(x, weight, bias)
        if is_col:
            kept = x.index_select(-1, index)  # index_select copies: the full activation is not kept alive
            if not one_matmul:
                y = y + F.linear(kept.to(delta.dtype), delta).to(y.dtype)
        else:
            kept = x
            if not one_matmul:
                y.index_add_(-1, index, F.linear(x.to(delta.dtype), delta).to(y.dtype))
        ctx.is_col = is_col
        ctx.x_dtype = x.dtype
        ctx.save_for_backward(weight, delta, index, kept)
        return y

    @staticmethod
    def backward(ctx, grad):
        weight, delta, index, kept = ctx.saved_tensors
        grad_x = grad_bias = grad_delta = None
        dt = grad.dtype
        if ctx.needs_input_grad[0]:
            if weight.dtype == delta.dtype == dt:  # ∂L/∂x = g W_eff, W_eff rebuilt (not saved: out x in floats)
                grad_x = grad.matmul(weight.index_add(1 if ctx.is_col else 0, index, delta))
            else:
                grad_x = grad.matmul(weight.to(dt))
                if ctx.is_col:  # ∂L/∂x[..., S] += g Δ
                    grad_x.index_add_(-1, index, grad.matmul(delta.to(dt)))
                else:  # ∂L/∂x += g[..., S] Δ
                    grad_x += grad.index_select(-1, index).matmul(delta.to(dt))
            grad_x = grad_x.to(ctx.x_dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0)
        if ctx.needs_input_grad[3]:
            g2 = grad.reshape(-1, grad.shape[-1])
            k2 = kept.reshape(-1, kept.shape[-1]).to(dt)
            if ctx.is_col:  # ∂L/∂Δ = gᵀ x[..., S]        (out, |S|)
                grad_delta = g2.t().matmul(k2)
            else:  # ∂L/∂Δ = g[..., S]ᵀ x                    (|S|, in)
                grad_delta = g2.index_select(-1, index).t().matmul(k2)
            grad_delta = grad_delta.to(delta.dtype)
        return grad_x, None, grad_bias, grad_delta, None, None


class _S2FTColumnDeltaFunction(torch.autograd.Function):
    """``x[..., S] Δᵀ`` keeping only the copy ``x[..., S]`` for backward (for quantised or shared bases)."""

    @staticmethod
    def forward(ctx, x, delta, index):
        kept = x.index_select(-1, index)
        ctx.x_shape = x.shape
        ctx.x_dtype = x.dtype
        ctx.save_for_backward(delta, index, kept)
        return F.linear(kept.to(delta.dtype), delta)

    @staticmethod
    def backward(ctx, grad):
        delta, index, kept = ctx.saved_tensors
        grad_x = grad_delta = None
        if ctx.needs_input_grad[0]:
            part = grad.matmul(delta.to(grad.dtype)).to(ctx.x_dtype)
            grad_x = torch.zeros(ctx.x_shape, dtype=ctx.x_dtype, device=grad.device).index_add_(-1, index, part)
        if ctx.needs_input_grad[1]:
            g2 = grad.reshape(-1, grad.shape[-1])
            grad_delta = g2.t().matmul(kept.reshape(-1, kept.shape[-1]).to(grad.dtype)).to(delta.dtype)
        return grad_x, grad_delta, None


# `import peft` may have run the registry while this package was half-imported: finish it now.
from ...registry import register_peft_methods  # noqa: E402

register_peft_methods()
