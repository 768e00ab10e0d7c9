"""LT-SFT layers: a dense or sparse difference added to a linear or embedding weight."""

from __future__ import annotations

import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge


class LTSFTLayer(BaseTunerLayer):
    """Holds, per adapter, either a dense difference (the dense phase) or K indices and values (sparse).

    The effective weight is ``W + sum of the active adapters' differences``; several active adapters
    compose by addition (a language and a task SFT, Ansell et al. 2022, Sec. 3.2).
    """

    adapter_layer_names = ("lt_sft_dense", "lt_sft_values")
    other_param_names = ("lt_sft_indices",)

    def __init__(self, base_layer: nn.Module, **kwargs):
        self.base_layer = base_layer
        self.lt_sft_dense = nn.ParameterDict({})
        self.lt_sft_values = nn.ParameterDict({})
        self.lt_sft_indices = BufferDict({}, persistent=True)
        # adapter -> the base entries it overwrote when merged, restored bit for bit on unmerge
        self._lt_sft_merged_originals: dict[str, torch.Tensor] = {}
        self._disable_adapters = False
        self.merged_adapters = []
        self.kwargs = kwargs

    def update_layer(self, adapter_name: str, count: Optional[int] = None, inference_mode: bool = False) -> None:
        """Create the adapter's parameters: dense when ``count`` is None, else ``count`` sparse entries."""
        weight = self.get_base_layer().weight
        dtype = weight.dtype if weight.dtype.is_floating_point else torch.float32
        if count is None:
            self.lt_sft_dense[adapter_name] = nn.Parameter(torch.zeros(weight.shape, dtype=dtype, device=weight.device))
        else:
            if not 0 <= count <= weight.numel():
                raise ValueError(f"LT-SFT: {count} entries requested for a weight of {weight.numel()}")
            self.lt_sft_indices[adapter_name] = torch.zeros(count, dtype=torch.long, device=weight.device)
            self.lt_sft_values[adapter_name] = nn.Parameter(torch.zeros(count, dtype=dtype, device=weight.device))
        self.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def to_sparse(self, adapter_name: str, indices: torch.Tensor) -> None:
        """Keep ``indices`` (flat positions in the weight) of a dense adapter; reset their values to zero.

        Resetting to the pretrained weights before the sparse phase is Alg. 1, line 5 of the paper.
        """
        if adapter_name not in self.lt_sft_dense:
            raise ValueError(f"adapter {adapter_name!r} of this layer is not in its dense phase")
        device = self.lt_sft_dense[adapter_name].device
        dtype = self.lt_sft_dense[adapter_name].dtype
        del self.lt_sft_dense[adapter_name]
        indices = torch.sort(indices.to(device=device, dtype=torch.long)).values
        self.lt_sft_indices[adapter_name] = indices
        self.lt_sft_values[adapter_name] = nn.Parameter(torch.zeros(len(indices), dtype=dtype, device=device))
        self.set_adapter(self.active_adapters)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """The adapter's difference as a dense tensor shaped like the base weight (differentiable)."""
        weight = self.get_base_layer().weight
        if adapter_name in self.lt_sft_dense:
            return self.lt_sft_dense[adapter_name]
        values = self.lt_sft_values[adapter_name]
        flat = torch.zeros(weight.numel(), dtype=values.dtype, device=values.device)
        flat = flat.index_put((self.lt_sft_indices[adapter_name],), values)
        return flat.view(weight.shape)

    def _has_adapter(self, name: str) -> bool:
        return name in self.lt_sft_dense or name in self.lt_sft_values

    def _pending_adapters(self) -> list[str]:
        """Active adapters of this layer that are not merged into the base weight."""
        return [a for a in self.active_adapters if self._has_adapter(a) and a not in self.merged_adapters]

    def _effective_weight(self) -> torch.Tensor:
        weight = self.get_base_layer().weight
        for name in self._pending_adapters():
            weight = weight + self.get_delta_weight(name).to(weight.dtype)
        return weight

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        """Add the differences into the base weight; the overwritten entries are kept for an exact unmerge."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        weight = self.get_base_layer().weight
        for name in adapter_names:
            if not self._has_adapter(name):
                continue
            with torch.no_grad():
                flat = weight.data.view(-1)
                if name in self.lt_sft_dense:
                    self._lt_sft_merged_originals[name] = flat.clone()
                    merged = flat + self.lt_sft_dense[name].detach().view(-1).to(flat.dtype)
                else:
                    idx = self.lt_sft_indices[name]
                    self._lt_sft_merged_originals[name] = flat[idx].clone()
                    merged = flat.clone()
                    merged[idx] += self.lt_sft_values[name].detach().to(flat.dtype)
                if safe_merge and not torch.isfinite(merged).all():
                    raise ValueError(f"NaNs or infinities after merging LT-SFT adapter {name!r}")
                flat.copy_(merged)
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Restore the base weight bit for bit (adapters are taken out in reverse order of merging)."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.")
            return
        weight = self.get_base_layer().weight
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            original = self._lt_sft_merged_originals.pop(name)
            with torch.no_grad():
                flat = weight.data.view(-1)
                if name in self.lt_sft_dense:
                    flat.copy_(original)
                else:
                    flat[self.lt_sft_indices[name]] = original


class _LTSFTModule(nn.Module, LTSFTLayer):
    """Shared life cycle of the wrapped layers; subclasses say how the effective weight is applied."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, count: Optional[int] = None, **kwargs):
        super().__init__()
        LTSFTLayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, count)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        base = self.get_base_layer()
        if self.disable_adapters and self.merged:
            self.unmerge()
        if self.disable_adapters or not self._pending_adapters():
            return base(x, *args, **kwargs)
        return self._apply_weight(x, self._effective_weight())

    def _apply_weight(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return "lt_sft." + super().__repr__()


class Linear(_LTSFTModule):
    """``nn.Linear`` with LT-SFT differences on its weight."""

    def _apply_weight(self, x, weight):
        return F.linear(x, weight, self.get_base_layer().bias)


class Embedding(_LTSFTModule):
    """``nn.Embedding`` with LT-SFT differences on its weight."""

    def _apply_weight(self, x, weight):
        base = self.get_base_layer()
        return F.embedding(x, weight, base.padding_idx, base.max_norm, base.norm_type, base.scale_grad_by_freq, base.sparse)


# `import peft` may have run the registry while this package was half-imported: finish it now.
from ...registry import register_peft_methods  # noqa: E402

register_peft_methods()
