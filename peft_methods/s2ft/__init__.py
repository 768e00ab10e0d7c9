"""S²FT (Yang et al., "S²FT: Efficient, Scalable and Generalizable LLM Fine-tuning by Structured Sparsity",
NeurIPS 2024, arXiv 2412.06289) as a peft method: select attention heads and FFN channels sparsely,
compute densely on the selected slices, back-propagate only through what the selected slices need.

This ``__init__`` only declares the plugin (no peft/torch import): ``hf_plugins.registry`` adds ``S2FT`` to
``peft.PeftType`` and registers :class:`~hf_plugins.peft_methods.s2ft.config.S2FTConfig` and
:class:`~hf_plugins.peft_methods.s2ft.model.S2FTModel` right after ``import peft``.
"""

from ...registry import PluginSpec

PLUGIN = PluginSpec(
    name="s2ft",
    kind="peft",
    config="hf_plugins.peft_methods.s2ft.config:S2FTConfig",
    peft_model="hf_plugins.peft_methods.s2ft.model:S2FTModel",
    prefix="s2ft_",
    exports={
        "S2FTConfig": "hf_plugins.peft_methods.s2ft.config",
        "S2FTModel": "hf_plugins.peft_methods.s2ft.model",
        "S2FTLayer": "hf_plugins.peft_methods.s2ft.layer",
        "select_s2ft_units": "hf_plugins.peft_methods.s2ft.selection",
        "s2ft_trainable_budget": "hf_plugins.peft_methods.s2ft.selection",
    },
)
