"""``hf-plugins evaluate DIR``: reload a trained folder and score it on its recipe's test split."""

from __future__ import annotations

import argparse
import json
import os


def evaluate_folder(folder: str, data_dir: str | None = None) -> dict:
    from transformers import Trainer, TrainingArguments

    from . import get_recipe

    path = os.path.join(folder, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder!r} has no metrics.json: it was not written by `hf-plugins train`")
    with open(path) as fh:
        saved = json.load(fh)
    recipe = get_recipe(saved["recipe"])
    args = argparse.Namespace(**saved.get("args", {}))
    if data_dir is not None:
        args.data_dir = data_dir
    plan = recipe.build(args)
    model = plan.load(folder) if plan.load is not None else type(plan.model).from_pretrained(folder)
    model.eval()
    defaults = dict(
        output_dir=os.path.join(folder, ".evaluate"), report_to=[], per_device_eval_batch_size=64,
        remove_unused_columns=False, use_cpu=True,
    )
    defaults.update({k: v for k, v in plan.training_args.items() if k.startswith("label_names") or k.startswith("per_device_eval")})
    trainer_cls = plan.trainer_class or Trainer
    kwargs = {k: v for k, v in plan.trainer_kwargs.items() if k != "callbacks"}
    trainer = trainer_cls(model=model, args=TrainingArguments(**defaults), **kwargs)
    metrics = trainer.evaluate(plan.test_dataset, metric_key_prefix="test")
    if plan.evaluate is not None:
        metrics.update(plan.evaluate(model, plan.test_dataset))
    return metrics
