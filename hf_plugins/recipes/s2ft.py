"""Recipe ``s2ft-legal``: S²FT (or LoRA, or full fine-tuning) of a small Llama moved to a new legal domain.

Two real text domains from the ``licensedcode-data`` wheel (CC-BY-4.0, ``hf_plugins.data.text``): the *old*
domain is open-source licences (Permissive, Copyleft, Copyleft Limited), the *new* domain is proprietary EULAs
and terms (Proprietary Free, Commercial). A small Llama (grouped-query attention) is first pre-trained on the
old domain (or loaded from ``--base-dir``), then fine-tuned on the new domain with ``--method s2ft|lora|full``
at the same number of steps. The test metrics give the new-domain loss (what fine-tuning is for) and the
old-domain loss before and after (forgetting), the quantities of the paper's generalisation study (§4.3).
"""

from __future__ import annotations

import os

from . import Recipe, RecipePlan, register_recipe

CITATION = """@inproceedings{yang2024s2ft,
  title     = {S$^{2}$FT: Efficient, Scalable and Generalizable LLM Fine-tuning by Structured Sparsity},
  author    = {Xinyu Yang and Jixuan Leng and Geyang Guo and Jiawei Zhao and Ryumei Nakada and Linjun Zhang and
               Huaxiu Yao and Beidi Chen},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2024},
  eprint    = {2412.06289},
  archivePrefix = {arXiv}
}"""

OLD_DOMAIN = ("Permissive", "Copyleft", "Copyleft Limited")
NEW_DOMAIN = ("Proprietary Free", "Commercial")
TINY = dict(hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, seq_len=32, vocab_size=300, docs=24,
            batch_size=4, pretrain_steps=4, max_blocks=48, lora_r=4)


def add_arguments(parser) -> None:
    parser.add_argument("--method", choices=("s2ft", "lora", "full"), default="s2ft")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--num-heads", type=int, default=8)
    parser.add_argument("--num-kv-heads", type=int, default=4, help="grouped-query attention (KV heads)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary trained on both domains")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pretrain-steps", type=int, default=600, help="steps of pre-training on the old domain")
    parser.add_argument("--base-dir", default=None,
                        help="load the pre-trained base (and tokenizer) from here, or save it here after pre-training")
    parser.add_argument("--eval-blocks", type=int, default=256,
                        help="at most this many blocks of each validation/test split (evaluation cost)")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank; also sets the S2FT parameter budget")
    parser.add_argument("--o-share", type=float, default=0.4,
                        help="share of the S2FT budget spent on attention heads (W_o columns); the rest on W_down")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="default: 1e-3 for s2ft and lora, 2e-4 for full fine-tuning")


