"""LT-SFT: the two phases, exact apply/remove, composition, save/load in a fresh process."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import hf_plugins  # noqa: F401  (registers LT_SFT with peft)
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

from hf_plugins import LTSFTConfig, train_lt_sft

K = 300


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3)
    return BertForSequenceClassification(config).eval()


def batch(seed=1, n=8):
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, 120, (n, 12), generator=g), "labels": torch.randint(0, 3, (n,), generator=g)}


def train_steps(model, steps, weight_decay=0.0, seed=1):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=weight_decay)
    model.train()
    for i in range(steps):
        loss = model(**batch(seed + i)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def logits(model, seed=99):
    with torch.no_grad():
        return model(input_ids=batch(seed)["input_ids"]).logits


def make_sparse(adapter="default", seed=0, model=None, k=K):
    cfg = LTSFTConfig(num_tunable_weights=k, modules_to_save=["classifier"], task_type="SEQ_CLS")
    if model is None:
        model = get_peft_model(tiny_bert(), cfg, adapter_name=adapter)
    else:
        model.add_adapter(adapter, cfg)
        model.set_adapter(adapter)
    train_steps(model, 3, seed=seed)
    model.base_model.select_sparse(adapter)
    train_steps(model, 3, weight_decay=0.1, seed=seed + 10)
    return model


def base_weights(model):
    return {n: p.detach().clone() for n, p in model.get_base_model().named_parameters() if "lt_sft_" not in n}


def test_identity_at_init_and_dense_then_sparse_phase():
    base = tiny_bert()
    reference = logits(base)
    model = get_peft_model(tiny_bert(), LTSFTConfig(density=0.01, task_type="SEQ_CLS"))
    torch.testing.assert_close(logits(model), reference, rtol=0, atol=0)
    train_steps(model, 3)
    assert not torch.allclose(logits(model), reference)
    counts = model.base_model.select_sparse()
    targeted = sum(m.get_base_layer().weight.numel() for _, m in model.base_model._tuner_layers("default"))
    assert sum(counts.values()) == round(0.01 * targeted)
    # reset to the pretrained weights (Alg. 1, line 5): the model is the base model again
    torch.testing.assert_close(logits(model), reference, rtol=0, atol=0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    head = 32 * 3 + 3  # task_type SEQ_CLS trains the classifier densely (peft adds it to modules_to_save)
    assert trainable == sum(counts.values()) + head


def test_only_kept_entries_move_even_with_weight_decay():
    model = make_sparse()
    before = base_weights(model)
    model.merge_adapter()
    moved = 0
    for name, p in model.get_base_model().named_parameters():
        if "lt_sft_" in name or name not in before or "classifier" in name:
            continue
        changed = (p.detach() != before[name])
        moved += int(changed.sum())
    model.unmerge_adapter()
    assert 0 < moved <= K
    for name, p in model.get_base_model().named_parameters():
        if name in before:
            assert torch.equal(p.detach(), before[name]), f"unmerge is not exact for {name}"


def test_merge_equals_unmerged_forward_and_merge_and_unload():
    model = make_sparse()
    adapted = logits(model)
    model.merge_adapter()
    torch.testing.assert_close(logits(model), adapted, rtol=1e-5, atol=1e-6)
    model.unmerge_adapter()
    merged = model.merge_and_unload()
    assert not any("lt_sft_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(logits(merged), adapted, rtol=1e-5, atol=1e-6)


def test_composition_of_two_sparse_fine_tunes():
    """theta_0 + phi_lang + phi_task (Ansell et al. 2022, Sec. 3.2): the language SFT is applied to the
    base weights (exactly removable), the task SFT runs on top of it."""
    model = make_sparse("lang", seed=0)
    make_sparse("task", seed=5, model=model)
    d_lang = model.base_model.sparse_difference("lang")
    d_task = model.base_model.sparse_difference("task")
    assert d_lang.keys() == d_task.keys()
    before = base_weights(model)
    model.set_adapter("task")
    task_only = logits(model)
    model.base_model.merge_adapter(["lang"])
    composed = logits(model)
    assert not torch.allclose(composed, task_only)
    reference = tiny_bert()
    params = dict(reference.named_parameters())
    with torch.no_grad():
        for key in d_lang:
            weight = params[key + ".weight"]
            for idx, val in (d_lang[key], d_task[key]):
                weight.view(-1).index_add_(0, idx, val)
    wrapped = dict(model.get_base_model().named_modules())
    reference.classifier.load_state_dict(wrapped["classifier"].modules_to_save["task"].state_dict())
    torch.testing.assert_close(logits(reference), composed, rtol=1e-5, atol=1e-5)
    model.base_model.unmerge_adapter()
    torch.testing.assert_close(logits(model), task_only, rtol=0, atol=0)
    for name, p in model.get_base_model().named_parameters():
        if name in before:
            assert torch.equal(p.detach(), before[name]), name


def test_save_load_in_a_fresh_process(tmp_path):
    model = make_sparse()
    expected = logits(model)
    model.get_base_model()  # base weights are the untouched tiny_bert(0)
    tiny_bert().save_pretrained(tmp_path / "base")
    model.save_pretrained(tmp_path / "adapter")
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert any(k.endswith("lt_sft_indices") for k in saved) and any(k.endswith("lt_sft_values") for k in saved)
    assert sum(v.numel() for k, v in saved.items() if k.endswith("lt_sft_values")) == K
    code = f"""
        import torch, hf_plugins
        from peft import PeftModel
        from safetensors.torch import save_file
        from transformers import BertForSequenceClassification
        base = BertForSequenceClassification.from_pretrained({str(tmp_path / 'base')!r}).eval()
        model = PeftModel.from_pretrained(base, {str(tmp_path / 'adapter')!r}).eval()
        g = torch.Generator().manual_seed(99)
        ids = torch.randint(0, 120, (8, 12), generator=g)
        with torch.no_grad():
            save_file({{"logits": model(input_ids=ids).logits}}, {str(tmp_path / 'out.safetensors')!r})
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(load_file(str(tmp_path / "out.safetensors"))["logits"], expected, rtol=0, atol=0)


def test_two_phases_through_trainer(tmp_path):
    model = get_peft_model(tiny_bert(), LTSFTConfig(num_tunable_weights=K, modules_to_save=["classifier"], task_type="SEQ_CLS"))
    data = [{k: v[i] for k, v in batch(7, 32).items()} for i in range(32)]
    args = TrainingArguments(output_dir=str(tmp_path / "t"), per_device_train_batch_size=8, learning_rate=1e-2,
                             weight_decay=0.1, report_to=[], save_strategy="no", use_cpu=True, logging_steps=1)
    trainer = train_lt_sft(model, args, dense_steps=2, sparse_steps=2, train_dataset=data)
    assert model.peft_config["default"].phase == "sparse"
    optimised = sum(p.numel() for group in trainer.optimizer.param_groups for p in group["params"])
    classifier = sum(p.numel() for n, p in model.named_parameters() if "classifier" in n and p.requires_grad)
    assert optimised == K + classifier


def test_config_validation():
    with pytest.raises(ValueError, match="exactly one of num_tunable_weights and density"):
        LTSFTConfig()
    with pytest.raises(ValueError, match="density must be in"):
        LTSFTConfig(density=1.5)
