"""Recipes: named ``<paper>-<task>`` training runs through ``transformers.Trainer``.

A recipe module in this package calls :func:`register_recipe` at import; :func:`available_recipes`
imports them all. ``build(args)`` returns a :class:`RecipePlan` (model, datasets, Trainer settings);
:func:`run_recipe` trains it, evaluates on the test split and writes a Hub-ready folder::

    output_dir/
        model.safetensors, config.json      the trained model (plus tokenizer files if any)
        metrics.json                        test metrics, training loss, recipe, seed, steps, versions
        README.md                           the paper's model card, filled from metrics.json
        *.png                               plots

The same command runs under ``torchrun --nproc_per_node N`` or ``accelerate launch``: Trainer does the
distribution, and only the main process writes.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

_RECIPES: dict[str, "Recipe"] = {}
_discovered = False


@dataclass
class RecipePlan:
    """What a recipe's ``build`` returns.

    Args:
        model: the model to train (a ``PreTrainedModel`` or ``PeftModel``).
        train_dataset / eval_dataset / test_dataset: torch or ``datasets`` datasets.
        training_args: overrides of the runner's ``TrainingArguments`` defaults.
        trainer_class: ``Trainer`` by default (``Seq2SeqTrainer``, a subclass, ...).
        trainer_kwargs: extra keyword arguments for the trainer (``data_collator``, ``compute_metrics``,
            ``callbacks``, ``processing_class``...).
        evaluate: ``evaluate(model, test_dataset) -> dict`` of extra test metrics, run on the main
            process after training (for metrics that need more than ``Trainer.evaluate``).
        plots: ``plots(model, test_dataset, output_dir) -> list of PNG paths``.
        save: ``save(model, output_dir)``, when saving needs more than ``save_pretrained``.
        load: ``load(output_dir) -> model``, the inverse of ``save`` (default: the model class's
            ``from_pretrained``); ``hf-plugins evaluate`` uses it.
        card: extra fields for the model card (``dataset``, ``task``, free text ``notes``...).
    """

    model: Any
    train_dataset: Any
    eval_dataset: Any = None
    test_dataset: Any = None
    training_args: dict = field(default_factory=dict)
    trainer_class: Any = None
    trainer_kwargs: dict = field(default_factory=dict)
    evaluate: Callable | None = None
    plots: Callable | None = None
    save: Callable | None = None
    load: Callable | None = None
    card: dict = field(default_factory=dict)


@dataclass
class Recipe:
    """A named training run. ``paper`` names the card template in ``hub_cards/``."""

    name: str
    paper: str
    description: str
    build: Callable[[argparse.Namespace], RecipePlan]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    default_max_steps: int = 200


def register_recipe(recipe: Recipe) -> Recipe:
    """Add a recipe to the registry (names are ``<paper>-<task>``, unique)."""
    if "-" not in recipe.name or recipe.name != recipe.name.lower():
        raise ValueError(f"recipe name {recipe.name!r} must be lower-case '<paper>-<task>'")
    known = _RECIPES.get(recipe.name)
    if known is not None and known.build is not recipe.build:
        raise ValueError(f"recipe {recipe.name!r} is already registered")
    _RECIPES[recipe.name] = recipe
    return recipe


def available_recipes() -> dict[str, Recipe]:
    """Every registered recipe, importing the recipe modules of this package first."""
    global _discovered
    if not _discovered:
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _discovered = True
    return dict(sorted(_RECIPES.items()))


def get_recipe(name: str) -> Recipe:
    recipes = available_recipes()
    if name not in recipes:
        listing = ", ".join(recipes) or "none yet"
        raise KeyError(f"unknown recipe {name!r}; available recipes: {listing}")
    return recipes[name]


def recipe_parser(recipe: Recipe, parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``hf-plugins train RECIPE`` (common options plus the recipe's own)."""
    parser = parser or argparse.ArgumentParser(prog=f"hf-plugins train {recipe.name}", description=recipe.description)
    add_common_arguments(parser)
    if recipe.add_arguments is not None:
        group = parser.add_argument_group(f"{recipe.name} options")
        recipe.add_arguments(group)
    return parser


def add_common_arguments(parser) -> None:
    parser.add_argument("--data-dir", default=None, help="data directory (default: $HFP_DATA_DIR or the cache)")
    parser.add_argument("--output-dir", default=None, help="where the Hub-ready folder is written")
    parser.add_argument("--max-steps", type=int, default=None, help="training steps (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tiny", action="store_true", help="a tiny model and few samples, for smoke tests")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="publish the folder when done")


def run_recipe(name: str, argv: list[str] | None = None, **overrides) -> str:
    """Train recipe ``name`` with command-line style ``argv`` (or keyword overrides); return the folder."""
    from ._runner import run

    recipe = get_recipe(name)
    args = recipe_parser(recipe).parse_args(argv or [])
    for key, value in overrides.items():
        setattr(args, key.replace("-", "_"), value)
    return run(recipe, args)


__all__ = [
    "Recipe",
    "RecipePlan",
    "add_common_arguments",
    "available_recipes",
    "get_recipe",
    "recipe_parser",
    "register_recipe",
    "run_recipe",
]
