"""``BottleneckModel``: the peft tuner that places bottleneck adapters in transformer blocks.

Targets are resolved structurally, per block, from ``BottleneckConfig.location`` (paper section 3.1: after
MHSA, after FFN, or both): the tuner finds the model's stack of blocks (an ``nn.ModuleList``), recognises
the block layout and wraps the attention / feed-forward sub-layer modules in :class:`BottleneckLayer`.

Recognised layouts (transformers 5):

* residual outside the sub-layers: ``ASTLayer`` and ``ViTLayer`` / ``DeiTLayer`` (``attention`` + ``mlp``),
  ``Wav2Vec2EncoderLayer`` / HuBERT / WavLM-style (``attention`` + ``feed_forward``), CLIP / LLaMA-style
  (``self_attn`` + ``mlp``);
* post-LN with the residual inside the output module: BERT / RoBERTa / ELECTRA-style
  (``attention.output`` + ``output``).

Anything else raises a ``ValueError`` naming the block class; ``target_modules`` then places adapters by name.
"""

from __future__ import annotations

import re
import warnings
from typing import Optional

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer, check_target_module_exists
from torch import nn

from .config import BottleneckConfig
from .layer import BottleneckLayer

ATTENTION_NAMES = ("attention", "self_attn", "attn")
FFN_NAMES = ("mlp", "feed_forward")
# norm in front of (pre-LN) or after (post-LN Wav2Vec2) each sub-layer, trained with train_layer_norms
MHSA_NORM_NAMES = ("layernorm_before", "layer_norm", "input_layernorm", "self_attn_layer_norm", "layer_norm1",
                   "ln_1")
FFN_NORM_NAMES = ("layernorm_after", "final_layer_norm", "post_attention_layernorm", "layer_norm2", "ln_2")
FINAL_NORM_NAMES = ("layernorm", "layer_norm", "final_layer_norm", "final_layernorm", "post_layernorm", "norm", "ln_f")


