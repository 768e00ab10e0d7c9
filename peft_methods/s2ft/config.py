"""Configuration of the S²FT peft method (Yang et al., NeurIPS 2024, arXiv 2412.06289)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from peft.config import PeftConfig
from peft.utils import PeftType

#: The linear layers S²FT can train, with the side of the weight that a selected unit owns.
#: ``row`` components train output rows ``W[S, :]`` of the selected units, ``col`` components train input
#: columns ``W[:, S]`` (paper §3.2: a head couples rows of W_q/W_k/W_v with columns of W_o; an FFN channel
#: couples rows of W_up/W_gate with a column of W_down).
COMPONENT_AXIS = {"q": "row", "k": "row", "v": "row", "o": "col", "gate": "row", "up": "row", "down": "col"}
ATTENTION_COMPONENTS = ("q", "k", "v", "o")
FFN_COMPONENTS = ("gate", "up", "down")

#: Default fraction of units per component: the released LLaMA-2 recipe trains 5.2 % of the heads in W_o and
#: 2 % of the FFN channels in W_down (``o_ratio 0.052, d_ratio 0.02``); the other components use the same
#: fractions as their block.
DEFAULT_RATIOS = {"q": 0.052, "k": 0.052, "v": 0.052, "o": 0.052, "gate": 0.02, "up": 0.02, "down": 0.02}

STRATEGIES = ("random", "weight", "activation", "gradient")
SCOPES = ("global", "per_layer")
SELECT_ENDS = ("largest", "smallest")
ATTENTION_UNITS = ("kv_group", "query_head")


@dataclass
class S2FTConfig(PeftConfig):
    """Configuration of :class:`~hf_plugins.peft_methods.s2ft.model.S2FTModel` (peft type ``S2FT``).

    S²FT ("select sparsely, compute densely") trains a few whole attention heads and FFN channels of a
    transformer. Per component a *unit* is a head (or a KV group in grouped-query attention) or an FFN channel;
    the trained tensor of a layer is the slice of the weight that the selected units own (a delta of shape
    ``(|S|·d, in)`` for row components, ``(out, |S|·d)`` for column components) and the selected indices are
    kept with the adapter.

    Args:
        target_components (`list[str]`, defaults to ``["o", "down"]``):
            Which weights to train, any of ``q, k, v, o`` (attention heads: rows of q/k/v, columns of o) and
            ``gate, up, down`` (FFN channels: rows of gate/up, columns of down). The default trains the output
            projection of selected heads and the down projection of selected channels, as the paper's released
            LLaMA-2 recipe does (§4, ``o_ratio``/``d_ratio``); column components also give the activation savings
            of partial back-propagation (§3.3), because only the selected input columns are kept for backward.
            Which slices each component trains follows the paper's coupled structures: ``v``/``q``/``k`` rows and
            ``o`` columns of the selected heads; ``up`` rows and ``down`` columns of the selected channels. The
            reference code trains V/O/Up/Down and only permutes Q, K and Gate; ``q``, ``k`` and ``gate`` are
            offered here for the paper's component ablation.
        ratio (`float` or `dict[str, float]`, *optional*):
            Fraction of units to select, one for all components or one per component. Defaults to
            :data:`DEFAULT_RATIOS` when neither ``ratio`` nor ``count`` is given.
        count (`int` or `dict[str, int]`, *optional*):
            Number of units to select instead of a ratio: per layer with ``scope="per_layer"``, in total over all
            layers with ``scope="global"``.
        scope (`str`, defaults to ``"global"``):
            ``"global"`` ranks the units of all layers together (the paper's default: random over all layers,
            so layers get unequal counts), ``"per_layer"`` selects the same number in every layer.
        strategy (`str`, defaults to ``"random"``):
            How units are scored (paper §4.4, S²FT-R/W/A/G): ``"random"``, ``"weight"`` (norm of the unit's
            weight slice), ``"activation"`` (mean magnitude of the unit's activations on calibration batches) or
            ``"gradient"`` (norm of the gradient of the unit's weight slice on calibration batches). The last two
            need data: call :func:`~hf_plugins.peft_methods.s2ft.selection.select_s2ft_units` before
            ``get_peft_model``.
        select (`str`, defaults to ``"largest"``): keep the units with the ``"largest"`` or ``"smallest"`` score.
        seed (`int`, defaults to 0): seed of the random strategy (and of tie-breaking).
        attention_unit (`str`, defaults to ``"kv_group"``):
            The attention unit. ``"kv_group"``: one KV head with all the query heads that read it (the only
            consistent unit for V/K rows under grouped-query attention; equal to a head for multi-head attention).
            ``"query_head"``: single query heads, allowed for q/o only when the model uses GQA.
        component_modules (`dict[str, str]`, *optional*):
            Path of each component's linear layer relative to a transformer layer (``{"o": "self_attn.o_proj",
            ...}``). Inferred for Llama-style (Llama, Mistral, Qwen2/3, Gemma, MatFormer) and BERT-style models.
        layers_to_transform (`list[int]`, *optional*): only select units in these layer indices.
        selection (`dict[str, list[int]]`, *optional*):
            The selected units per module name (filled in by the selection; give it to fix the selection by
            hand). Unit indices are heads/KV groups for attention components and channels for FFN components.
        init_weights (`bool`, defaults to ``True``): zero deltas (outputs unchanged at init); ``False`` draws
            small random deltas (tests only).
        modules_to_save (`list[str]`, *optional*): extra modules trained and saved in full (e.g. a classifier).
    """

    target_components: list[str] = field(default_factory=lambda: ["o", "down"])
    ratio: Optional[Union[float, dict[str, float]]] = None
    count: Optional[Union[int, dict[str, int]]] = None
    scope: str = "global"
    strategy: str = "random"
    select: str = "largest"
    seed: int = 0
    attention_unit: str = "kv_group"
    component_modules: Optional[dict[str, str]] = None
    layers_to_transform: Optional[Union[list[int], int]] = None
    layers_pattern: Optional[Union[list[str], str]] = None
    selection: Optional[dict[str, list[int]]] = None
    target_modules: Optional[Union[list[str], str]] = None
    exclude_modules: Optional[Union[list[str], str]] = None
    init_weights: bool = True
    modules_to_save: Optional[list[str]] = None

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType.S2FT
        if isinstance(self.target_components, str):
            self.target_components = [self.target_components]
        self.target_components = list(self.target_components)
        bad = [c for c in self.target_components if c not in COMPONENT_AXIS]
        if not self.target_components or bad:
            raise ValueError(
                f"S2FTConfig.target_components={self.target_components!r}: expected a non-empty list of "
                f"{list(COMPONENT_AXIS)}"
            )
        if len(set(self.target_components)) != len(self.target_components):
            raise ValueError(f"S2FTConfig.target_components={self.target_components!r}: duplicates are not allowed")
        for name, value, allowed in (
            ("scope", self.scope, SCOPES),
            ("strategy", self.strategy, STRATEGIES),
            ("select", self.select, SELECT_ENDS),
            ("attention_unit", self.attention_unit, ATTENTION_UNITS),
        ):
            if value not in allowed:
                raise ValueError(f"S2FTConfig.{name}={value!r}: expected one of {list(allowed)}")
        if self.ratio is not None and self.count is not None:
            raise ValueError("S2FTConfig: give either `ratio` or `count`, not both")
        self._check_per_component("ratio", self.ratio, lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "(0, 1]")
        self._check_per_component("count", self.count, lambda v: isinstance(v, int) and v >= 0, "an int >= 0")
        if isinstance(self.layers_to_transform, int):
            self.layers_to_transform = [self.layers_to_transform]
        if self.component_modules is not None:
            bad = [c for c in self.component_modules if c not in COMPONENT_AXIS]
            if bad:
                raise ValueError(
                    f"S2FTConfig.component_modules has unknown components {bad}; expected keys of {list(COMPONENT_AXIS)}"
                )
        if self.selection is not None:
            if not isinstance(self.selection, dict):
                raise ValueError(f"S2FTConfig.selection must be a dict module name -> unit indices, got {self.selection!r}")
            self.selection = {str(k): sorted(int(i) for i in v) for k, v in self.selection.items()}
            for key, units in self.selection.items():
                if any(u < 0 for u in units) or len(set(units)) != len(units):
                    raise ValueError(f"S2FTConfig.selection[{key!r}]={units}: expected distinct non-negative indices")
        if isinstance(self.target_modules, list):
            self.target_modules = sorted(self.target_modules)

    def _check_per_component(self, name, value, ok, allowed):
        if value is None:
            return
        if isinstance(value, dict):
            missing = [c for c in self.target_components if c not in value]
            if missing:
                raise ValueError(
                    f"S2FTConfig.{name}={value!r} has no entry for the target components {missing}; give one value "
                    f"per component of target_components={self.target_components}"
                )
        items = value.items() if isinstance(value, dict) else [("*", value)]
        for comp, v in items:
            if comp != "*" and comp not in COMPONENT_AXIS:
                raise ValueError(f"S2FTConfig.{name} has unknown component {comp!r}; expected keys of {list(COMPONENT_AXIS)}")
            if isinstance(v, bool) or not ok(v):
                raise ValueError(f"S2FTConfig.{name}={value!r}: each value must be {allowed}, got {v!r} for {comp!r}")

    def amount(self, component: str) -> tuple[str, float]:
        """``("count", n)`` or ``("ratio", r)`` for one component (per the fields and the defaults)."""
        if self.count is not None:
            return ("count", self.count[component] if isinstance(self.count, dict) else self.count)
        if self.ratio is not None:
            return ("ratio", float(self.ratio[component] if isinstance(self.ratio, dict) else self.ratio))
        return ("ratio", DEFAULT_RATIOS[component])


# `import peft` may have run the registry while this package was half-imported: finish it now.
from ...registry import register_peft_methods  # noqa: E402

register_peft_methods()
