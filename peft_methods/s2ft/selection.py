"""Which heads and channels S²FT trains: model layouts, unit scores and the selection (paper §3.1, §4.4).

A *unit* is what S²FT selects: an attention head (or, under grouped-query attention, a KV group: one KV head and
all the query heads that read it) or an FFN channel. Every unit owns a contiguous block of rows (q/k/v/gate/up)
or columns (o/down) of a weight, so a per-element score reshaped to ``(n_units, unit_size)`` and summed gives the
per-unit score, and a list of units gives the element indices that the layer trains.

Unlike the reference code, the weights are never permuted: the adapter stores the selected indices in the
coordinates of the unmodified base checkpoint, which is what makes it loadable onto that checkpoint, mergeable
with ``W[:, S] += Δ`` and correct for GQA (the reference reshapes by ``num_key_value_heads`` but indexes by
``num_attention_heads``, Infini-AI-Lab/S2FT#5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from .config import ATTENTION_COMPONENTS, COMPONENT_AXIS, S2FTConfig

#: Component -> module path relative to a transformer layer, for the layouts of transformers' models.
LLAMA_STYLE = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.o_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}
BERT_STYLE = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "o": "attention.output.dense",
    "up": "intermediate.dense",
    "down": "output.dense",
}
LAYOUTS = {"llama": LLAMA_STYLE, "bert": BERT_STYLE}


@dataclass
class S2FTBlock:
    """One transformer layer as S²FT sees it: its components' module names and the attention geometry."""

    name: str
    index: int
    modules: dict[str, str]
    num_heads: int
    num_kv_heads: int
    head_dim: int
    channels: int  # FFN width of this layer (per-layer widths are allowed, e.g. MatFormer submodels)

    def n_units(self, component: str, attention_unit: str) -> int:
        if component in ATTENTION_COMPONENTS:
            return self.num_heads if attention_unit == "query_head" else self.num_kv_heads
        return self.channels

    def unit_size(self, component: str, attention_unit: str) -> int:
        """Rows (row components) or columns (column components) of the weight that one unit owns."""
        if component in ATTENTION_COMPONENTS:
            group = self.num_heads // self.num_kv_heads
            if component in ("k", "v"):
                return self.head_dim  # a KV head (query_head units are refused for k/v under GQA)
            return self.head_dim if attention_unit == "query_head" else group * self.head_dim
        return 1

    def element_indices(self, component: str, units: Iterable[int], attention_unit: str) -> torch.Tensor:
        """Row/column indices of the weight owned by ``units`` (sorted, int64)."""
        size = self.unit_size(component, attention_unit)
        units = torch.as_tensor(sorted(units), dtype=torch.long)
        return (units[:, None] * size + torch.arange(size)[None, :]).reshape(-1)


def find_blocks(model: nn.Module, config: S2FTConfig) -> list[S2FTBlock]:
    """The transformer layers of ``model`` that hold every targeted component, in module order.

    Raises ``ValueError`` when no layer has them (then pass ``component_modules``).
    """
    layouts = [config.component_modules] if config.component_modules else list(LAYOUTS.values())
    comps = config.target_components
    model_config = getattr(model, "config", None)
    if model_config is not None and hasattr(model_config, "get_text_config"):
        model_config = model_config.get_text_config()
    blocks: list[S2FTBlock] = []
    taken: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(t + ".") for t in taken):
            continue
        for layout in layouts:
            paths = {c: layout.get(c) for c in comps}
            if any(p is None for p in paths.values()):
                continue
            subs = {c: _get_linear(module, p) for c, p in paths.items()}
            if any(s is None for s in subs.values()):
                present = {c: _get_module(module, p) for c, p in paths.items()}
                if all(m is not None for m in present.values()):  # the layer is there, its projections aren't Linear
                    odd = {paths[c]: type(base_linear(m)).__name__ for c, m in present.items() if subs[c] is None}
                    raise TypeError(
                        f"S2FT supports torch.nn.Linear and bitsandbytes Linear8bitLt/Linear4bit layers; layer "
                        f"{name!r} has {odd}"
                    )
                continue
            blocks.append(_make_block(name, module, layout, model_config))
            taken.append(name)
            break
    if not blocks:
        raise ValueError(
            f"S2FT found no transformer layer with the components {comps} (known layouts: "
            f"{ {k: v for k, v in LAYOUTS.items()} }); pass S2FTConfig.component_modules for this architecture"
        )
    if config.layers_to_transform is not None:
        keep = set(config.layers_to_transform)
        blocks = [b for b in blocks if b.index in keep]
        if not blocks:
            raise ValueError(f"S2FTConfig.layers_to_transform={config.layers_to_transform}: no such layer in the model")
    for b in blocks:
        _check_units(b, config)
    return blocks


