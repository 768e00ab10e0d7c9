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
        "LTSFTTrainer": "hf_plugins.peft_methods.lt_sft.trainer",
        "train_lt_sft": "hf_plugins.peft_methods.lt_sft.trainer",
        # BiStil, the pipeline LT-SFT belongs to
        "build_student": "hf_plugins.bistil",
        "BilingualStudent": "hf_plugins.bistil",
        "DistillationModule": "hf_plugins.bistil",
        "bilingual_dataset": "hf_plugins.bistil",
        "fit_hidden_projections": "hf_plugins.bistil",
    },
)
