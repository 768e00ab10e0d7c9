"""MatFormer: nested FFNs, joint loss, extraction exactness, gradients, save/load, assisted generation,
from_dense, Mix'n'Match, the Trainer logging, the recipe and the `extract` CLI verb."""

import json
import math

import pytest
import torch
from torch.testing import assert_close

import hf_plugins  # noqa: F401  (registers the Auto classes)
from hf_plugins import MatFormerConfig, MatFormerForCausalLM, MatFormerModel, mix_n_match_configurations
from hf_plugins.matformer_utils import count_parameters_for_widths, self_speculative_generate

GRANULARITIES = ["s", "m", "l", "xl"]
MIX = ["s", "m", "m", "xl"]


def tiny_config(**kw):
    base = dict(vocab_size=61, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    base.update(kw)
    return MatFormerConfig(**base)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = MatFormerForCausalLM(tiny_config())
    with torch.no_grad():  # non-trivial norms so that slicing mistakes show
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return m.eval()


def ids(batch=2, length=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 61, (batch, length), generator=g)


def test_config_defaults_validation_and_auto_classes():
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    cfg = tiny_config()
    assert cfg.granularities == [16, 32, 64, 128] and cfg.intermediate_size == 128
    assert cfg.granularity_names == GRANULARITIES and cfg.granularity_loss_weights == [1.0] * 4
    assert cfg.resolve_widths(MIX) == [16, 32, 32, 128]
    assert type(AutoConfig.for_model("matformer", hidden_size=32, num_attention_heads=4)) is MatFormerConfig
    assert type(AutoModelForCausalLM.from_config(cfg)) is MatFormerForCausalLM
    base = AutoModel.from_config(cfg)
    assert type(base) is MatFormerModel
    assert base.num_parameters() == base.num_parameters_at("xl")
    assert base.extract_submodel("s").num_parameters() == base.num_parameters_at("s")
    bad = [
        (dict(granularities=[64, 32]), "granularities"),
        (dict(granularities=[16, 256], intermediate_size=128), "granularities"),
        (dict(granularity_names=["a", "a", "b", "c"]), "granularity_names"),
        (dict(granularity_loss_weights=[1.0, -1.0, 1.0, 1.0]), "granularity_loss_weights"),
        (dict(granularity_training="sometimes"), "granularity_training"),
        (dict(intermediate_size=[128, 128]), "intermediate_size"),
        (dict(default_granularity="xxl"), "xxl"),
    ]
    for kwargs, word in bad:
        with pytest.raises(ValueError, match=word):
            tiny_config(**kwargs)
    with pytest.raises(ValueError, match="per-layer"):
        cfg.resolve_widths(["s", "m"])


@pytest.mark.parametrize("granularity", GRANULARITIES + [MIX, 24])
def test_extracted_submodel_logits_equal_nested(model, granularity):
    x = ids()
    with model.granularity(granularity), torch.no_grad():
        nested = model(x).logits
        sub = model.extract_submodel()
    expected = model.config.resolve_widths(granularity)
    assert sub.config.layer_intermediate_sizes == expected
    assert [m.gate_proj.out_features for m in sub._matformer_mlps()] == expected
    assert sub.num_parameters() == count_parameters_for_widths(model.config, expected) == model.num_parameters_at(granularity)
    with torch.no_grad():
        assert_close(sub(x).logits, nested, rtol=1e-5, atol=1e-5)
    assert model.active_widths == [128] * 4  # the context manager restored the full width


def test_granularities_differ_and_full_width_is_plain_llama(model):
    from transformers import LlamaConfig, LlamaForCausalLM

    x = ids()
    with torch.no_grad():
        outs = {g: model.set_granularity(g)(x).logits for g in GRANULARITIES}
        model.set_granularity(None)
        llama_cfg = LlamaConfig(**{k: v for k, v in model.config.to_dict().items()
                                   if k in LlamaConfig.__dataclass_fields__ and k != "model_type"})
        llama = LlamaForCausalLM(llama_cfg).eval()
        llama.load_state_dict(model.state_dict())
        assert_close(llama(x).logits, outs["xl"], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(outs["s"], outs["xl"])


def test_gradients_reach_only_the_slices_in_use():
    torch.manual_seed(0)
    m = MatFormerForCausalLM(tiny_config(granularity_training="current")).train()
    m.set_granularity(MIX)
    x = ids()
    m(x, labels=x).loss.backward()
    for mlp, width in zip(m._matformer_mlps(), [16, 32, 32, 128]):
        for proj in (mlp.gate_proj, mlp.up_proj):
            assert proj.weight.grad[:width].abs().sum() > 0
            assert torch.count_nonzero(proj.weight.grad[width:]) == 0
        assert mlp.down_proj.weight.grad[:, :width].abs().sum() > 0
        assert torch.count_nonzero(mlp.down_proj.weight.grad[:, width:]) == 0
    assert m.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_joint_loss_is_weighted_sum_and_sampled_runs_one():
    torch.manual_seed(0)
    weights = [0.5, 1.0, 2.0, 1.5]
    m = MatFormerForCausalLM(tiny_config(granularity_loss_weights=weights))
    x = ids()
    m.eval()
    with torch.no_grad():
        separate = torch.stack([m.set_granularity(g)(x, labels=x).loss for g in GRANULARITIES])
    m.set_granularity(MIX).train()
    out = m(x, labels=x)
    assert_close(out.granularity_losses, separate)
    assert_close(out.loss.detach(), (torch.tensor(weights) * separate).sum())
    assert m.active_widths == [16, 32, 32, 128]  # restored after the joint pass
    out.loss.backward()
    assert torch.count_nonzero(m.model.layers[0].mlp.gate_proj.weight.grad[64:]) > 0  # XL trained
    # gradient checkpointing recomputes each layer during backward: it must use the width of its forward
    checkpointed = MatFormerForCausalLM(m.config)
    checkpointed.load_state_dict(m.state_dict())
    checkpointed.set_granularity(MIX).train()
    checkpointed.gradient_checkpointing_enable()
    checkpointed(x, labels=x).loss.backward()
    for (name, p), q in zip(m.named_parameters(), checkpointed.parameters()):
        assert_close(q.grad, p.grad, msg=name)
    sampled = m(x, labels=x, granularity_training="sampled")
    assert int((~torch.isnan(sampled.granularity_losses)).sum()) == 1
    finite = sampled.granularity_losses[~torch.isnan(sampled.granularity_losses)]
    assert_close(sampled.loss.detach(), finite[0])


def test_save_load_nested_and_extracted(model, tmp_path):
    from transformers import AutoModelForCausalLM

    x = ids()
    model.save_pretrained(tmp_path / "nested")
    assert (tmp_path / "nested" / "model.safetensors").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "nested").eval()
    with torch.no_grad():
        for g in GRANULARITIES + [MIX]:
            assert_close(loaded.set_granularity(g)(x).logits, model.set_granularity(g)(x).logits)
    model.set_granularity(None)
    sub = model.extract_submodel(MIX)
    sub.save_pretrained(tmp_path / "sub")
    cfg = json.loads((tmp_path / "sub" / "config.json").read_text())
    assert cfg["intermediate_size"] == [16, 32, 32, 128] and cfg["granularity_names"] == ["s"]
    sub2 = AutoModelForCausalLM.from_pretrained(tmp_path / "sub").eval()
    with torch.no_grad():
        assert_close(sub2(x).logits, sub(x).logits)
    # default_granularity is applied on load
    model.config.default_granularity = "m"
    try:
        model.save_pretrained(tmp_path / "default_m")
    finally:
        model.config.default_granularity = None
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "default_m").active_widths == [32] * 4


