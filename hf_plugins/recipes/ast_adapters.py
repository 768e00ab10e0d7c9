"""Recipe ``ast-adapter-fsdd``: parameter-efficient transfer of an Audio Spectrogram Transformer to FSDD.

Cappellazzo et al. 2023 adapt an AudioSet-pretrained AST to downstream sound / speech sets. No AST weights
can be downloaded here, so the recipe first pretrains a small AST on a labelled spoken-word set synthesised
with espeak-ng (50 words, no digits, many voices, speeds and pitches; cached under
``~/.cache/hf_plugins/ast_adapters``), then adapts it to the real recordings of the Free Spoken Digit
Dataset, split by speaker (test speakers unseen), with one of the methods of the paper's comparison:

======================  ==================================================================================
``--method houlsby``    bottleneck adapters after MHSA and FFN (``--mode sequential|parallel``)
``--method pfeiffer``   one bottleneck adapter after the FFN (``--mode sequential|parallel``)
``--method parallel``   Pfeiffer placement, parallel (the paper's best bottleneck placement)
``--method conformer``  Conformer adapter, Pfeiffer placement, parallel (the paper's best method, sec. 3.2)
``--method lora``       peft LoRA on W_q, W_v (as the paper's LoRA baseline), rank matched to Pfeiffer's budget
``--method full``       full fine-tuning
``--method linear``     linear probing (classifier head only)
======================  ==================================================================================

Adapters and LoRA also train the classifier head and the layer norms the paper trains (``train_layer_norms``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .._io import atomic_path
from . import Recipe, RecipePlan, register_recipe

METHODS = ("houlsby", "pfeiffer", "parallel", "conformer", "lora", "full", "linear")
# AdamW learning rates of the paper's training script (hparams/train.yaml), full FT raised from 5e-5 because
# this backbone is small and pretrained briefly.
LEARNING_RATES = {"full": 1e-4, "linear": 1e-3, "lora": 5e-3, "houlsby": 5e-3, "pfeiffer": 5e-3, "parallel": 5e-3,
                  "conformer": 5e-3}
SIZES = {
    # hidden, layers, heads, intermediate, mel bins, frames, words, samples/word, pretrain steps, FSDD per speaker
    "small": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
                  num_mel_bins=64, max_length=100, words=50, samples_per_word=40, pretrain_steps=600,
                  per_speaker=None),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 num_mel_bins=32, max_length=48, words=4, samples_per_word=3, pretrain_steps=4, per_speaker=10),
}
CITATION = """@inproceedings{cappellazzo2024petlast,
  title     = {Parameter-Efficient Transfer Learning of Audio Spectrogram Transformers},
  author    = {Cappellazzo, Umberto and Falavigna, Daniele and Brutti, Alessio and Ravanelli, Mirco},
  booktitle = {IEEE International Workshop on Machine Learning for Signal Processing (MLSP)},
  year      = {2024},
  eprint    = {2312.03694},
  archivePrefix = {arXiv}
}"""


def add_arguments(parser) -> None:
    parser.add_argument("--method", choices=METHODS, default="conformer", help="adaptation method")
    parser.add_argument("--mode", choices=("sequential", "parallel"), default="sequential",
                        help="adapter mode for --method houlsby / pfeiffer")
    parser.add_argument("--reduction-factor", type=float, default=16.0, help="adapter bottleneck = hidden / RF")
    parser.add_argument("--lora-rank", type=int, default=None, help="LoRA rank (default: Pfeiffer's budget)")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the paper's per method")
    parser.add_argument("--max-length", type=int, default=None,
                        help="FSDD input frames (default: the pretrained length; positions are interpolated)")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="steps of the synthetic pretraining")


def build(args) -> RecipePlan:
    size = dict(SIZES["tiny" if args.tiny else "small"])
    if getattr(args, "pretrain_steps", None):
        size["pretrain_steps"] = args.pretrain_steps
    backbone = pretrained_backbone(size, seed=args.seed)
    max_length = getattr(args, "max_length", None) or size["max_length"]
    data = fsdd_datasets(backbone, args.data_dir, max_length=max_length, per_speaker=size["per_speaker"])
    method = args.method
    model, base_copy = build_method_model(method, backbone, mode=args.mode, reduction_factor=args.reduction_factor,
                                          lora_rank=args.lora_rank, max_length=max_length, seed=args.seed)
    lr = args.learning_rate or LEARNING_RATES[method]
    extractor = _extractor(backbone, max_length)
    trainable, total = count_parameters(model)

    def evaluate(trained, test_dataset):
        return {"trainable_params": trainable, "trainable_percent": round(100.0 * trainable / total, 4),
                "method": method if method not in ("houlsby", "pfeiffer") else f"{method}-{args.mode}"}

    is_peft = base_copy is not None

    def save(trained, folder):
        trained.save_pretrained(folder, safe_serialization=True)
        if is_peft:  # the adapter needs its backbone (not on the Hub): ship it alongside
            base_copy.save_pretrained(os.path.join(folder, "backbone"), safe_serialization=True)
            # peft records the backbone's local cache path; the folder's own backbone/ replaces it
            path = os.path.join(folder, "adapter_config.json")
            with open(path) as fh:
                adapter_config = json.load(fh)
            adapter_config["base_model_name_or_path"] = None
            with atomic_path(path) as tmp, open(tmp, "w") as fh:
                json.dump(adapter_config, fh, indent=2, sort_keys=True)

    def load(folder):
        from transformers import ASTForAudioClassification

        if not os.path.isfile(os.path.join(folder, "adapter_config.json")):
            return ASTForAudioClassification.from_pretrained(folder)
        import hf_plugins  # noqa: F401
        from peft import PeftModel

        base = ASTForAudioClassification.from_pretrained(os.path.join(folder, "backbone"))
        return PeftModel.from_pretrained(base, folder)

    return RecipePlan(
        model=model,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        test_dataset=data["test"],
        training_args=dict(learning_rate=lr, warmup_steps=0.1, lr_scheduler_type="cosine", weight_decay=0.1,
                           adam_beta2=0.98, adam_epsilon=1e-6, per_device_train_batch_size=32,
                           label_names=["labels"], metric_for_best_model="accuracy"),
        trainer_kwargs={"compute_metrics": compute_accuracy, "processing_class": extractor},
        evaluate=evaluate,
        plots=plot_confusion,
        save=save,
        load=load,
        card={
            "pipeline_tag": "audio-classification",
            "tags": ["audio", "speech", "audio-spectrogram-transformer", "adapters", "peft", f"method-{method}"],
            "datasets": ["free-spoken-digit-dataset"],
            "license": "cc-by-sa-4.0",
            "dataset_description": (
                "Pretraining: {n} spoken words ({words}...) synthesised with espeak-ng in 8 English accents x 26 "
                "voice variants, speeds 110-230 wpm, pitches 15-85, with random gain and white noise "
                "(15-40 dB SNR), {k} samples per word. Adaptation: the Free Spoken Digit Dataset (CC BY-SA 4.0; "
                "digits 0-9, 8 kHz resampled to 16 kHz), split by speaker: train george, jackson, lucas; "
                "validation nicolas; test theo, yweweler (unseen speakers)."
            ).format(n=len(backbone["words"]), words=", ".join(backbone["words"][:6]), k=backbone["samples_per_word"]),
            "method": method,
            "mode": args.mode,
            "backbone": {k: backbone[k] for k in ("hidden_size", "num_hidden_layers", "num_mel_bins", "max_length",
                                                  "pretrain_steps", "pretrain_accuracy")},
            "citation": CITATION,
        },
    )


register_recipe(Recipe(
    name="ast-adapter-fsdd",
    paper="bottleneck",
    description="Adapters / LoRA / full FT / linear probing of a small AST, pretrained on espeak-ng words, "
                "on the Free Spoken Digit Dataset (unseen test speakers).",
    build=build,
    add_arguments=add_arguments,
    default_max_steps=300,
))


# -- building blocks (shared with benchmarks/ast_adapters.py) -----------------------------------------------


def cache_root() -> Path:
    """Where the pretrained backbone and features are cached (``$HFP_CACHE`` or ``~/.cache/hf_plugins/data``)."""
    from ..data.files import default_cache_dir

    return default_cache_dir() / "ast_adapters"


def pretrained_backbone(size: dict, seed: int = 42, progress: bool = True) -> dict:
    """Pretrain (once; cached) a small AST on espeak-ng words; returns its description with ``path``."""
    from ..data.audio import DEFAULT_WORDS

    words = list(DEFAULT_WORDS[: size["words"]])
    spec = {k: size[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                 "num_mel_bins", "max_length", "samples_per_word", "pretrain_steps")}
    spec.update(words=words, seed=seed, version=2)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_root() / f"backbone-{key}"
    info_path = folder / "backbone.json"
    if info_path.is_file():
        return {**json.loads(info_path.read_text()), "path": str(folder)}
    info = _pretrain(spec, progress)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".backbone-{key}-", dir=folder.parent))
    try:
        info["model"].save_pretrained(tmp, safe_serialization=True)
        info = {k: v for k, v in info.items() if k != "model"}
        (tmp / "backbone.json").write_text(json.dumps(info, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**info, "path": str(folder)}


def fsdd_datasets(backbone: dict, data_dir=None, max_length: int | None = None, per_speaker: int | None = None):
    """FSDD train / validation / test as ``AudioFeatureDataset`` s, normalised with the backbone's statistics."""
    from ..data.audio import AudioFeatureDataset, ast_features, load_fsdd

    max_length = max_length or backbone["max_length"]
    key = hashlib.sha256(json.dumps([backbone["num_mel_bins"], max_length, backbone["feature_mean"],
                                     backbone["feature_std"], per_speaker, 1]).encode()).hexdigest()[:12]
    path = cache_root() / f"fsdd-features-{key}.npz"
    if path.is_file():
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    else:
        splits = load_fsdd(data_dir, max_per_speaker=per_speaker)
        arrays = {}
        for name, split in splits.items():
            arrays[f"{name}_x"] = ast_features(split.waves, num_mel_bins=backbone["num_mel_bins"], max_length=max_length,
                                               mean=backbone["feature_mean"], std=backbone["feature_std"])
            arrays[f"{name}_y"] = split.labels
        _atomic_savez(path, arrays)
    return {name: AudioFeatureDataset(arrays[f"{name}_x"], arrays[f"{name}_y"]) for name in ("train", "validation", "test")}


