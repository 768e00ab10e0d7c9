"""Recipe ``informer-etth1``: InformerLSTF on ETTh1 with the paper's training protocol.

Protocol of the Informer reference code (``exp/exp_informer.py``): standard ETT split (12/4/4 months),
global z-score with train statistics, MSE loss, Adam at 1e-4 halved after every epoch (the paper: "decaying
two times smaller every epoch"; ``--lr-schedule reference`` gives what the reference code's ``lradj type1``
does in effect: epochs 1 and 2 at 1e-4, halved from epoch 3 on), batch 32, at most 6 epochs with early
stopping on the validation loss (patience 3) and the best checkpoint restored; test MSE / MAE on the
normalised test split.

Per-horizon input lengths default to the reference's ``scripts/ETTh1.sh`` (the paper's tuned setting):
(context, label, factor) = (48, 48, 3) for 24, (96, 48, 5) for 48, (168, 168, 5) for 168 and 336,
(336, 336, 5) for 720; other horizons use (96, 48, 5). ``--encoder-stack 3,2,1`` trains InformerStack (the
reference's ``--model informerstack``, default ``s_layers``) instead of the single 2-layer encoder.
"""

from __future__ import annotations

import functools
import os

from . import Recipe, RecipePlan, register_recipe

# 0-based epoch -> learning-rate multiplier. exp_informer.py calls adjust_learning_rate(optim, epoch + 1) after
# every epoch and type1 sets lr * 0.5 ** (epoch_arg - 1): after the first epoch that is the base rate again.
LR_SCHEDULES = {
    "paper": lambda epoch: 0.5**epoch,
    "reference": lambda epoch: 0.5 ** max(0, epoch - 1),
}

# horizon -> (context_length, label_length, sampling_factor), scripts/ETTh1.sh of Informer2020
ETTH1_SETTINGS = {24: (48, 48, 3), 48: (96, 48, 5), 168: (168, 168, 5), 336: (168, 168, 5), 720: (336, 336, 5)}
DEFAULT_SETTING = (96, 48, 5)
TINY_WINDOWS = {"train": 512, "validation": 96, "test": 96}


def add_arguments(parser) -> None:
    parser.add_argument("--horizon", type=int, default=24, help="prediction length (paper: 24, 48, 168, 336, 720)")
    parser.add_argument("--context-length", type=int, default=None, help="encoder input length (default: per horizon, as the paper)")
    parser.add_argument("--label-length", type=int, default=None, help="decoder start-token length (default: per horizon)")
    parser.add_argument("--features", choices=("M", "S", "MS"), default="M",
                        help="M: 7 channels in and out; S: OT in and out; MS: 7 channels in, OT out")
    parser.add_argument("--attention", choices=("prob", "full"), default="prob", help="ProbSparse or full self-attention")
    parser.add_argument("--factor", type=int, default=None, help="ProbSparse sampling factor c (default: per horizon)")
    parser.add_argument("--probsparse-sampling", choices=("shared", "per_query"), default="shared",
                        help="ProbSparse key sample: one for all queries (fast) or one per query (as the reference "
                             "code draws it)")
    parser.add_argument("--encoder-stack", type=_layer_counts, default=None, metavar="N,N,...",
                        help="InformerStack: layer counts of the stacked encoders, e.g. 3,2,1 (the reference's "
                             "s_layers); default: the single 2-layer encoder")
    parser.add_argument("--epochs", type=int, default=6, help="maximum epochs (early stopping may end sooner)")
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience in epochs")
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="Adam learning rate, halved every epoch")
    parser.add_argument("--lr-schedule", choices=tuple(LR_SCHEDULES), default="paper",
                        help="paper: halve after every epoch (the paper's text); reference: the reference code's "
                             "effective lradj type1, epochs 1 and 2 at the base rate, then halved every epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--loss", choices=("mse", "nll"), default="mse", help="point head + MSE, or Student-t head + NLL")