def select_s2ft_units(
    model: nn.Module,
    config: S2FTConfig,
    calibration_batches: Optional[Iterable[dict]] = None,
    loss_fn: Optional[Callable] = None,
) -> dict[str, list[int]]:
    """Select the S²FT units of ``model`` per ``config`` and store them in ``config.selection``.

    ``get_peft_model`` calls this itself for the ``random`` and ``weight`` strategies; call it before
    ``get_peft_model`` for ``activation`` and ``gradient``, which need ``calibration_batches`` (dicts of model
    inputs; for ``gradient`` they must make the model return a ``loss``, or give ``loss_fn(model, batch)``).
    Returns ``{module name: sorted unit indices}`` (modules with no selected unit are left out).
    """
    blocks = find_blocks(model, config)
    if config.strategy in ("activation", "gradient") and calibration_batches is None:
        raise ValueError(
            f"S2FTConfig.strategy={config.strategy!r} needs calibration batches: call "
            "select_s2ft_units(model, config, calibration_batches=...) before get_peft_model"
        )
    if config.strategy in ("activation", "gradient"):
        calibration_batches = list(calibration_batches)
        if not calibration_batches:
            raise ValueError("select_s2ft_units: calibration_batches is empty")
    scores = _element_scores(model, blocks, config, calibration_batches, loss_fn)
    generator = torch.Generator().manual_seed(config.seed)
    selection: dict[str, list[int]] = {}
    for comp in config.target_components:
        per_block = []
        for b in blocks:
            n = b.n_units(comp, config.attention_unit)
            if config.strategy == "random":
                s = torch.rand(n, generator=generator, dtype=torch.float64)
            else:
                s = scores[b.modules[comp]].double().reshape(n, -1).sum(1).sqrt()
                s = s + 1e-12 * torch.rand(n, generator=generator, dtype=torch.float64)  # seeded tie-break
            per_block.append(s if config.select == "largest" or config.strategy == "random" else -s)
        kind, amount = config.amount(comp)
        if config.scope == "per_layer":
            for b, s in zip(blocks, per_block):
                k = _how_many(kind, amount, len(s), f"{comp} units of layer {b.index}", per_layer=True)
                if k:
                    selection[b.modules[comp]] = sorted(torch.topk(s, k).indices.tolist())
        else:
            flat = torch.cat(per_block)
            k = _how_many(kind, amount, len(flat), f"{comp} units in all layers", per_layer=False)
            chosen = torch.topk(flat, k).indices.tolist() if k else []
            offsets = [0]
            for s in per_block:
                offsets.append(offsets[-1] + len(s))
            for i, b in enumerate(blocks):
                units = sorted(j - offsets[i] for j in chosen if offsets[i] <= j < offsets[i + 1])
                if units:
                    selection[b.modules[comp]] = units
    if not selection:
        raise ValueError(f"S2FT selected no unit with ratio={config.ratio} count={config.count}; raise them")
    config.selection = dict(sorted(selection.items()))
    config.target_modules = sorted(selection)
    return config.selection


def s2ft_trainable_budget(model: nn.Module, config: S2FTConfig) -> dict[str, int]:
    """Trainable parameters per selected unit for each component (to size ``count`` to a parameter budget)."""
    out = {}
    for comp in config.target_components:
        b = find_blocks(model, config)[0]
        module = _get_linear(model.get_submodule(b.name), _layout_path(config, b, comp))
        other = module.in_features if COMPONENT_AXIS[comp] == "row" else module.out_features
        out[comp] = other * b.unit_size(comp, config.attention_unit)
    return out


# -- helpers -------------------------------------------------------------------------------------------


def base_linear(module: nn.Module) -> nn.Module:
    """The innermost base layer of a (possibly peft-wrapped) linear module."""
    while hasattr(module, "base_layer"):
        module = module.base_layer
    return module


def _get_module(module: nn.Module, path: str) -> Optional[nn.Module]:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def _get_linear(module: nn.Module, path: str) -> Optional[nn.Module]:
    sub = _get_module(module, path)
    if sub is None:
        return None
    base = base_linear(sub)
    return base if hasattr(base, "in_features") and hasattr(base, "out_features") else None


def _layout_path(config, block, comp):
    return block.modules[comp][len(block.name) + 1 :] if block.name else block.modules[comp]


def _make_block(name: str, module: nn.Module, layout: dict, model_config) -> S2FTBlock:
    numbers = re.findall(r"\d+", name)
    index = int(numbers[-1]) if numbers else 0
    full = {c: (f"{name}.{p}" if name else p) for c, p in layout.items() if _get_linear(module, p) is not None}
    heads = getattr(model_config, "num_attention_heads", None)
    kv = getattr(model_config, "num_key_value_heads", None) or heads
    head_dim = getattr(model_config, "head_dim", None)
    lin = {c: _get_linear(module, layout[c]) for c in full}
    if "o" in lin and heads:
        head_dim = lin["o"].in_features // heads
    elif "q" in lin and heads:
        head_dim = lin["q"].out_features // heads
    elif head_dim is None and heads and hasattr(model_config, "hidden_size"):
        head_dim = model_config.hidden_size // heads
    channels = lin["down"].in_features if "down" in lin else (lin["up"].out_features if "up" in lin else 0)
    if "v" in lin and head_dim:
        kv = lin["v"].out_features // head_dim
    return S2FTBlock(name, index, full, int(heads or 0), int(kv or 0), int(head_dim or 0), int(channels))


