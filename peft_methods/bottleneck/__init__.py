"""Bottleneck adapters (Houlsby / Pfeiffer, sequential / parallel, Conformer) as a peft method.

Paper: Cappellazzo et al., "Parameter-Efficient Transfer Learning of Audio Spectrogram Transformers"
(arXiv 2312.03694, MLSP 2024), building on Houlsby et al. 2019, Pfeiffer et al. 2021 and He et al. 2022.

Only the plugin description lives here, so that ``import hf_plugins`` imports neither peft nor torch; the
registry adds ``BOTTLENECK`` to ``peft.PeftType`` when peft is imported.
"""

from ...registry import PluginSpec

PLUGIN = PluginSpec(
    name="bottleneck",
    kind="peft",
    config="hf_plugins.peft_methods.bottleneck.config:BottleneckConfig",
    peft_model="hf_plugins.peft_methods.bottleneck.model:BottleneckModel",
    prefix="bottleneck_",
    exports={
        "BottleneckConfig": "hf_plugins.peft_methods.bottleneck.config",
        "BottleneckModel": "hf_plugins.peft_methods.bottleneck.model",
        "BottleneckLayer": "hf_plugins.peft_methods.bottleneck.layer",
        "BottleneckAdapter": "hf_plugins.peft_methods.bottleneck.layer",
        "ConformerAdapter": "hf_plugins.peft_methods.bottleneck.layer",
        "interpolate_ast_position_embeddings": "hf_plugins.peft_methods.bottleneck.model",
        "resolve_bottleneck_targets": "hf_plugins.peft_methods.bottleneck.model",
    },
)
