"""The LT-SFT tuner: injects LT-SFT layers, selects the winning ticket, and runs the two phases."""

from __future__ import annotations

import torch
from torch import nn

from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils import ModulesToSaveWrapper

from .config import LTSFTConfig
from .layer import Embedding, Linear, LTSFTLayer


class LTSFTModel(BaseTuner):
    """Lottery-Ticket Sparse Fine-Tuning as a peft tuner.

    Example::

        >>> from peft import get_peft_model
        >>> from hf_plugins import LTSFTConfig, train_lt_sft
        >>> model = get_peft_model(base, LTSFTConfig(num_tunable_weights=100_000, modules_to_save=["classifier"]))
        >>> train_lt_sft(model, training_args, dense_steps=1000, sparse_steps=1000, train_dataset=ds)  # or LTSFTTrainer
        >>> model.save_pretrained("task-sft")          # indices + values, safetensors

    Several sparse fine-tunes compose by addition: load a language SFT and a task SFT as two adapters
    and activate both with ``model.base_model.set_adapter(["lang", "task"])``.
    """

    prefix: str = "lt_sft_"
    tuner_layer_cls = LTSFTLayer
    target_module_mapping: dict = {}

    def _prepare_adapter_config(self, peft_config: LTSFTConfig, model_config: dict) -> LTSFTConfig:
        return peft_config  # targets are resolved from the modules themselves in _prepare_model

    def _prepare_model(self, peft_config: LTSFTConfig, model: nn.Module) -> None:
        if peft_config.target_modules is not None:
            return
        skip = set(peft_config.modules_to_save or [])
        output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        targets = []
        for name, module in model.named_modules():
            if name.endswith(".base_layer") or ".base_layer." in name:
                continue
            if isinstance(module, BaseTunerLayer):  # already wrapped by another adapter
                module = module.get_base_layer()
            if not isinstance(module, (nn.Linear, nn.Embedding)) or module is output:
                continue
            if any(name == s or name.endswith("." + s) or f".{s}." in f".{name}." for s in skip):
                continue
            targets.append(name)
        if not targets:
            raise ValueError("LT-SFT found no nn.Linear or nn.Embedding layer to fine-tune in this model")
        peft_config.target_modules = set(targets)

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key, **kwargs):
        count = None
        if config.phase == "sparse":
            count = int(config.selected_counts.get(current_key, 0))
        if isinstance(target, LTSFTLayer):
            target.update_layer(adapter_name, count)
            return
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        if isinstance(base, nn.Linear):
            new_module = Linear(target, adapter_name, count)
        elif isinstance(base, nn.Embedding):
            new_module = Embedding(target, adapter_name, count)
        else:
            raise TypeError(
                f"LT-SFT supports nn.Linear and nn.Embedding; module {current_key!r} is {type(base).__name__}"
            )
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _tuner_layers(self, adapter_name: str):
        for key, module in self.model.named_modules():
            if isinstance(module, LTSFTLayer) and module._has_adapter(adapter_name):
                yield key, module

    @torch.no_grad()
    def select_sparse(self, adapter_name: str = "default", num_tunable_weights: int | None = None) -> dict[str, int]:
        """End the dense phase: keep the K entries that moved most, reset everything to the base weights.

        The K largest ``|theta_dense - theta_0|`` over all targeted weights together are kept (Alg. 1,
        line 4); the differences and ``modules_to_save`` are reset (line 5) and from now on only those K values are
        parameters, so the optimizer, weight decay and gradients never touch any other entry. Returns
        the per-module counts, which are also written to the adapter's config.
        """
        config = self.peft_config[adapter_name]
        if config.phase != "dense":
            raise ValueError(f"adapter {adapter_name!r} is already sparse")
        layers = [(k, m) for k, m in self._tuner_layers(adapter_name) if adapter_name in m.lt_sft_dense]
        if not layers:
            raise ValueError(f"no dense LT-SFT parameters for adapter {adapter_name!r}")
        # Keys are module names relative to the wrapped model, as in _create_and_replace.
        sizes = [m.lt_sft_dense[adapter_name].numel() for _, m in layers]
        total = sum(sizes)
        k = num_tunable_weights or config.num_tunable_weights or max(1, round(config.density * total))
        k = min(int(k), total)
        magnitudes = torch.cat([m.lt_sft_dense[adapter_name].detach().abs().flatten().float() for _, m in layers])
        chosen = torch.topk(magnitudes, k, sorted=False).indices
        del magnitudes
        counts = {}
        offset = 0
        for (key, module), size in zip(layers, sizes):
            mine = chosen[(chosen >= offset) & (chosen < offset + size)] - offset
            module.to_sparse(adapter_name, mine)
            counts[key] = int(mine.numel())
            offset += size
        # modules_to_save are reset to their pretrained values too: the sparse phase starts from theta_0
        for module in self.model.modules():
            if isinstance(module, ModulesToSaveWrapper) and adapter_name in module.modules_to_save:
                module.modules_to_save[adapter_name].load_state_dict(module.original_module.state_dict())
        config.selected_counts = counts
        config.phase = "sparse"
        return counts

    def sparse_difference(self, adapter_name: str = "default") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Module name -> (flat indices, values) of a sparse adapter."""
        out = {}
        for key, module in self._tuner_layers(adapter_name):
            if adapter_name in module.lt_sft_values:
                out[key] = (module.lt_sft_indices[adapter_name], module.lt_sft_values[adapter_name].detach())
        return out


# `import peft` may have run the registry while this package was half-imported: finish it now.
from ...registry import register_peft_methods  # noqa: E402

register_peft_methods()
