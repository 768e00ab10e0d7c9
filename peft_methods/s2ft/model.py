"""The S²FT tuner: selects units, wraps the selected linear layers, merges/unloads (peft's BaseTuner API)."""

from __future__ import annotations

from torch import nn

from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from .config import COMPONENT_AXIS, S2FTConfig
from .layer import QUANTIZED_LINEAR_TYPES, Linear, S2FTLayer
from .selection import base_linear, find_blocks, select_s2ft_units


class S2FTModel(BaseTuner):
    """Creates an S²FT model from a pretrained transformers model (Yang et al., NeurIPS 2024).

    Use it through peft::

        >>> import hf_plugins  # registers peft type S2FT
        >>> from peft import get_peft_model
        >>> from hf_plugins import S2FTConfig
        >>> model = get_peft_model(base_model, S2FTConfig(target_components=["o", "down"], ratio={"o": 0.25, "down": 0.1}))

    The selection (``config.selection``, module name -> heads/KV groups or channels) is computed when the adapter is
    injected (random/weight strategies) or beforehand with
    :func:`~hf_plugins.peft_methods.s2ft.selection.select_s2ft_units` (activation/gradient strategies), and saved
    in ``adapter_config.json``; the deltas and the element indices are saved in ``adapter_model.safetensors``.
    """

    prefix: str = "s2ft_"
    tuner_layer_cls = S2FTLayer
    target_module_mapping: dict[str, list[str]] = {}

    def _prepare_adapter_config(self, peft_config: S2FTConfig, model_config: dict) -> S2FTConfig:
        # target_modules are derived from the selection in _prepare_model, not from a per-architecture table
        return peft_config

    def _prepare_model(self, peft_config: S2FTConfig, model: nn.Module) -> None:
        """Compute the selection (if not given) and map every selected module to its layer and component."""
        if peft_config.selection is None:
            if peft_config.strategy in ("activation", "gradient"):
                raise ValueError(
                    f"S2FTConfig.strategy={peft_config.strategy!r} needs calibration data: call "
                    "hf_plugins.select_s2ft_units(model, config, calibration_batches=...) before get_peft_model"
                )
            select_s2ft_units(model, peft_config)
        elif not peft_config.target_modules:
            peft_config.target_modules = sorted(peft_config.selection)
        sites = {}
        for block in find_blocks(model, peft_config):
            for comp in peft_config.target_components:
                sites[block.modules[comp]] = (block, comp)
        unknown = sorted(set(peft_config.selection) - set(sites))
        if unknown:
            raise ValueError(
                f"S2FTConfig.selection names modules that are not {peft_config.target_components} components of a "
                f"recognised layer: {unknown[:5]}"
            )
        for name, units in peft_config.selection.items():
            block, comp = sites[name]
            n = block.n_units(comp, peft_config.attention_unit)
            if units and max(units) >= n:
                raise ValueError(f"S2FTConfig.selection[{name!r}]={units}: {comp} has {n} units in that layer")
        self._s2ft_sites = sites

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if current_key not in peft_config.selection:
            return  # matched a target-module suffix but holds no selected unit
        block, comp = self._s2ft_sites[current_key]
        index = block.element_indices(comp, peft_config.selection[current_key], peft_config.attention_unit)
        axis = COMPONENT_AXIS[comp]
        if isinstance(target, S2FTLayer):
            target.update_layer(
                adapter_name, index, axis, init_weights=peft_config.init_weights, inference_mode=peft_config.inference_mode
            )
            return
        base = base_linear(target)
        if not (isinstance(base, nn.Linear) or type(base).__name__ in QUANTIZED_LINEAR_TYPES):
            raise TypeError(
                f"S2FT supports torch.nn.Linear and bitsandbytes Linear8bitLt/Linear4bit layers; {current_key} is "
                f"a {type(base).__name__}"
            )
        if isinstance(target, BaseTunerLayer):
            raise TypeError(f"{current_key} is already wrapped by another peft method ({type(target).__name__})")
        new_module = Linear(target, adapter_name, index, axis, init_weights=peft_config.init_weights)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)


# `import peft` may have run the registry while this package was half-imported: finish it now.
from ...registry import register_peft_methods  # noqa: E402

register_peft_methods()