def build(args) -> RecipePlan:
    import numpy as np
    from transformers import EarlyStoppingCallback

    from hf_plugins.configuration.informer_lstf import InformerLSTFConfig
    from hf_plugins.data import load_ett
    from hf_plugins.modeling.informer_lstf import InformerLSTFForPrediction

    horizon = getattr(args, "horizon", 24)
    tiny = bool(getattr(args, "tiny", False))
    default_context, default_label, default_factor = (48, 24, 3) if tiny else ETTH1_SETTINGS.get(horizon, DEFAULT_SETTING)
    context = getattr(args, "context_length", None) or default_context
    label = getattr(args, "label_length", None)
    label = min(default_label, context) if label is None else label
    factor = getattr(args, "factor", None) or default_factor
    features = getattr(args, "features", "M")

    splits = load_ett("ETTh1", context_length=context, prediction_length=horizon, features=features,
                      data_dir=getattr(args, "data_dir", None))
    sizes = dict(d_model=16, num_attention_heads=2, ffn_dim=32) if tiny else {}
    config = InformerLSTFConfig(
        input_size=len(splits.channels),
        output_size=len(splits.target_channels),
        context_length=context,
        label_length=label,
        prediction_length=horizon,
        freq=splits.freq,
        attention_type=getattr(args, "attention", "prob"),
        sampling_factor=factor,
        probsparse_sampling=getattr(args, "probsparse_sampling", "shared"),
        loss=getattr(args, "loss", "mse"),
        encoder_stack=getattr(args, "encoder_stack", None),
        **sizes,
    )
    model = InformerLSTFForPrediction(config)

    train, validation, test = splits.train, splits.validation, splits.test
    if tiny:
        train, validation, test = (_spread(ds, TINY_WINDOWS[name]) for name, ds in
                                   (("train", train), ("validation", validation), ("test", test)))

    epochs = getattr(args, "epochs", 6)
    training_args = dict(
        learning_rate=getattr(args, "learning_rate", 1e-4),
        optim="adamw_torch",
        weight_decay=0.0,  # AdamW without decay = Adam, the paper's optimiser
        adam_beta1=0.9,
        adam_beta2=0.999,
        max_grad_norm=0.0,  # the reference code does not clip
        warmup_steps=0,
        per_device_train_batch_size=getattr(args, "batch_size", 32),
        per_device_eval_batch_size=64,
        label_names=["future_values"],
        eval_strategy="epoch",
        save_strategy="epoch",
        save_only_model=True,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=50 if not tiny else 5,
    )
    if getattr(args, "max_steps", None) is None:
        training_args.update(max_steps=20 if tiny else -1, num_train_epochs=1 if tiny else epochs)

    def compute_metrics(eval_pred):
        predictions = eval_pred.predictions
        if isinstance(predictions, (tuple, list)):
            predictions = predictions[0]
        labels = eval_pred.label_ids
        error = np.asarray(predictions, dtype=np.float64) - np.asarray(labels, dtype=np.float64)
        return {"mse": float(np.mean(error**2)), "mae": float(np.mean(np.abs(error)))}

    lr_schedule = getattr(args, "lr_schedule", "paper")
    setting = f"context {context}, label {label}, horizon {horizon}, factor {factor}, features {features}"
    if lr_schedule != "paper":
        setting += f", lr schedule {lr_schedule}"
    if config.probsparse_sampling != "shared":
        setting += f", {config.probsparse_sampling.replace('_', '-')} key samples"
    if config.encoder_stack is not None:
        setting += f", encoder stack {','.join(map(str, config.encoder_stack))}"
    return RecipePlan(
        model=model,
        train_dataset=train,
        eval_dataset=validation,
        test_dataset=test,
        training_args=training_args,
        trainer_class=_halving_trainer_class(lr_schedule),
        trainer_kwargs={
            "compute_metrics": compute_metrics,
            "callbacks": [EarlyStoppingCallback(early_stopping_patience=getattr(args, "patience", 3))],
        },
        plots=lambda m, ds, out: _plot_forecast(m, ds, out, splits.target_channels),
        card={
            "pipeline_tag": "time-series-forecasting",
            "tags": ["informer", "time-series", "forecasting", "etth1", "long-sequence-forecasting"],
            "datasets": ["ETTh1"],
            "license": "apache-2.0",
            "dataset_description": (
                "ETTh1 (Electricity Transformer Temperature, hourly, 2016-07 to 2018-06; Zhou et al. 2021): "
                "7 channels (HUFL, HULL, MUFL, MULL, LUFL, LULL and the oil temperature OT). Standard split "
                "12/4/4 months, z-scored with training statistics; metrics are on this normalised scale."
            ),
            "notes": f"{'TINY smoke-test model, not a trained forecaster. ' if tiny else ''}Setting: {setting}; "
                     f"attention {config.attention_type}, loss {config.loss}.",
            "setting": setting,
        },
    )


def _layer_counts(text):
    """``"3,2,1"`` -> ``[3, 2, 1]`` for ``--encoder-stack``, with an error that names the bad value."""
    import argparse

    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError(f"expected comma-separated layer counts >= 1 such as 3,2,1, got {text!r}")
    return counts


def _spread(dataset, count):
    """``count`` windows spread evenly over ``dataset`` (tiny runs)."""
    import torch

    count = min(count, len(dataset))
    indices = torch.linspace(0, len(dataset) - 1, count).long().tolist()
    return torch.utils.data.Subset(dataset, indices)


def _plot_forecast(model, dataset, output_dir, target_channels):
    """Forecast vs. truth on one test window, for the target (last) channel."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    item = dataset[len(dataset) // 2]
    batch = {k: v.unsqueeze(0).to(model.device) for k, v in item.items()}
    with torch.no_grad():
        prediction = model(**{k: v for k, v in batch.items() if k != "future_values"}).prediction_outputs[0, :, -1]
    past = item["past_values"][:, -1].numpy()
    future = item["future_values"][:, -1].numpy()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    t_past = range(-len(past), 0)
    t_future = range(0, len(future))
    ax.plot(t_past, past, color="0.4", label="history")
    ax.plot(t_future, future, color="tab:blue", label="truth")
    ax.plot(t_future, prediction.float().cpu().numpy(), color="tab:red", label="forecast")
    ax.set_xlabel("hours from forecast start")
    ax.set_ylabel(f"{target_channels[-1]} (normalised)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(output_dir, "forecast.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


@functools.lru_cache(maxsize=None)
def _halving_trainer_class(schedule: str = "paper"):
    from torch.optim.lr_scheduler import LambdaLR
    from transformers import Trainer

    class _HalvingLRTrainer(Trainer):
        """Trainer whose learning rate follows ``LR_SCHEDULES[schedule]`` epoch by epoch."""

        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                steps_per_epoch = max(1, len(self.get_train_dataloader()) // self.args.gradient_accumulation_steps)
                self.lr_scheduler = LambdaLR(
                    optimizer if optimizer is not None else self.optimizer,
                    lambda step: LR_SCHEDULES[schedule](step // steps_per_epoch),
                )
            return self.lr_scheduler

    return _HalvingLRTrainer


register_recipe(
    Recipe(
        name="informer-etth1",
        paper="informer_lstf",
        description="InformerLSTF (Zhou et al. AAAI 2021) on ETTh1: MSE, Adam 1e-4 halved per epoch, early stopping",
        build=build,
        add_arguments=add_arguments,
        default_max_steps=200,
    )
)
