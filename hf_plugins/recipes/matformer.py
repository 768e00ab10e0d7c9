"""Recipe ``matformer-lm``: a MatFormer language model trained jointly on real English text.

Data: the licence, EULA and terms-of-service texts of the ``licensedcode-data`` wheel (CC-BY-4.0), split
80/10/10 by document (``hf_plugins.data.text``), with a byte-level BPE tokenizer trained on the train split.
Model: a small Llama-style MatLM with the paper's four granularities, FFN widths {0.5, 1, 2, 4} x d_model
(S, M, L, XL; paper §3), trained with the joint loss Σ_i λ_i L(F_i(x), y) (Eq. 2) through ``Trainer``.
The metrics give the test loss and perplexity of every granularity and of some Mix'n'Match submodels
(paper §4.1), with their parameter counts.
"""

from __future__ import annotations

from . import Recipe, RecipePlan, register_recipe

CITATION = """@inproceedings{devvrit2024matformer,
  title     = {MatFormer: Nested Transformer for Elastic Inference},
  author    = {Devvrit and Sneha Kudugunta and Aditya Kusupati and Tim Dettmers and Kaifeng Chen and
               Inderjit S. Dhillon and Yulia Tsvetkov and Hannaneh Hajishirzi and Sham M. Kakade and
               Ali Farhadi and Prateek Jain},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2024},
  eprint    = {2310.07707},
  archivePrefix = {arXiv}
}"""

TINY = dict(hidden_size=48, num_layers=2, num_heads=4, seq_len=64, vocab_size=512, docs=40, batch_size=8, max_blocks=128)


def add_arguments(parser) -> None:
    parser.add_argument("--hidden-size", type=int, default=256, help="d_model")
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per training block")
    parser.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary trained on the train split")
    parser.add_argument("--granularity-training", choices=("joint", "sampled", "current"), default="joint",
                        help="joint: sum the losses of all granularities (paper Eq. 2); sampled: one per step")
    parser.add_argument("--loss-weights", default=None, help="comma-separated λ_i, one per granularity (default 0.25 each)")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=16)


