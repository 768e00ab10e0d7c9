"""``hf-plugins``: list plugins, train recipes, evaluate and publish their folders, run the demo.

Per-paper verbs (``extract``, ``prune-vocab``, ``distill``...) come from the modules of
``hf_plugins.commands``, each of which adds its own sub-command.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys

DEMO_RECIPE = "patchtsmixer-demo"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if rest and not getattr(args, "accepts_rest", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args, rest) or 0
    except (KeyError, ValueError, FileNotFoundError, ModuleNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"hf-plugins: error: {message}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-plugins", description="Research transformers for the HF ecosystem.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("list", help="show registered models, peft methods and recipes")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "train",
        help="train a recipe with transformers.Trainer",
        description="Train RECIPE; `hf-plugins train RECIPE --help` shows the recipe's own options.",
        add_help=False,
    )
    p.add_argument("recipe", nargs="?", help="recipe name, <paper>-<task>")
    p.add_argument("-h", "--help", action="store_true")
    p.set_defaults(func=cmd_train, accepts_rest=True)

    p = sub.add_parser("evaluate", help="evaluate a folder written by `train` on its recipe's test split")
    p.add_argument("folder")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("publish", help="upload a folder written by `train` to the Hub, with its model card")
    p.add_argument("folder")
    p.add_argument("--repo-id", required=True)
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("demo", help=f"a short training run on a series that ships with the [data] extra ({DEMO_RECIPE})")
    p.add_argument("--output-dir", default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.set_defaults(func=cmd_demo)

    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"{commands.__name__}.{info.name}").register(sub)
    return parser


def cmd_list(args, rest) -> int:
    from . import registered_plugins
    from .recipes import available_recipes

    specs = registered_plugins()
    rows = [("name", "kind", "registered with", "distribution")]
    for spec in specs.values():
        if spec.kind == "model":
            where = ", ".join(["AutoConfig", *spec.auto])
        else:
            where = f"peft PeftType.{spec.name.upper()} (get_peft_model)"
        rows.append((spec.name, spec.kind, where, spec.distribution))
    _print_table(rows)
    recipes = available_recipes()
    print()
    if recipes:
        _print_table([("recipe", "paper", "description")] + [(r.name, r.paper, r.description) for r in recipes.values()])
    else:
        print("no recipes are registered yet")
    return 0


def cmd_train(args, rest) -> int:
    from .recipes import available_recipes, get_recipe, recipe_parser
    from .recipes._runner import run

    if not args.recipe:
        recipes = available_recipes()
        print("usage: hf-plugins train RECIPE [options]   (hf-plugins train RECIPE --help for its options)")
        print("recipes: " + (", ".join(recipes) if recipes else "none registered yet"))
        return 0 if args.help else 2
    recipe = get_recipe(args.recipe)
    parser = recipe_parser(recipe)
    if args.help:
        parser.print_help()
        return 0
    output = run(recipe, parser.parse_args(rest))
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only the main process wrote the folder
        print(f"wrote {output}")
    return 0


def cmd_evaluate(args, rest) -> int:
    from .recipes._evaluate import evaluate_folder

    print(json.dumps(evaluate_folder(args.folder, data_dir=args.data_dir), indent=2))
    return 0


def cmd_publish(args, rest) -> int:
    from .hub import PublishError, publish

    try:
        url = publish(args.folder, args.repo_id, private=args.private, token=args.token)
    except PublishError as exc:
        print(f"hf-plugins: error: {exc}", file=sys.stderr)
        return 2
    print(f"published {args.folder} to {url}")
    return 0


def cmd_demo(args, rest) -> int:
    from .recipes import available_recipes
    from .recipes._runner import run

    recipes = available_recipes()
    if DEMO_RECIPE not in recipes:
        print(f"the demo recipe {DEMO_RECIPE!r} is not available yet; recipes: {', '.join(recipes) or 'none'}")
        return 2
    recipe = recipes[DEMO_RECIPE]
    argv = ["--output-dir", args.output_dir or "outputs/demo"]
    if args.max_steps:
        argv += ["--max-steps", str(args.max_steps)]
    from .recipes import recipe_parser

    output = run(recipe, recipe_parser(recipe).parse_args(argv))
    with open(f"{output}/metrics.json") as fh:
        test = json.load(fh).get("test", {})
    print(f"demo done: {output}")
    print("test metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, float)))
    return 0


def _print_table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for j, row in enumerate(rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    sys.exit(main())
