"""The `hf-plugins` command: help on every verb, list, clear errors."""

import os
import subprocess
import sys

import pytest

from hf_plugins.cli import build_parser, main


def cli(*args):
    return subprocess.run([sys.executable, "-m", "hf_plugins.cli", *args], capture_output=True, text=True, env=os.environ)


def test_every_command_has_help():
    parser = build_parser()
    verbs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert {"list", "train", "evaluate", "publish", "demo"} <= set(verbs)
    for verb in verbs:
        try:
            code = main([verb, "--help"])
        except SystemExit as exit_info:
            code = exit_info.code
        assert code == 0, verb


def test_list_shows_models_peft_methods_and_recipes():
    import hf_plugins

    result = cli("list")
    assert result.returncode == 0, result.stderr
    for name, spec in hf_plugins.registered_plugins().items():
        assert name in result.stdout
        assert spec.distribution in result.stdout


def test_train_without_recipe_lists_recipes_and_unknown_recipe_is_a_clear_error():
    from hf_plugins.recipes import available_recipes

    result = cli("train")
    assert result.returncode == 2
    for name in available_recipes():
        assert name in result.stdout
    result = cli("train", "no-such-recipe")
    assert result.returncode == 2
    assert "unknown recipe 'no-such-recipe'" in result.stderr


def test_recipe_help_shows_common_and_own_options(capsys):
    from hf_plugins.recipes import available_recipes

    for name in available_recipes():
        assert main(["train", name, "--help"]) == 0
        shown = capsys.readouterr().out
        for option in ("--max-steps", "--seed", "--output-dir", "--data-dir", "--push-to-hub", "--tiny"):
            assert option in shown, (name, option)


def test_evaluate_refuses_a_folder_not_written_by_train(tmp_path):
    result = cli("evaluate", str(tmp_path))
    assert result.returncode == 2
    assert "metrics.json" in result.stderr
