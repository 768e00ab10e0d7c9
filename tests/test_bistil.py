"""BiStil: student initialisation, the reduced bilingual vocabulary, both distillation phases."""

import pytest
import torch
from peft import get_peft_model
from transformers import BertForSequenceClassification, DataCollatorWithPadding, TrainingArguments

import hf_plugins  # noqa: F401
from hf_plugins import LTSFTConfig, LTSFTTrainer
from hf_plugins.bistil import (
    DistillationModule,
    bilingual_dataset,
    build_student,
    default_layer_map,
    fit_hidden_projections,
    random_teacher,
    with_classification_head,
)
from hf_plugins.data.indonesian import gettext_pairs


@pytest.fixture(scope="module")
def corpus():
    pairs = gettext_pairs("id")
    assert len(pairs) > 500, "the English-Indonesian gettext catalogues are missing"
    pairs = pairs[::max(1, len(pairs) // 1500)][:1500]
    return [e for e, _ in pairs], [i for _, i in pairs]


@pytest.fixture(scope="module")
def teacher(corpus):
    en, id_ = corpus
    return random_teacher(en + id_ + ["the quick brown fox", "rumah makan"], vocab_size=900, layers=4)


@pytest.fixture(scope="module")
def bilingual(teacher, corpus):
    model, tokenizer = teacher
    en, id_ = corpus
    return build_student(model, tokenizer, en[:600] + id_[:600])


def test_layer_map_takes_the_top_of_each_block():
    assert default_layer_map(12) == [1, 3, 5, 7, 9, 11]
    assert default_layer_map(12, 4) == [2, 5, 8, 11]
    with pytest.raises(ValueError, match="student_layers must be in"):
        default_layer_map(4, 5)


def test_student_reproduces_the_teacher_layers_it_copied(bilingual):
    student, teacher = bilingual.student, bilingual.teacher
    assert student.config.num_hidden_layers == 2 and bilingual.layer_map == [1, 3]
    hidden = torch.randn(2, 7, teacher.config.hidden_size)
    for j, i in enumerate(bilingual.layer_map):
        with torch.no_grad():
            s = student.encoder.layer[j](hidden)
            t = teacher.encoder.layer[i](hidden)
        s = s[0] if isinstance(s, tuple) else s
        t = t[0] if isinstance(t, tuple) else t
        torch.testing.assert_close(s, t, rtol=0, atol=0)
    ids = bilingual.tokenizer(["Telepon Rumah"], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(student.embeddings(ids["input_ids"]), teacher.embeddings(ids["input_ids"]), rtol=0, atol=0)


def test_reduced_vocabulary_tokenizes_both_languages_like_the_teacher(bilingual, teacher, corpus):
    _, full_tokenizer = teacher
    en, id_ = corpus
    kept = bilingual.vocabulary.kept_ids
    assert len(bilingual.tokenizer) < len(full_tokenizer)
    for text in en[:300] + id_[:300]:
        reduced = bilingual.tokenizer(text)["input_ids"]
        assert [kept[i] for i in reduced] == full_tokenizer(text)["input_ids"], text


def test_bilingual_distillation_lowers_the_loss(bilingual, corpus, tmp_path):
    en, id_ = corpus
    torch.manual_seed(0)
    for p in bilingual.student.parameters():  # start away from the copied teacher layers
        p.data.add_(0.05 * torch.randn_like(p))
    module = DistillationModule(bilingual.teacher, bilingual.student, bilingual.layer_map)
    data = bilingual_dataset(bilingual.tokenizer, en[600:900], id_[600:900], max_length=32)
    collate = DataCollatorWithPadding(bilingual.tokenizer)
    probe = collate(data[:32])
    with torch.no_grad():
        before = module(**probe)
    from transformers import Trainer

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=15, per_device_train_batch_size=16, learning_rate=1e-3,
                             report_to=[], save_strategy="no", use_cpu=True, remove_unused_columns=False)
    Trainer(model=module, args=args, train_dataset=data, data_collator=collate).train()
    module.eval()
    with torch.no_grad():
        after = module(**probe)
    assert after.loss < before.loss and after.hidden_loss < before.hidden_loss
    assert all(not p.requires_grad for p in bilingual.teacher.parameters())


def test_a_full_copy_has_zero_distillation_loss(teacher, corpus):
    model, tokenizer = teacher
    en, id_ = corpus
    copy = build_student(model, tokenizer, en[:200] + id_[:200], layers=[0, 1, 2, 3])
    module = DistillationModule(copy.teacher, copy.student, copy.layer_map)
    batch = DataCollatorWithPadding(copy.tokenizer)(bilingual_dataset(copy.tokenizer, en[:8], id_[:8]))
    out = module(**batch)
    assert out.hidden_loss.item() == 0.0 and out.attention_loss.item() == 0.0
    one_off = DistillationModule(copy.teacher, copy.student, [0, 1, 3, 3])  # a wrong map is not free
    assert one_off(**batch).attention_loss.item() > 0


def test_phase_one_optional_mlm_loss_of_the_student(bilingual, corpus):
    """student_weight > 0 with labels adds the student's own MLM loss to the hidden + attention losses."""
    from transformers import BertForMaskedLM

    en, id_ = corpus
    student = BertForMaskedLM(bilingual.student.config)
    student.bert.load_state_dict(bilingual.student.state_dict(), strict=False)
    batch = DataCollatorWithPadding(bilingual.tokenizer)(bilingual_dataset(bilingual.tokenizer, en[:8], id_[:8]))
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    labels[:, ::2] = -100
    plain = DistillationModule(bilingual.teacher, student, bilingual.layer_map)(**batch, labels=labels)
    assert plain.student_loss.item() == 0.0  # off by default
    out = DistillationModule(bilingual.teacher, student, bilingual.layer_map, student_weight=0.5)(**batch, labels=labels)
    assert out.student_loss.item() > 0
    torch.testing.assert_close(out.loss, out.hidden_loss + out.attention_loss + 0.5 * out.student_loss)
    out.loss.backward()
    assert student.cls.predictions.transform.dense.weight.grad.abs().sum() > 0  # the MLM head learns


def test_narrower_student_uses_projected_embeddings_and_targets(teacher, corpus):
    model, tokenizer = teacher
    en, id_ = corpus
    narrow = build_student(model, tokenizer, en[:300] + id_[:300], hidden_size=32)
    assert narrow.student.config.hidden_size == 32 and narrow.student.config.num_attention_heads == 2
    projections = fit_hidden_projections(narrow.teacher, narrow.tokenizer, en[:40] + id_[:40], narrow.layer_map, 32)
    assert [tuple(p.shape) for p in projections] == [(64, 32)] * 3
    module = DistillationModule(narrow.teacher, narrow.student, narrow.layer_map, projections)
    batch = DataCollatorWithPadding(narrow.tokenizer)(bilingual_dataset(narrow.tokenizer, en[:8], id_[:8]))
    out = module(**batch)
    assert torch.isfinite(out.loss) and out.loss > 0


def test_task_distillation_with_lt_sft(bilingual, corpus, tmp_path):
    en, id_ = corpus
    labels = [len(t.split()) % 2 for t in en[:64]]
    teacher_task = with_classification_head(bilingual.teacher, 2)
    assert isinstance(teacher_task, BertForSequenceClassification)
    student_task = with_classification_head(bilingual.student, 2, head_from=teacher_task)
    for name in ("bert.pooler.dense.weight", "classifier.weight", "classifier.bias"):  # the teacher's head
        assert torch.equal(student_task.get_parameter(name), teacher_task.get_parameter(name))
    torch.testing.assert_close(student_task.bert.embeddings.word_embeddings.weight,
                               bilingual.student.embeddings.word_embeddings.weight)
    with pytest.raises(ValueError, match="same width"):
        narrow = build_student(bilingual.teacher, bilingual.tokenizer, hidden_size=32)
        with_classification_head(narrow.student, 2, head_from=teacher_task)
    peft_student = get_peft_model(student_task, LTSFTConfig(num_tunable_weights=500, task_type="SEQ_CLS",
                                                            modules_to_save=["pooler.dense"]))
    pooler_before = student_task.bert.pooler.dense.weight.detach().clone()
    module = DistillationModule(teacher_task, peft_student, bilingual.layer_map, soft_ce_weight=1.0)
    encoded = bilingual.tokenizer(en[:64], truncation=True, max_length=32)
    data = [{"input_ids": encoded["input_ids"][i], "attention_mask": encoded["attention_mask"][i], "labels": labels[i]}
            for i in range(64)]
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=16, learning_rate=1e-3,
                             report_to=[], save_strategy="no", use_cpu=True, remove_unused_columns=False)
    trainer = LTSFTTrainer(model=module, args=args, train_dataset=data, dense_steps=3, sparse_steps=3,
                           peft_model=peft_student, data_collator=DataCollatorWithPadding(bilingual.tokenizer))
    trainer.train()
    assert peft_student.peft_config["default"].phase == "sparse"
    assert sum(peft_student.peft_config["default"].selected_counts.values()) == 500
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert all(id(p) not in optimised for p in teacher_task.parameters())
    # the pooler is trained densely (modules_to_save), not among the sparse candidates
    assert not any("pooler" in key for key in peft_student.peft_config["default"].selected_counts)
    pooler = peft_student.base_model.model.bert.pooler.dense.modules_to_save["default"].weight
    assert (pooler != pooler_before).float().mean() > 0.9


def test_distill_command(tmp_path, corpus):
    import json
    import subprocess
    import sys

    en, id_ = corpus
    model, tokenizer = random_teacher(en[:300] + id_[:300], vocab_size=500, layers=4)
    model.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    (tmp_path / "en.txt").write_text("\n".join(en[:200]))
    (tmp_path / "id.txt").write_text("\n".join(id_[:200]))
    result = subprocess.run(
        [sys.executable, "-m", "hf_plugins.cli", "distill", "--teacher", str(tmp_path / "teacher"),
         "--source-text", str(tmp_path / "en.txt"), "--target-text", str(tmp_path / "id.txt"),
         "--steps", "2", "--batch-size", "8", "--output-dir", str(tmp_path / "student")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "student parameters" in result.stdout
    info = json.loads((tmp_path / "student" / "bistil.json").read_text())
    assert info["layer_map"] == [1, 3] and info["student_parameters"] < info["teacher_parameters"]
    from transformers import AutoModel

    assert AutoModel.from_pretrained(tmp_path / "student").config.num_hidden_layers == 2


def test_recipe_runs_end_to_end(tmp_path):
    import json

    from hf_plugins.recipes import run_recipe

    out = run_recipe("bistil-en-id", ["--tiny", "--output-dir", str(tmp_path / "run")])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("student_accuracy_id", "teacher_accuracy_id", "student_parameters", "teacher_parameters"):
        assert key in metrics["test"]
    assert metrics["test"]["student_parameters"] < metrics["test"]["teacher_parameters"]
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert not any("lt_sft" in n for n, _ in model.named_parameters())
    assert "Ansell" in (tmp_path / "run" / "README.md").read_text()