def build(args) -> RecipePlan:
    import torch

    from ..data.text import license_texts, train_bpe_tokenizer
    from .matformer import LMBlocks, dataset_loss, tokenize_blocks

    tiny = bool(getattr(args, "tiny", False))
    opt = {k.replace("-", "_"): getattr(args, k.replace("-", "_"), None) for k in (
        "hidden_size", "num_layers", "num_heads", "num_kv_heads", "seq_len", "vocab_size", "batch_size",
        "pretrain_steps", "lora_r")}
    defaults = dict(hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=4, seq_len=128, vocab_size=4096,
                    batch_size=16, pretrain_steps=600, lora_r=16)
    opt = {k: (defaults[k] if v is None else v) for k, v in opt.items()}
    opt.update(docs=None, max_blocks=None)
    if tiny:
        opt.update(TINY)
    eval_blocks = getattr(args, "eval_blocks", None) or 256
    method = getattr(args, "method", None) or "s2ft"
    seed = getattr(args, "seed", 42)

    texts = {}
    for domain, cats in (("old", OLD_DOMAIN), ("new", NEW_DOMAIN)):
        for split in ("train", "validation", "test"):
            docs = license_texts(split=split, categories=cats)
            if opt["docs"]:
                docs = docs[: opt["docs"] if split == "train" else max(2, opt["docs"] // 4)]
            texts[domain, split] = docs

    def blocks(domain, split, tokenizer):
        b = tokenize_blocks(texts[domain, split], tokenizer, opt["seq_len"])
        if opt["max_blocks"]:
            b = b[: opt["max_blocks"] if split == "train" else max(4, opt["max_blocks"] // 4)]
        if split != "train":
            b = b[:eval_blocks]
        return LMBlocks(b)

    base_dir = getattr(args, "base_dir", None)
    base, tokenizer = _load_base(base_dir) if base_dir and os.path.isfile(os.path.join(base_dir, "config.json")) else (None, None)
    if base is None:
        tokenizer = train_bpe_tokenizer(texts["old", "train"] + texts["new", "train"], vocab_size=opt["vocab_size"],
                                        style="llama", model_max_length=opt["seq_len"])
        torch.manual_seed(seed)
        base = _new_llama(opt, tokenizer)
        pretrain(base, blocks("old", "train", tokenizer), opt["pretrain_steps"], opt["batch_size"], seed=seed)
        if base_dir:
            _save_base(base, tokenizer, base_dir)
    data = {(d, s): blocks(d, s, tokenizer) for d in ("old", "new") for s in ("train", "validation", "test")}
    before = {
        "old_domain_loss_before": dataset_loss(base, data["old", "test"]),
        "new_domain_loss_before": dataset_loss(base, data["new", "test"]),
    }
    model = wrap(base, method, lora_r=opt["lora_r"], o_share=getattr(args, "o_share", 0.4), seed=seed)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def evaluate(model, test_dataset) -> dict:
        old_after = dataset_loss(model, data["old", "test"])
        new_after = dataset_loss(model, test_dataset)
        return {
            **before,
            "old_domain_loss": old_after,
            "new_domain_loss": new_after,
            "forgetting": old_after - before["old_domain_loss_before"],
            "trainable_parameters": trainable,
        }

    def save(model, output_dir):
        model.save_pretrained(output_dir, safe_serialization=True)
        if method != "full":  # the folder carries its own base, so it loads without the pre-training run
            _save_base(model.get_base_model(), tokenizer, os.path.join(output_dir, "base_model"))

    def load(output_dir):
        from transformers import AutoModelForCausalLM

        if method == "full":
            return AutoModelForCausalLM.from_pretrained(output_dir)
        from peft import PeftModel

        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(os.path.join(output_dir, "base_model")),
                                         output_dir)

    lr = getattr(args, "learning_rate", None) or (2e-4 if method == "full" else 1e-3)
    return RecipePlan(
        model=model,
        train_dataset=data["new", "train"],
        eval_dataset=data["new", "validation"],
        test_dataset=data["new", "test"],
        training_args=dict(
            learning_rate=lr,
            per_device_train_batch_size=opt["batch_size"],
            per_device_eval_batch_size=32,
            lr_scheduler_type="cosine",
            warmup_steps=0.05,
            max_grad_norm=1.0,
        ),
        trainer_kwargs={"processing_class": tokenizer},
        evaluate=evaluate,
        save=save,
        load=load,
        card={
            "pipeline_tag": "text-generation",
            "tags": ["s2ft", "peft", "structured-sparsity", "causal-lm", f"method-{method}"],
            "datasets": ["licensedcode-data"],
            "license": "apache-2.0",
            "method": method,
            "dataset_description": (
                "Texts of the `licensedcode-data` wheel (ScanCode toolkit, CC-BY-4.0), split 80/10/10 by a stable "
                f"hash of the licence key. Old domain (pre-training): {', '.join(OLD_DOMAIN)} licences. New domain "
                f"(fine-tuning): {', '.join(NEW_DOMAIN)} EULAs and terms. Blocks of {opt['seq_len']} tokens of a "
                f"{len(tokenizer)}-token byte-level BPE tokenizer trained on both training splits."
            ),
            "notes": (
                f"Method `{method}`: " + {
                    "s2ft": "S²FT trains the W_o columns of a few KV groups and the W_down columns of a few FFN "
                            "channels (paper §3), sized to no more parameters than LoRA of the same rank.",
                    "lora": f"peft LoRA r={opt['lora_r']} on all linear layers of the blocks (the baseline).",
                    "full": "full fine-tuning (the upper baseline, and the one that forgets most).",
                }[method]
            ),
            "citation": CITATION,
        },
    )


def wrap(base, method: str, lora_r: int = 16, o_share: float = 0.4, seed: int = 0):
    """``base`` made ready for ``method``: an S²FT or LoRA ``PeftModel``, or ``base`` itself (full FT)."""
    if method == "full":
        for p in base.parameters():
            p.requires_grad_(True)
        return base
    from peft import LoraConfig, get_peft_model

    linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0, target_modules=linear, task_type="CAUSAL_LM")
    if method == "lora":
        return get_peft_model(base, lora)
    return get_peft_model(base, s2ft_config_for_budget(base, lora_parameters(base, lora_r, linear), o_share, seed))


def lora_parameters(model, r: int, names) -> int:
    """Trainable parameters of LoRA rank ``r`` on the linear layers whose names end in ``names``."""
    return sum(r * (m.in_features + m.out_features) for n, m in model.named_modules()
               if n.split(".")[-1] in names and hasattr(m, "in_features"))


def s2ft_config_for_budget(model, budget: int, o_share: float = 0.4, seed: int = 0):
    """An S2FT config on W_o heads and W_down channels (the released LLaMA-2 recipe's components) with at most
    ``budget`` trainable parameters, ``o_share`` of them on heads."""
    from ..peft_methods.s2ft.config import S2FTConfig
    from ..peft_methods.s2ft.selection import find_blocks, s2ft_trainable_budget

    probe = S2FTConfig(target_components=["o", "down"], count={"o": 0, "down": 0})
    per = s2ft_trainable_budget(model, probe)
    blocks = find_blocks(model, probe)
    n_o = min(int(o_share * budget) // per["o"], sum(b.n_units("o", "kv_group") for b in blocks))
    n_down = min((budget - n_o * per["o"]) // per["down"], sum(b.channels for b in blocks))
    return S2FTConfig(target_components=["o", "down"], count={"o": n_o, "down": n_down}, seed=seed,
                      task_type="CAUSAL_LM")


def pretrain(model, dataset, steps: int, batch_size: int, seed: int = 0, lr: float = 2e-3) -> list[float]:
    """Plain next-token pre-training of ``model`` on ``dataset`` (AdamW, cosine); returns the losses."""
    import math

    import torch

    if steps <= 0:
        return []
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps // 20)) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    model.train()
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(dataset), (batch_size,), generator=g)
        batch = torch.stack([dataset[int(i)]["input_ids"] for i in idx])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach().item())
    model.eval()
    return losses


def _new_llama(opt, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=opt["hidden_size"], num_hidden_layers=opt["num_layers"],
        num_attention_heads=opt["num_heads"], num_key_value_heads=opt["num_kv_heads"],
        intermediate_size=int(opt["hidden_size"] * 8 / 3 + 63) // 64 * 64, max_position_embeddings=opt["seq_len"],
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def _save_base(model, tokenizer, directory) -> None:
    import shutil
    import tempfile

    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".base-", dir=parent)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    os.rename(tmp, directory)


def _load_base(directory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)


register_recipe(
    Recipe(
        name="s2ft-legal",
        paper="s2ft",
        description=(
            "S2FT vs LoRA vs full fine-tuning of a small Llama pre-trained on open-source licences and moved to "
            "proprietary EULAs/terms (licensedcode-data): new-domain loss and forgetting of the old domain."
        ),
        build=build,
        add_arguments=add_arguments,
        default_max_steps=300,
    )
)
