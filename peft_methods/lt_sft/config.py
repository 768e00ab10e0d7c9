"""Configuration of Lottery-Ticket Sparse Fine-Tuning (LT-SFT)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from peft.config import PeftConfig
from peft.utils import PeftType


@dataclass
class LTSFTConfig(PeftConfig):
    """LT-SFT (Ansell et al. 2022, "Composable Sparse Fine-Tuning for Cross-Lingual Transfer", Alg. 1).

    Training has two phases: a *dense* phase in which every entry of the targeted weights may change, then
    the K entries that changed most are kept (the "winning ticket"), everything is reset to the
    pretrained values, and a *sparse* phase trains only those K entries. The result is a sparse
    difference (indices + values) that is added to the base weights, removed exactly, and composed with
    other sparse differences (a language SFT plus a task SFT, Sec. 3.2).

    Args:
        target_modules: modules whose weights are fine-tuned (``nn.Linear`` and ``nn.Embedding``). Default:
            every linear and embedding layer except the output embeddings (LM head) and ``modules_to_save``.
        exclude_modules: modules never targeted.
        num_tunable_weights: K, the number of entries kept after the dense phase (over all targeted
            weights together, as in the paper). Exactly one of ``num_tunable_weights`` and ``density``.
        density: K as a fraction of the targeted entries, in (0, 1].
        modules_to_save: modules trained densely and saved whole (a classification head, say).
        phase: ``"dense"`` until :meth:`LTSFTModel.select_sparse` runs, then ``"sparse"``; saved adapters are
            sparse.
        selected_counts: per targeted module, how many of its entries were kept (set by ``select_sparse``;
            needed to rebuild the sparse parameters when an adapter is loaded).
    """

    target_modules: Optional[Union[list[str], str]] = field(default=None)
    exclude_modules: Optional[Union[list[str], str]] = field(default=None)
    num_tunable_weights: Optional[int] = field(default=None)
    density: Optional[float] = field(default=None)
    modules_to_save: Optional[list[str]] = field(default=None)
    layers_to_transform: Optional[Union[list[int], int]] = field(default=None)
    layers_pattern: Optional[Union[list[str], str]] = field(default=None)
    phase: str = field(default="dense")
    selected_counts: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PeftType.LT_SFT
        if (self.num_tunable_weights is None) == (self.density is None):
            raise ValueError(
                "LTSFTConfig: set exactly one of num_tunable_weights and density, got "
                f"num_tunable_weights={self.num_tunable_weights!r}, density={self.density!r}"
            )
        if self.num_tunable_weights is not None and self.num_tunable_weights < 1:
            raise ValueError(f"LTSFTConfig.num_tunable_weights must be >= 1, got {self.num_tunable_weights}")
        if self.density is not None and not 0 < self.density <= 1:
            raise ValueError(f"LTSFTConfig.density must be in (0, 1], got {self.density}")
        if self.phase not in ("dense", "sparse"):
            raise ValueError(f"LTSFTConfig.phase must be 'dense' or 'sparse', got {self.phase!r}")
        if self.phase == "sparse" and not self.selected_counts:
            raise ValueError("LTSFTConfig.phase='sparse' needs selected_counts (written by select_sparse)")
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, list):
            self.exclude_modules = set(self.exclude_modules)


# `import peft` above may have run the registry while this module was half-imported: finish it now.
from ...registry import register_peft_methods  # noqa: E402

register_peft_methods()
