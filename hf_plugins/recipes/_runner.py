"""Runs a recipe through transformers.Trainer and writes its Hub-ready folder (main process only)."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
from pathlib import Path

from .._io import atomic_directory

logger = logging.getLogger(__name__)


def run(recipe, args) -> str:
    import torch
    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments, set_seed

    set_seed(args.seed)
    output_dir = Path(args.output_dir or os.path.join("outputs", recipe.name)).resolve()
    plan = recipe.build(args)
    max_steps = args.max_steps or recipe.default_max_steps
    on_cpu = not torch.cuda.is_available()
    defaults = dict(
        output_dir=str(output_dir) + ".trainer",
        max_steps=max_steps,
        seed=args.seed,
        data_seed=args.seed,
        report_to=[],
        save_strategy="no",
        logging_steps=max(1, min(50, max_steps // 20)),
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        use_cpu=on_cpu,
        ddp_backend="gloo" if on_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )
    if plan.eval_dataset is not None:
        defaults.update(eval_strategy="steps", eval_steps=max(1, max_steps // 4))
    defaults.update(plan.training_args)
    training_args = TrainingArguments(**defaults)
    trainer_cls = plan.trainer_class or Trainer
    trainer = trainer_cls(
        model=plan.model,
        args=training_args,
        train_dataset=plan.train_dataset,
        eval_dataset=plan.eval_dataset,
        **plan.trainer_kwargs,
    )
    train_result = trainer.train()
    # training is over: early stopping would only warn that the test split has no eval_loss
    trainer.remove_callback(EarlyStoppingCallback)
    metrics = {
        "recipe": recipe.name,
        "paper": recipe.paper,
        "description": recipe.description,
        "seed": args.seed,
        "max_steps": max_steps,
        "world_size": training_args.world_size,
        "args": {k: v for k, v in vars(args).items() if k != "push_to_hub"},
        "train": train_result.metrics,
    }
    if plan.eval_dataset is not None:
        metrics["eval"] = trainer.evaluate(plan.eval_dataset, metric_key_prefix="eval")
    if plan.test_dataset is not None:
        metrics["test"] = trainer.evaluate(plan.test_dataset, metric_key_prefix="test")
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.eval()
        if plan.evaluate is not None:
            metrics.setdefault("test", {}).update(plan.evaluate(model, plan.test_dataset))
        metrics["log_history"] = trainer.state.log_history
        metrics["card"] = plan.card
        metrics["versions"] = _versions()
        _write_folder(output_dir, model, trainer, plan, metrics)
        logger.info("wrote %s", output_dir)
    trainer.accelerator.wait_for_everyone()
    shutil.rmtree(str(output_dir) + ".trainer", ignore_errors=True)
    if getattr(args, "push_to_hub", None) and trainer.is_world_process_zero():
        from ..hub import publish

        publish(str(output_dir), args.push_to_hub)
    return str(output_dir)


def _write_folder(output_dir: Path, model, trainer, plan, metrics) -> None:
    """Write everything into a temporary sibling, then swap it in: never a half-written folder."""
    with atomic_directory(output_dir) as tmp:
        if plan.save is not None:
            plan.save(model, str(tmp))
        else:
            model.save_pretrained(str(tmp), safe_serialization=True)
        processing = plan.trainer_kwargs.get("processing_class")
        if processing is not None and hasattr(processing, "save_pretrained"):
            processing.save_pretrained(str(tmp))
        plots = [_plot_loss(metrics["log_history"], tmp / "training_loss.png")]
        if plan.plots is not None:
            plots += [str(p) for p in plan.plots(model, plan.test_dataset, str(tmp))]
        metrics["plots"] = [os.path.basename(p) for p in plots if p]
        with open(tmp / "metrics.json", "w") as fh:
            json.dump(metrics, fh, indent=2, default=_jsonable)
        from ..hub import write_card

        write_card(str(tmp))


def _plot_loss(log_history, path: Path) -> str | None:
    steps = [e["step"] for e in log_history if "loss" in e]
    losses = [e["loss"] for e in log_history if "loss" in e]
    if not steps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, label="train")
    evals = [(e["step"], e["eval_loss"]) for e in log_history if "eval_loss" in e]
    if evals:
        ax.plot(*zip(*evals), marker="o", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("hf-plugins", "torch", "transformers", "peft", "accelerate"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def _jsonable(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:
        pass
    return str(obj)