def build_method_model(method: str, backbone: dict, mode: str = "sequential", reduction_factor: float = 16.0,
                       lora_rank: int | None = None, max_length: int | None = None, seed: int = 42):
    """The backbone with a new 10-digit head, prepared for ``method``; returns ``(model, base_copy)``.

    ``base_copy`` is the un-adapted model (for saving next to a peft adapter), ``None`` for full / linear.
    """
    import torch
    from transformers import ASTForAudioClassification
    from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import ASTMLPHead

    from ..data.audio import DIGIT_WORDS

    if method not in METHODS:
        raise ValueError(f"method={method!r} is not allowed; use one of {list(METHODS)}")
    model = ASTForAudioClassification.from_pretrained(backbone["path"])
    model.config.num_labels = len(DIGIT_WORDS)
    model.config.id2label = dict(enumerate(DIGIT_WORDS))
    model.config.label2id = {w: i for i, w in enumerate(DIGIT_WORDS)}
    torch.manual_seed(seed)
    model.classifier = ASTMLPHead(model.config)
    model.num_labels = len(DIGIT_WORDS)
    max_length = max_length or backbone["max_length"]
    adapters = {"houlsby": ("houlsby", mode, "bottleneck"), "pfeiffer": ("pfeiffer", mode, "bottleneck"),
                "parallel": ("pfeiffer", "parallel", "bottleneck"), "conformer": ("pfeiffer", "parallel", "conformer")}
    if method in adapters:
        import hf_plugins  # noqa: F401  (registers BOTTLENECK)
        from peft import get_peft_model

        from ..peft_methods.bottleneck.config import BottleneckConfig

        preset, adapter_mode, block = adapters[method]
        base_copy = copy.deepcopy(model)
        config = BottleneckConfig(preset=preset, mode=adapter_mode, adapter_block=block,
                                  reduction_factor=reduction_factor, modules_to_save=["classifier"],
                                  train_layer_norms=True,
                                  max_length=max_length if max_length != backbone["max_length"] else None)
        return get_peft_model(model, config), base_copy
    if max_length != backbone["max_length"]:
        from ..peft_methods.bottleneck.model import interpolate_ast_position_embeddings

        interpolate_ast_position_embeddings(model, max_length)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        d = model.config.hidden_size
        if lora_rank is None:  # same trainable budget as a Pfeiffer adapter: 2*d*b + b + d ~ 4*d*r (W_q, W_v)
            b = max(1, round(d / reduction_factor))
            lora_rank = max(1, round((2 * d * b + b + d) / (4 * d)))
        layers = range(model.config.num_hidden_layers)
        norms = [f"audio_spectrogram_transformer.layers.{i}.layernorm_{w}" for i in layers for w in ("before", "after")]
        base_copy = copy.deepcopy(model)
        config = LoraConfig(r=lora_rank, lora_alpha=lora_rank, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                            modules_to_save=["classifier", "audio_spectrogram_transformer.layernorm", *norms])
        return get_peft_model(model, config), base_copy
    if method == "linear":
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.startswith("classifier.")
    return model, None


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters, counting a ``modules_to_save`` copy once."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for n, p in model.named_parameters() if "modules_to_save" not in n)
    return trainable, total