def build(args) -> RecipePlan:
    import os

    import torch

    from ..configuration.matformer import MatFormerConfig
    from ..data.text import license_texts, train_bpe_tokenizer
    from ..matformer_utils import MatFormerTrainer
    from ..modeling.matformer import MatFormerForCausalLM

    tiny = bool(getattr(args, "tiny", False))
    opt = {
        "hidden_size": getattr(args, "hidden_size", 256),
        "num_layers": getattr(args, "num_layers", 4),
        "num_heads": getattr(args, "num_heads", 4),
        "seq_len": getattr(args, "seq_len", 128),
        "vocab_size": getattr(args, "vocab_size", 4096),
        "docs": None,
        "batch_size": getattr(args, "batch_size", 16),
        "max_blocks": None,
    }
    if tiny:
        opt.update(TINY)
    splits = {name: license_texts(split=name) for name in ("train", "validation", "test")}
    if opt["docs"]:
        splits = {name: texts[: opt["docs"] if name == "train" else opt["docs"] // 4] for name, texts in splits.items()}
    tokenizer = train_bpe_tokenizer(splits["train"], vocab_size=opt["vocab_size"], style="llama",
                                    model_max_length=opt["seq_len"])
    datasets = {}
    for name, texts in splits.items():
        blocks = tokenize_blocks(texts, tokenizer, opt["seq_len"])
        if opt["max_blocks"]:
            blocks = blocks[: opt["max_blocks"] if name == "train" else opt["max_blocks"] // 4]
        datasets[name] = LMBlocks(blocks)

    weights = getattr(args, "loss_weights", None)
    config = MatFormerConfig(
        vocab_size=len(tokenizer),
        hidden_size=opt["hidden_size"],
        num_hidden_layers=opt["num_layers"],
        num_attention_heads=opt["num_heads"],
        max_position_embeddings=opt["seq_len"],
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        granularity_training=getattr(args, "granularity_training", "joint"),
        # Default λ_i = 1/g: the logged training loss is then the mean over granularities (same scale as
        # the validation loss); only the scale differs from the paper's uniform sum.
        granularity_loss_weights=[float(w) for w in weights.split(",")] if weights else [0.25] * 4,
    )
    torch.manual_seed(getattr(args, "seed", 42))
    model = MatFormerForCausalLM(config)

    reports: dict = {}

    def evaluate(model, test_dataset) -> dict:
        reports["test"] = granularity_report(model, test_dataset, batch_size=32, mix_n_match=2 if tiny else 6)
        # S/M/L/XL losses are already test_loss_<name> (MatFormerTrainer.evaluate); add sizes and Mix'n'Match.
        return {k: v for k, v in reports["test"].items() if k.startswith(("parameters_", "loss_mnm_"))}

    def plots(model, test_dataset, output_dir):
        report = reports.get("test") or granularity_report(model, test_dataset, 32, 2 if tiny else 6)
        return [plot_loss_vs_parameters(model, report, output_dir)]

    return RecipePlan(
        model=model,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"],
        test_dataset=datasets["test"],
        training_args=dict(
            learning_rate=getattr(args, "learning_rate", 2e-3),
            per_device_train_batch_size=opt["batch_size"],
            per_device_eval_batch_size=32,
            lr_scheduler_type="cosine",
            warmup_steps=0.05,
            weight_decay=0.01,
            adam_beta2=0.95,
            max_grad_norm=1.0,
            # --tiny (smoke tests): validate once, at the end, instead of every quarter of the run.
            **({"eval_steps": getattr(args, "max_steps", None) or 600} if tiny else {}),
        ),
        trainer_class=MatFormerTrainer,
        trainer_kwargs={"processing_class": tokenizer},
        evaluate=evaluate,
        plots=plots,
        load=MatFormerForCausalLM.from_pretrained,
        card={
            "pipeline_tag": "text-generation",
            "tags": ["matformer", "nested-transformer", "elastic-inference", "causal-lm"],
            "datasets": ["licensedcode-data"],
            "license": "apache-2.0",
            "dataset_description": (
                "The licence, EULA and terms-of-service texts shipped in the `licensedcode-data` wheel "
                "(ScanCode toolkit, CC-BY-4.0), split 80/10/10 by document with a stable hash of the licence "
                f"key, cut into blocks of {opt['seq_len']} tokens of a {len(tokenizer)}-token byte-level BPE "
                "tokenizer trained on the train split."
            ),
            "notes": (
                "One set of weights, several models: each granularity (S, M, L, XL = FFN width "
                "{0.5, 1, 2, 4} x d_model) and any Mix'n'Match of them per layer can be selected with "
                "`model.set_granularity(...)` or extracted as a standalone smaller model with "
                "`model.extract_submodel(...)`."
            ),
            "citation": CITATION,
        },
    )


class LMBlocks:
    """Fixed-length token blocks as a map-style dataset of ``{"input_ids", "labels"}``."""

    def __init__(self, blocks):
        self.blocks = blocks

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, i):
        block = self.blocks[i]
        return {"input_ids": block, "labels": block.clone()}


def tokenize_blocks(texts, tokenizer, seq_len: int):
    """Tokenize documents (BOS ... EOS each), concatenate, and cut into ``(n, seq_len)`` blocks."""
    import torch

    ids: list[int] = []
    for enc in tokenizer(list(texts), add_special_tokens=True)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"only {len(ids)} tokens: not one block of seq_len={seq_len}")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def dataset_loss(model, dataset, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy of ``model`` (at its active granularity) on ``dataset``."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = torch.stack([dataset[i]["input_ids"] for i in range(start, min(len(dataset), start + batch_size))])
            loss = model(input_ids=batch.to(model.device), labels=batch.to(model.device)).loss
            tokens = batch.shape[0] * (batch.shape[1] - 1)
            total += float(loss) * tokens
            count += tokens
    model.train(was_training)
    return total / max(count, 1)


def pick_mix_n_match(model, n: int):
    """``n`` non-uniform Mix'n'Match candidates spread over the parameter range (paper §4.1 heuristic)."""
    from ..matformer_utils import mix_n_match_configurations

    mixed = [c for c in mix_n_match_configurations(model, include_uniform=False)]
    if n <= 0 or not mixed:
        return []
    if len(mixed) <= n:
        return mixed
    step = (len(mixed) - 1) / max(n - 1, 1)
    return [mixed[round(i * step)] for i in range(n)]


def granularity_report(model, dataset, batch_size: int = 32, mix_n_match: int = 4) -> dict:
    """Loss, perplexity and parameter count of every granularity and some Mix'n'Match submodels."""
    import math

    out = {}
    with model.granularity(model.active_widths):
        for name in model.config.granularity_names:
            model.set_granularity(name)
            loss = dataset_loss(model, dataset, batch_size)
            out[f"loss_{name}"] = loss
            out[f"perplexity_{name}"] = math.exp(min(loss, 50.0))
            out[f"parameters_{name}"] = model.num_parameters_at(name)
        for cand in pick_mix_n_match(model, mix_n_match):
            model.set_granularity(cand.names)
            out[f"loss_mnm_{cand.label}"] = dataset_loss(model, dataset, batch_size)
            out[f"parameters_mnm_{cand.label}"] = cand.num_parameters
    return out


def plot_loss_vs_parameters(model, report: dict, output_dir: str) -> str:
    """Test loss against parameter count for S/M/L/XL and Mix'n'Match submodels (``granularity_report``)."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = model.config.granularity_names
    xs = [report[f"parameters_{n}"] / 1e6 for n in names]
    ys = [report[f"loss_{n}"] for n in names]
    ax.plot(xs, ys, marker="o", label="S / M / L / XL")
    for n, x, y in zip(names, xs, ys):
        ax.annotate(n.upper(), (x, y), textcoords="offset points", xytext=(4, 4))
    mnm = [(report[k.replace("loss_", "parameters_")] / 1e6, v) for k, v in report.items() if k.startswith("loss_mnm_")]
    if mnm:
        ax.scatter(*zip(*mnm), marker="x", color="C1", label="Mix'n'Match")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("test loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(output_dir, "loss_vs_parameters.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


register_recipe(
    Recipe(
        name="matformer-lm",
        paper="matformer",
        description="MatFormer LM (nested FFN granularities S/M/L/XL trained jointly) on licence texts",
        build=build,
        add_arguments=add_arguments,
        default_max_steps=600,
    )
)