class BottleneckModel(BaseTuner):
    """Adds bottleneck adapters to a transformer (created by ``get_peft_model`` from a ``BottleneckConfig``).

    Example::

        import hf_plugins  # registers the BOTTLENECK peft type
        from peft import get_peft_model
        from hf_plugins import BottleneckConfig

        config = BottleneckConfig(preset="houlsby", mode="parallel", reduction_factor=16,
                                  modules_to_save=["classifier"], train_layer_norms=True)
        model = get_peft_model(ast_for_audio_classification, config)

    Adapters are non-linear, so ``merge_and_unload`` raises; ``unload`` returns the base model.
    """

    prefix: str = "bottleneck_"
    tuner_layer_cls = BottleneckLayer
    target_module_mapping: dict = {}  # targets come from the block layout, see resolve_bottleneck_targets

    def inject_adapter(self, model: nn.Module, adapter_name: str, autocast_adapter_dtype: bool = True,
                       low_cpu_mem_usage: bool = False, state_dict: Optional[dict] = None) -> None:
        config = self.peft_config[adapter_name]
        targets, norms = resolve_bottleneck_targets(model, config)  # raises before anything is changed
        if config.max_length is not None:
            _set_ast_input_length(model, config.max_length)
        else:
            _warn_if_positions_reset(model)
        if config.train_layer_norms:
            config.modules_to_save = list(dict.fromkeys([*(config.modules_to_save or []), *norms]))
        self._bottleneck_targets = targets
        try:
            super().inject_adapter(model, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype,
                                   low_cpu_mem_usage=low_cpu_mem_usage, state_dict=state_dict)
        finally:
            self._bottleneck_targets = {}

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        """Checkpoint key of a model key: ``...mlp.bottleneck_adapter.<name>.down.weight`` ->
        ``...mlp.bottleneck_adapter.down.weight`` (and ``bottleneck_scale.<name>`` -> ``bottleneck_scale``).

        peft's default only drops the adapter name when it is the second-to-last part (``lora_A.<name>.weight``);
        an adapter here is a module with sub-layers, so the name sits deeper. Without this the name stays in
        the saved keys, an adapter saved as ``default`` cannot be loaded under another name, and transformers'
        ``load_adapter`` (which inserts the name after the prefix) finds nothing to load.
        """
        for container in BottleneckLayer.adapter_layer_names:
            stripped, count = re.subn(rf"\.{container}\.{re.escape(adapter_name)}(?=\.|$)", f".{container}", key)
            if count:
                return stripped
        return super()._remove_adapter_name_from_key(key, adapter_name)

    def _prepare_adapter_config(self, peft_config: BottleneckConfig, model_config: dict) -> BottleneckConfig:
        return peft_config  # no name-based defaults: resolve_bottleneck_targets reads the block layout

    def _check_target_module_exists(self, peft_config: BottleneckConfig, key: str):
        return key in self._bottleneck_targets

    def _create_and_replace(self, peft_config: BottleneckConfig, adapter_name: str, target: nn.Module,
                            target_name: str, parent: nn.Module, current_key: str, **kwargs) -> None:
        wrap_kind, hidden_size = self._bottleneck_targets[current_key]
        if isinstance(target, BottleneckLayer):
            target.update_layer(adapter_name, peft_config)
            return
        new_module = BottleneckLayer(target, hidden_size=hidden_size, wrap_kind=wrap_kind)
        new_module.update_layer(adapter_name, peft_config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _replace_module(self, parent: nn.Module, child_name: str, new_module: nn.Module, child: nn.Module) -> None:
        # BaseTuner's version copies `child.weight` onto modules without `base_layer`, which a whole sub-layer
        # (ASTAttention, BertOutput...) does not have; the wrapper already holds the child as base_layer.
        setattr(parent, child_name, new_module)

    def _check_merge_allowed(self):
        raise ValueError(
            "bottleneck adapters are non-linear (down -> activation -> up) and cannot be merged into the base "
            "weights; use unload() to get the base model back, or keep the PeftModel"
        )


def resolve_bottleneck_targets(model: nn.Module, config: BottleneckConfig):
    """Which modules of ``model`` get adapters, and which norms the paper trains.

    Returns ``(targets, norms)``: ``targets`` maps a module name to ``(wrap_kind, hidden_size)``; ``norms``
    lists the names of the norms to train when ``config.train_layer_norms`` (the norm of each adapted sub-layer
    and the encoder's final norm). Raises ``ValueError`` naming the block class when the layout is unknown.
    """
    hidden_size = getattr(getattr(model, "config", None), "hidden_size", None)
    if config.target_modules is not None:
        targets = {}
        for name, module in model.named_modules():
            if name and _is_adapter_internal(name):
                continue
            if name and check_target_module_exists(config, name):
                if _excluded(config, name):
                    continue
                targets[name] = ("sublayer", hidden_size or _output_width(module, name))
        if not targets:
            raise ValueError(f"BottleneckConfig.target_modules={config.target_modules!r} matched no module of "
                             f"{type(model).__name__}")
        return targets, []

    stacks = _block_stacks(model)
    if not stacks:
        raise ValueError(_unsupported_message(model))
    targets, norms = {}, []
    for stack_name, stack, layout in stacks:
        for index, block in enumerate(stack):
            if config.layers_to_transform is not None and index not in config.layers_to_transform:
                continue
            prefix = f"{stack_name}.{index}"
            for role in config.sub_layers:
                rel, kind, norm = _role_module(block, layout, role)
                name = f"{prefix}.{rel}"
                if _excluded(config, name):
                    continue
                width = hidden_size or _output_width(_get(model, name), name)
                targets[name] = (kind, width)
                if norm is not None:
                    norms.append(f"{prefix}.{norm}")
        if config.train_layer_norms:
            if layout == "post_ln":
                raise ValueError(
                    f"BottleneckConfig.train_layer_norms=True: the norms of {type(stack[0]).__name__} live inside "
                    "the adapted output modules (post-LN block), so they cannot be saved separately; use "
                    "train_layer_norms=False for this model"
                )
            final = _final_norm(model, stack_name)
            if final is not None:
                norms.append(final)
    if config.layers_to_transform is not None and not targets:
        raise ValueError(f"BottleneckConfig.layers_to_transform={config.layers_to_transform!r} selects no block of "
                         f"{type(model).__name__}")
    return targets, list(dict.fromkeys(norms))


def interpolate_ast_position_embeddings(model: nn.Module, max_length: int) -> nn.Module:
    """Resize an AST's position embeddings to inputs of ``max_length`` frames, in place; returns ``model``.

    The patch grid is ``(num_mel_bins - 16) // frequency_stride + 1`` by ``(max_length - 16) // time_stride + 1``;
    the grid part of the pretrained embeddings is bilinearly interpolated to the new grid and the CLS /
    distillation entries are kept (as the original AST code adapts ImageNet positions to spectrograms). This is
    what ``from_pretrained(..., max_length=L, ignore_mismatched_sizes=True)`` does not do: there the embeddings
    are re-initialised to zeros and, being frozen, stay zero (PETL_AST). ``config.max_length`` is updated.
    """
    embeddings = _ast_embeddings(model)
    if embeddings is None:
        raise ValueError(
            f"interpolate_ast_position_embeddings: {type(model).__name__} has no AST embeddings (a module with "
            "`position_embeddings` and `get_shape`, e.g. ASTEmbeddings)"
        )
    config = embeddings.config
    if max_length < config.patch_size:
        raise ValueError(f"max_length={max_length} must be >= the patch size {config.patch_size}")
    old_f, old_t = embeddings.get_shape(config)
    new_t = (max_length - config.patch_size) // config.time_stride + 1
    old = embeddings.position_embeddings
    extra = old.shape[1] - old_f * old_t
    if extra < 0:
        raise ValueError(f"position_embeddings of shape {tuple(old.shape)} do not fit a {old_f}x{old_t} patch grid")
    if new_t != old_t:
        grid = old.data[:, extra:].reshape(1, old_f, old_t, -1).permute(0, 3, 1, 2)
        grid = nn.functional.interpolate(grid.float(), size=(old_f, new_t), mode="bilinear", align_corners=False)
        grid = grid.to(old.dtype).permute(0, 2, 3, 1).reshape(1, old_f * new_t, -1)
        new = torch.cat([old.data[:, :extra], grid], dim=1)
        embeddings.position_embeddings = nn.Parameter(new, requires_grad=old.requires_grad)
    config.max_length = max_length
    if getattr(model, "config", None) is not None and model.config is not config:
        model.config.max_length = max_length
    return model


# -- helpers ---------------------------------------------------------------------------------------------


def _block_stacks(model: nn.Module):
    """``(name, ModuleList, layout)`` for every stack of recognised blocks."""
    stacks = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0 or _is_adapter_internal(name):
            continue
        layouts = {_layout(block) for block in module}
        if len(layouts) == 1 and None not in layouts:
            stacks.append((name, module, layouts.pop()))
    return stacks


def _layout(block: nn.Module) -> Optional[str]:
    attention = _child(block, "attention")
    output = _child(block, "output")
    if (attention is not None and _child(attention, "output") is not None and output is not None
            and all(_child(m, a) is not None for m in (_child(attention, "output"), output)
                    for a in ("dense", "dropout", "LayerNorm"))):
        return "post_ln"
    if any(_child(block, n) is not None for n in ATTENTION_NAMES) and any(_child(block, n) is not None for n in FFN_NAMES):
        return "residual_outside"
    return None


def _role_module(block: nn.Module, layout: str, role: str):
    """``(relative name, wrap kind, norm name or None)`` of the sub-layer ``role`` of ``block``."""
    if layout == "post_ln":
        return ("attention.output", "post_ln_output", None) if role == "mhsa" else ("output", "post_ln_output", None)
    names, norm_names = (ATTENTION_NAMES, MHSA_NORM_NAMES) if role == "mhsa" else (FFN_NAMES, FFN_NORM_NAMES)
    rel = next(n for n in names if _child(block, n) is not None)
    norm = next((n for n in norm_names if _is_norm(_child(block, n))), None)
    return rel, "sublayer", norm


def _final_norm(model: nn.Module, stack_name: str) -> Optional[str]:
    parts = stack_name.split(".")
    for depth in (len(parts) - 1, len(parts) - 2):
        if depth < 0:
            continue
        owner_name = ".".join(parts[:depth])
        owner = _get(model, owner_name) if owner_name else model
        for norm in FINAL_NORM_NAMES:
            if _is_norm(_child(owner, norm)):
                return f"{owner_name}.{norm}" if owner_name else norm
    return None


def _is_norm(module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def _child(module: nn.Module, name: str) -> Optional[nn.Module]:
    child = module._modules.get(name) if module is not None else None
    if isinstance(child, BaseTunerLayer):
        child = child.get_base_layer()
    return child


def _get(model: nn.Module, name: str) -> nn.Module:
    module = model.get_submodule(name)
    return module.get_base_layer() if isinstance(module, BaseTunerLayer) else module


def _is_adapter_internal(name: str) -> bool:
    return any(part == "base_layer" or part.startswith("bottleneck_") for part in name.split("."))


def _excluded(config: BottleneckConfig, name: str) -> bool:
    excluded = config.exclude_modules
    if not excluded:
        return False
    if isinstance(excluded, str):
        return re.fullmatch(excluded, name) is not None
    return any(name == e or name.endswith(f".{e}") for e in excluded)


def _output_width(module: nn.Module, name: str) -> int:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"cannot tell the hidden size of {name} ({type(module).__name__}); the model config has "
                         "no hidden_size and the module holds no nn.Linear")
    return linears[-1].out_features


def _unsupported_message(model: nn.Module) -> str:
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if lists:
        name, stack = max(lists, key=lambda item: sum(p.numel() for p in item[1].parameters()))
        block = type(stack[0]).__name__
        children = ", ".join(stack[0]._modules) or "none"
        what = f"its blocks {block} (at {name}.N; children: {children})"
    else:
        what = "it has no stack of blocks (nn.ModuleList)"
    return (
        f"BottleneckConfig cannot place adapters in {type(model).__name__} (model_type={model_type!r}): {what} match "
        "no supported layout. Supported: residual outside the sub-layers (attention/self_attn/attn + mlp/feed_forward: "
        "AST, ViT, DeiT, Wav2Vec2, HuBERT, CLIP, LLaMA-style) and post-LN BERT-style (attention.output + output). "
        "Pass target_modules=[...] naming the sub-layer modules whose output the block adds to its residual stream."
    )


def _ast_embeddings(model: nn.Module):
    for module in model.modules():
        if hasattr(module, "position_embeddings") and hasattr(module, "get_shape") and hasattr(module, "config"):
            return module
    return None


def _set_ast_input_length(model: nn.Module, max_length: int) -> None:
    embeddings = _ast_embeddings(model)
    if embeddings is None:
        raise ValueError(f"BottleneckConfig.max_length={max_length} is only for AST models; "
                         f"{type(model).__name__} has no AST embeddings")
    if embeddings.config.max_length != max_length:
        if any(isinstance(m, BottleneckLayer) for m in model.modules()):
            raise ValueError(
                f"BottleneckConfig.max_length={max_length}: the model already has adapters for inputs of "
                f"{embeddings.config.max_length} frames; all adapters of one model share the input length"
            )
        interpolate_ast_position_embeddings(model, max_length)


def _warn_if_positions_reset(model: nn.Module) -> None:
    embeddings = _ast_embeddings(model)
    if embeddings is None:
        return
    pos = embeddings.position_embeddings
    if pos.device.type != "meta" and not bool(pos.detach().abs().sum()) and bool(
            embeddings.patch_embeddings.projection.weight.detach().abs().sum()):
        warnings.warn(
            "the AST position embeddings are all zero while the patch embeddings are not: they were probably "
            "re-initialised by from_pretrained(..., ignore_mismatched_sizes=True) for a new max_length, and they stay "
            "frozen. Load the model at its pretrained max_length and set BottleneckConfig.max_length (or call "
            "interpolate_ast_position_embeddings) instead.",
            RuntimeWarning,
        )


# `import peft` may have run the registry while this package was half-imported: finish it now.
from ...registry import register_peft_methods  # noqa: E402

register_peft_methods()