def compute_accuracy(eval_prediction) -> dict:
    """Top-1 accuracy for ``Trainer``."""
    logits = eval_prediction.predictions[0] if isinstance(eval_prediction.predictions, tuple) else eval_prediction.predictions
    return {"accuracy": float((np.argmax(logits, axis=-1) == eval_prediction.label_ids).mean())}


def plot_confusion(model, test_dataset, folder) -> list:
    """Confusion matrix of the test split (PNG)."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predictions = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(test_dataset), 128):
            batch = torch.from_numpy(test_dataset.features[start:start + 128])
            predictions.append(model(input_values=batch).logits.argmax(-1).numpy())
    predicted = np.concatenate(predictions)
    matrix = np.zeros((10, 10), dtype=int)
    np.add.at(matrix, (test_dataset.labels, predicted), 1)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        if value:
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7)
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("spoken digit")
    ax.set_title(f"FSDD test (unseen speakers), accuracy {np.trace(matrix) / matrix.sum():.3f}")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    fig.tight_layout()
    path = os.path.join(folder, "confusion_matrix.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


# -- helpers ---------------------------------------------------------------------------------------------


def _extractor(backbone: dict, max_length: int):
    from ..data.audio import make_feature_extractor

    return make_feature_extractor(backbone["num_mel_bins"], max_length, backbone["feature_mean"], backbone["feature_std"])


def _pretrain(spec: dict, progress: bool) -> dict:
    """Train an ASTForAudioClassification on espeak-ng words (90 % / 10 % split by voice sample)."""
    import torch
    from transformers import ASTConfig, ASTForAudioClassification, get_cosine_schedule_with_warmup

    from ..data.audio import ast_features, feature_statistics, synthesize_words

    words = spec["words"]
    split = synthesize_words(words, samples_per_word=spec["samples_per_word"], seed=spec["seed"], progress=progress)
    raw = ast_features(split.waves, num_mel_bins=spec["num_mel_bins"], max_length=spec["max_length"])
    mean, std = feature_statistics(raw)
    features = (raw - mean) / (2 * std)
    rng = np.random.default_rng(spec["seed"])
    order = rng.permutation(len(features))
    n_val = max(1, len(order) // 10)
    val, train = order[:n_val], order[n_val:]
    torch.manual_seed(spec["seed"])
    config = ASTConfig(hidden_size=spec["hidden_size"], num_hidden_layers=spec["num_hidden_layers"],
                       num_attention_heads=spec["num_attention_heads"], intermediate_size=spec["intermediate_size"],
                       num_mel_bins=spec["num_mel_bins"], max_length=spec["max_length"], num_labels=len(words),
                       id2label=dict(enumerate(words)), label2id={w: i for i, w in enumerate(words)})
    model = ASTForAudioClassification(config)
    with torch.no_grad():  # ViT-style truncated-normal positions and tokens (transformers initialises them to zero)
        for p in (model.audio_spectrogram_transformer.embeddings.position_embeddings,
                  model.audio_spectrogram_transformer.embeddings.cls_token,
                  model.audio_spectrogram_transformer.embeddings.distillation_token):
            torch.nn.init.trunc_normal_(p, std=0.02)
    steps, batch = spec["pretrain_steps"], 64
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    x_all, y_all = torch.from_numpy(features), torch.from_numpy(split.labels)
    model.train()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    iterator = range(steps)
    if tqdm is not None:
        iterator = tqdm(iterator, desc="pretraining AST on espeak-ng words", disable=not progress)
    for step in iterator:
        index = torch.from_numpy(rng.choice(train, size=min(batch, len(train)), replace=False))
        x = x_all[index]
        # SpecAugment-style time and frequency masks (Park et al. 2019; AST's own training uses them)
        for row in x:
            t0, f0 = rng.integers(0, x.shape[1]), rng.integers(0, x.shape[2])
            row[t0: t0 + rng.integers(0, max(2, x.shape[1] // 5))] = 0
            row[:, f0: f0 + rng.integers(0, max(2, x.shape[2] // 5))] = 0
        loss = model(input_values=x, labels=y_all[index]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(input_values=x_all[val[i:i + 256]]).logits for i in range(0, len(val), 256)])
    accuracy = float((logits.argmax(-1) == y_all[val]).float().mean())
    info = {k: spec[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                                 "num_mel_bins", "max_length", "samples_per_word", "pretrain_steps", "seed")}
    info.update(words=words, feature_mean=mean, feature_std=std, pretrain_accuracy=round(accuracy, 4),
                pretrain_examples=len(train), model=model)
    return info


def _atomic_savez(path: Path, arrays: dict) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