def _check_units(block: S2FTBlock, config: S2FTConfig) -> None:
    attn = [c for c in config.target_components if c in ATTENTION_COMPONENTS]
    if not attn:
        return
    if not block.num_heads or not block.head_dim:
        raise ValueError(
            f"S2FT cannot tell the attention heads of layer {block.name!r}: the model config has no "
            "num_attention_heads; target FFN components only or use a transformers model config"
        )
    if block.num_heads % block.num_kv_heads:
        raise ValueError(
            f"layer {block.name!r}: num_attention_heads={block.num_heads} is not a multiple of "
            f"num_key_value_heads={block.num_kv_heads}"
        )
    if config.attention_unit == "query_head" and block.num_kv_heads != block.num_heads:
        bad = [c for c in attn if c in ("k", "v")]
        if bad:
            raise ValueError(
                f"S2FTConfig.attention_unit='query_head' with target components {bad} on a grouped-query model "
                f"({block.num_heads} query heads, {block.num_kv_heads} KV heads): a K/V row belongs to a whole "
                "KV group; use attention_unit='kv_group' or train q/o only"
            )


def _how_many(kind: str, amount: float, n: int, what: str, per_layer: bool) -> int:
    if kind == "count":
        if amount > n:
            raise ValueError(f"S2FTConfig.count={amount} exceeds the {n} {what}")
        return int(amount)
    if amount <= 0:
        return 0
    return min(n, max(1, int(round(amount * n))))


def _element_scores(model, blocks, config, batches, loss_fn) -> dict[str, torch.Tensor]:
    """Per-element (row or column) squared scores of every targeted module, for the non-random strategies."""
    names = {b.modules[c]: c for b in blocks for c in config.target_components}
    if config.strategy == "random":
        return {}
    modules = {n: model.get_submodule(n) for n in names}
    if config.strategy == "weight":
        out = {}
        for n, c in names.items():
            w = _dense_weight(base_linear(modules[n])).float()
            out[n] = w.pow(2).sum(1 if COMPONENT_AXIS[c] == "row" else 0)
        return out
    if config.strategy == "activation":
        return _activation_scores(model, modules, names, batches)
    return _gradient_scores(model, modules, names, batches, loss_fn)


def _activation_scores(model, modules, names, batches):
    sums = {n: None for n in names}
    tokens = {n: 0 for n in names}

    def hook_for(n):
        col = COMPONENT_AXIS[names[n]] == "col"

        def hook(mod, args, output):
            t = (args[0] if col else output).detach()
            t = t.reshape(-1, t.shape[-1]).float().abs()
            s = t.sum(0)
            sums[n] = s if sums[n] is None else sums[n] + s
            tokens[n] += t.shape[0]

        return hook

    handles = [modules[n].register_forward_hook(hook_for(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                model(**batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    # mean |activation| per element; the unit score is the L2 norm over its elements (squared here)
    return {n: (sums[n] / max(tokens[n], 1)).pow(2) for n in names}


def _gradient_scores(model, modules, names, batches, loss_fn):
    weights = {n: base_linear(modules[n]).weight for n in names}
    for n, w in weights.items():
        if not w.dtype.is_floating_point:
            raise ValueError(f"S2FT strategy 'gradient' needs a floating-point weight; {n} is {w.dtype}")
    flags = {p: p.requires_grad for p in model.parameters()}
    saved_grads = {n: w.grad for n, w in weights.items()}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for w in weights.values():
            w.requires_grad_(True)
            w.grad = None
        for batch in batches:
            out = loss_fn(model, batch) if loss_fn is not None else model(**batch)
            loss = out if torch.is_tensor(out) else (out["loss"] if isinstance(out, dict) or hasattr(out, "keys") else out[0])
            if loss is None:
                raise ValueError("S2FT strategy 'gradient': the model returned no loss; pass labels or a loss_fn")
            loss.backward()
        out = {}
        for n, w in weights.items():
            g = w.grad.float()
            out[n] = g.pow(2).sum(1 if COMPONENT_AXIS[names[n]] == "row" else 0)
    finally:
        for n, w in weights.items():
            w.grad = saved_grads[n]
        for p, f in flags.items():
            p.requires_grad_(f)
    return out


def _dense_weight(layer: nn.Module) -> torch.Tensor:
    weight = layer.weight
    if weight.__class__.__name__ in ("Params4bit", "Int8Params"):
        from peft.utils.integrations import dequantize_bnb_weight

        return dequantize_bnb_weight(weight, state=getattr(layer, "state", None))
    return weight.detach()


# `import peft` may have run the registry while this package was half-imported: finish it now.
from ...registry import register_peft_methods  # noqa: E402

register_peft_methods()
