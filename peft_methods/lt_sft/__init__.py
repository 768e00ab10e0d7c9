"""Lottery-Ticket Sparse Fine-Tuning (Ansell et al., ACL 2022; used by BiStil, Ansell et al. 2023).

Only the plugin description lives here, so that ``import hf_plugins`` does not import peft or torch; the
registry adds ``LT_SFT`` to ``peft.PeftType`` when peft is imported.
"""

from ...registry import PluginSpec

PLUGIN = PluginSpec(
    name="lt_sft",
    kind="peft",
    config="hf_plugins.peft_methods.lt_sft.config:LTSFTConfig",
    peft_model="hf_plugins.peft_methods.lt_sft.model:LTSFTModel",
    prefix="lt_sft_",
    exports={
        "LTSFTConfig": "hf_plugins.peft_methods.lt_sft.config",
        "LTSFTModel": "hf_plugins.peft_methods.lt_sft.model",
        "train_lt_sft": "hf_plugins.peft_methods.lt_sft.model",
    },
)
