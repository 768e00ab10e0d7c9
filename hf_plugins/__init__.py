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