def test_generation_with_cache_and_self_speculative_decoding(model):
    prompt = ids(batch=1, length=6, seed=3)
    with torch.no_grad():
        plain = model.generate(prompt, max_new_tokens=24, do_sample=False)
        no_cache = model.generate(prompt, max_new_tokens=24, do_sample=False, use_cache=False)
        draft = model.extract_submodel("s").eval()
        assisted = model.generate(prompt, max_new_tokens=24, do_sample=False, assistant_model=draft)
    assert plain.shape[1] == prompt.shape[1] + 24
    assert torch.equal(plain, no_cache)
    assert torch.equal(assisted, plain)
    out, stats = self_speculative_generate(model, prompt, draft_model=draft, max_new_tokens=24,
                                           num_assistant_tokens=4, assistant_confidence_threshold=0.0)
    assert torch.equal(out, plain)
    assert stats.new_tokens == 24 and stats.proposed > 0 and 0 <= stats.accepted <= stats.proposed
    assert 0.0 <= stats.acceptance_rate <= 1.0 and model._speculative_stats is None


def test_from_dense_is_exact_at_full_width_and_orders_by_importance():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    dense = LlamaForCausalLM(LlamaConfig(vocab_size=61, hidden_size=32, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, max_position_embeddings=64)).eval()
    x = ids()
    mat = MatFormerForCausalLM.from_dense(dense).eval()
    assert mat.config.granularities == [12, 24, 48, 96]
    with torch.no_grad():
        assert_close(mat(x).logits, dense(x).logits, rtol=1e-5, atol=1e-5)
    for mlp in mat._matformer_mlps():
        score = mlp.gate_proj.weight.norm(dim=1) * mlp.up_proj.weight.norm(dim=1) * mlp.down_proj.weight.norm(dim=0)
        assert torch.all(score[:-1] >= score[1:] - 1e-6)
    # activation-based importance: the prefix keeps more of the dense function than a random prefix would
    calibrated = MatFormerForCausalLM.from_dense(dense, calibration_input_ids=ids(batch=4, length=16, seed=5)).eval()
    with torch.no_grad():
        assert_close(calibrated(x).logits, dense(x).logits, rtol=1e-5, atol=1e-5)
        err_ordered = (calibrated.set_granularity("s")(x).logits - dense(x).logits).pow(2).mean()
        reversed_state = {k: (v.flip(0) if "gate_proj" in k or "up_proj" in k else v.flip(1) if "down_proj" in k else v)
                          for k, v in calibrated.state_dict().items()}
        worst = MatFormerForCausalLM(calibrated.config).eval()
        worst.load_state_dict(reversed_state)
        err_reversed = (worst.set_granularity("s")(x).logits - dense(x).logits).pow(2).mean()
    assert err_ordered < err_reversed


def test_peft_wrapped_projections_slice_exactly(model):
    from peft import LoraConfig, get_peft_model

    x = ids()
    base = MatFormerForCausalLM(model.config)
    base.load_state_dict(model.state_dict())
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "gate_proj", "up_proj", "down_proj"],
                                                 init_lora_weights=False))
    peft_model.eval()
    with torch.no_grad():
        peft_model.base_model.model.set_granularity(MIX)
        wrapped = peft_model(input_ids=x).logits
        merged = peft_model.merge_and_unload()
        assert_close(merged.set_granularity(MIX)(x).logits, wrapped, rtol=1e-5, atol=1e-5)


def test_mix_n_match_enumeration(model):
    cands = mix_n_match_configurations(model)
    assert len(cands) == 4 + 3 * 3  # uniform + two neighbouring granularities, non-decreasing over 4 layers
    assert [c.num_parameters for c in cands] == sorted(c.num_parameters for c in cands)
    for c in cands:
        assert c.widths == sorted(c.widths)
        assert c.num_parameters == model.num_parameters_at(c.names)
    assert len(mix_n_match_configurations(model, adjacent_only=False)) == math.comb(4 + 4 - 1, 4)
    budget = model.num_parameters_at("m")
    assert all(c.num_parameters <= budget for c in mix_n_match_configurations(model, max_parameters=budget))


def test_wrong_shapes_are_named(model):
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.zeros(12, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        model(ids(), labels=ids()[:, :5])


def test_recipe_trainer_logs_each_granularity_and_extract_cli(tmp_path):
    from hf_plugins.cli import main
    from hf_plugins.recipes import run_recipe

    out = run_recipe("matformer-lm", ["--tiny", "--max-steps", "4", "--output-dir", str(tmp_path / "run")])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    logged = [e for e in metrics["log_history"] if "loss" in e]
    assert logged and all(f"loss_{g}" in logged[0] for g in GRANULARITIES)
    for g in GRANULARITIES:
        assert math.isfinite(metrics["test"][f"test_loss_{g}"])
        assert metrics["test"][f"parameters_{g}"] > 0
    assert any(k.startswith("loss_mnm_") for k in metrics["test"])
    card = (tmp_path / "run" / "README.md").read_text()
    assert "MatFormer" in card and "loss_vs_parameters.png" in card
    assert main(["extract", out, "--widths", "s", "--output-dir", str(tmp_path / "small")]) == 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    small = AutoModelForCausalLM.from_pretrained(tmp_path / "small").eval()
    big = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "small")
    x = tok(["This license grants permission"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert_close(small(x).logits, big.set_granularity("s")(x).logits, rtol=1e-5, atol=1e-5)
    assert main(["extract", out, "--widths", "s,s,xl", "--output-dir", str(tmp_path / "bad")]) == 2
