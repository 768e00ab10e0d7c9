"""S²FT as a peft method: selection, partial back-propagation, merge/unmerge, adapters, save/load, models."""

import copy

import pytest
import torch

import hf_plugins  # noqa: F401  (registers peft type S2FT)
from hf_plugins import S2FTConfig, select_s2ft_units
from peft import PeftModel, PeftType, get_peft_model
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 97


def tiny_llama(kv_heads=2, layers=2, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        intermediate_size=48,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def batch(seed=1, b=2, t=12):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (b, t), generator=g)
    return {"input_ids": ids, "labels": ids}


def train(model, steps=3, lr=5e-2):
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for step in range(steps):
        loss = model(**batch(seed=step)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return opt


# -- config ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"target_components": ["x_proj"]}, "target_components"),
        ({"ratio": 1.5}, "ratio"),
        ({"ratio": 0.1, "count": 2}, "either"),
        ({"scope": "layer"}, "scope"),
        ({"strategy": "magic"}, "strategy"),
        ({"count": {"o": 1}}, "down"),
    ],
)
def test_config_rejects_bad_values(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        S2FTConfig(**kwargs)


def test_peft_type_registered():
    cfg = S2FTConfig()
    assert cfg.peft_type is PeftType.S2FT and PeftType("S2FT") is PeftType.S2FT


# -- correctness ----------------------------------------------------------------------------------------


def test_outputs_unchanged_at_init_and_only_selected_slices_train():
    base = tiny_llama()
    original = copy.deepcopy(base.state_dict())
    inputs = batch()
    ref = base(**inputs).logits
    cfg = S2FTConfig(target_components=["q", "v", "o", "up", "down"], ratio=0.5, scope="per_layer", seed=3)
    model = get_peft_model(base, cfg)
    torch.testing.assert_close(model(**inputs).logits, ref, rtol=0, atol=0)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("s2ft_delta" in n for n in trainable)
    opt = train(model)
    # optimizer state exists only for the deltas
    state_numel = sum(s["exp_avg"].numel() for s in opt.state.values())
    assert state_numel == sum(trainable.values())
    merged = model.merge_and_unload()
    assert type(merged) is LlamaForCausalLM
    new = merged.state_dict()
    sel = cfg.selection
    hd, group = 8, 2
    for name, w0 in original.items():
        changed = (new[name] != w0).nonzero()
        module = name.rsplit(".", 1)[0]
        if module not in sel:
            assert changed.numel() == 0, name
            continue
        units = sel[module]
        if module.endswith(("q_proj",)):
            allowed = {h * hd + j for g in units for h in range(g * group, (g + 1) * group) for j in range(hd)}
            rows = set(changed[:, 0].tolist())
        elif module.endswith("v_proj"):
            allowed = {g * hd + j for g in units for j in range(hd)}
            rows = set(changed[:, 0].tolist())
        elif module.endswith("o_proj"):
            allowed = {h * hd + j for g in units for h in range(g * group, (g + 1) * group) for j in range(hd)}
            rows = set(changed[:, 1].tolist())
        elif module.endswith("up_proj"):
            allowed, rows = set(units), set(changed[:, 0].tolist())
        else:  # down_proj: columns
            allowed, rows = set(units), set(changed[:, 1].tolist())
        assert rows and rows <= allowed, (name, sorted(rows - allowed))


def test_partial_backprop_matches_dense_reference_and_keeps_only_the_slice():
    from hf_plugins.peft_methods.s2ft.layer import Linear

    torch.manual_seed(0)
    for axis, n_in, n_out in (("col", 40, 24), ("row", 24, 40)):
        lin = torch.nn.Linear(n_in, n_out)
        lin.requires_grad_(False)
        index = torch.tensor([3, 7, 8, 20])
        layer = Linear(lin, "default", index, axis, init_weights=False)
        x = torch.randn(2, 5, n_in, requires_grad=True)
        saved = []

        def pack(t):
            saved.append(t.shape)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            y = layer(x)
        delta = layer.s2ft_delta["default"]
        w = lin.weight.detach().clone()
        d_ref = delta.detach().clone().requires_grad_(True)
        x_ref = x.detach().clone().requires_grad_(True)
        w_eff = w.index_add(1 if axis == "col" else 0, index, d_ref)
        y_ref = torch.nn.functional.linear(x_ref, w_eff, lin.bias)
        torch.testing.assert_close(y, y_ref)
        g = torch.randn_like(y)
        y.backward(g)
        y_ref.backward(g)
        torch.testing.assert_close(x.grad, x_ref.grad)
        torch.testing.assert_close(delta.grad, d_ref.grad)
        if axis == "col":  # only the (2, 5, 4) copy of the selected columns is kept, never the full input
            assert (2, 5, n_in) not in [tuple(s) for s in saved]
            assert (2, 5, len(index)) in [tuple(s) for s in saved]


def test_merge_equals_unmerged_and_unmerge_is_bit_exact():
    base = tiny_llama()
    before = copy.deepcopy(base.state_dict())
    model = get_peft_model(base, S2FTConfig(target_components=["v", "o", "up", "down"], ratio=0.5, init_weights=False))
    inputs = batch()
    unmerged = model(**inputs).logits
    model.merge_adapter()
    torch.testing.assert_close(model(**inputs).logits, unmerged, rtol=1e-5, atol=1e-5)
    model.unmerge_adapter()
    after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in model.state_dict().items()}
    for k, v in before.items():
        assert torch.equal(after[k], v), k


def test_multi_adapter_switch_disable_and_delete():
    base = tiny_llama()
    inputs = batch()
    ref = base(**inputs).logits
    model = get_peft_model(base, S2FTConfig(ratio=0.5, seed=0, init_weights=False))
    out_a = model(**inputs).logits
    model.add_adapter("b", S2FTConfig(target_components=["v", "down"], ratio=0.5, seed=1, init_weights=False))
    model.set_adapter("b")
    out_b = model(**inputs).logits
    assert not torch.allclose(out_a, out_b)
    assert {n.split(".")[-1] for n, p in model.named_parameters() if p.requires_grad} == {"b"}
    with model.disable_adapter():
        torch.testing.assert_close(model(**inputs).logits, ref, rtol=0, atol=0)
    model.set_adapter("default")
    torch.testing.assert_close(model(**inputs).logits, out_a, rtol=0, atol=0)
    # both adapters merged, then unmerged: base restored bit for bit, merged output = sum of both deltas
    model.base_model.set_adapter(["default", "b"])
    both = model(**inputs).logits
    model.merge_adapter()
    torch.testing.assert_close(model(**inputs).logits, both, rtol=1e-5, atol=1e-5)
    model.unmerge_adapter()
    model.set_adapter("default")
    torch.testing.assert_close(model(**inputs).logits, out_a, rtol=0, atol=0)
    model.delete_adapter("b")
    assert list(model.peft_config) == ["default"]


def test_save_load_and_transformers_load_adapter(tmp_path):
    base = tiny_llama()
    model = get_peft_model(base, S2FTConfig(target_components=["o", "down"], count={"o": 1, "down": 10}))
    train(model, steps=2)
    inputs = batch()
    expected = model(**inputs).logits
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "adapter_model.safetensors")
    assert any(k.endswith("s2ft_index") and v.dtype == torch.long for k, v in tensors.items())
    assert any(k.endswith("s2ft_delta") for k in tensors)
    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    torch.testing.assert_close(loaded(**inputs).logits, expected, rtol=0, atol=0)
    fresh = tiny_llama()
    fresh.load_adapter(str(tmp_path))
    torch.testing.assert_close(fresh(**inputs).logits, expected, rtol=0, atol=0)
    other = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    other.load_adapter(str(tmp_path), adapter_name="again")
    other.set_adapter("again")
    torch.testing.assert_close(other(**inputs).logits, expected, rtol=0, atol=0)


def test_gradient_accumulation_clipping_checkpointing_and_bf16():
    inputs = batch()

    def grads(checkpointing, accumulate):
        model = get_peft_model(tiny_llama(), S2FTConfig(ratio=0.5, init_weights=False))
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        halves = [{k: v[i : i + 1] for k, v in inputs.items()} for i in range(2)] if accumulate else [inputs]
        for part in halves:
            (model(**part).loss / len(halves)).backward()
        norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1e-3)
        assert norm > 1e-3
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain = grads(False, False)
    for variant in (grads(True, False), grads(False, True)):
        assert variant.keys() == plain.keys()
        for n in plain:
            torch.testing.assert_close(variant[n], plain[n], rtol=1e-4, atol=1e-6)
    # bf16 base: deltas are kept in fp32 (peft's autocast_adapter_dtype), the step runs and trains
    model = get_peft_model(tiny_llama().to(torch.bfloat16), S2FTConfig(ratio=0.5))
    deltas = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in deltas)
    model.train()
    model(**inputs).loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and p.grad.abs().sum() > 0 for p in deltas)
    # fp32 base under CPU bf16 autocast (what Trainer(bf16=True) does)
    model = get_peft_model(tiny_llama(), S2FTConfig(ratio=0.5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**inputs).loss
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


# -- selection ------------------------------------------------------------------------------------------


def test_selection_strategies_scopes_and_gqa_units():
    base = tiny_llama(kv_heads=2, layers=3)
    with torch.no_grad():  # make channel 5 of layer 1 the largest-norm down column, head group 1 of layer 2 in o
        base.model.layers[1].mlp.down_proj.weight[:, 5] *= 50
        base.model.layers[2].self_attn.o_proj.weight[:, 8:24] *= 50
    cfg = S2FTConfig(strategy="weight", count={"o": 1, "down": 1}, scope="global")
    sel = select_s2ft_units(base, cfg)
    assert sel == {"model.layers.1.mlp.down_proj": [5], "model.layers.2.self_attn.o_proj": [1]}
    small = select_s2ft_units(base, S2FTConfig(strategy="weight", select="smallest", count={"o": 1, "down": 1}))
    norms = torch.stack([layer.mlp.down_proj.weight.norm(dim=0) for layer in base.model.layers])
    layer_idx, channel = divmod(int(norms.argmin()), norms.shape[1])
    assert small[f"model.layers.{layer_idx}.mlp.down_proj"] == [channel]
    per_layer = select_s2ft_units(base, S2FTConfig(count={"o": 1, "down": 3}, scope="per_layer", seed=7))
    assert [len(v) for k, v in sorted(per_layer.items()) if k.endswith("down_proj")] == [3, 3, 3]
    assert per_layer == select_s2ft_units(base, S2FTConfig(count={"o": 1, "down": 3}, scope="per_layer", seed=7))
    assert per_layer != select_s2ft_units(base, S2FTConfig(count={"o": 1, "down": 3}, scope="per_layer", seed=8))
    glob = select_s2ft_units(base, S2FTConfig(ratio={"o": 0.5, "down": 0.25}))
    assert sum(len(v) for k, v in glob.items() if k.endswith("down_proj")) == 36  # 25 % of 3 x 48 channels
    # activation- and gradient-based selection on calibration batches
    calib = [batch(seed=s) for s in range(2)]
    for strategy in ("activation", "gradient"):
        cfg = S2FTConfig(strategy=strategy, count={"o": 2, "down": 4})
        sel = select_s2ft_units(base, cfg, calibration_batches=calib)
        assert sum(len(v) for v in sel.values()) == 6
        assert all(not p.requires_grad or p.grad is None for p in base.parameters())
    with pytest.raises(ValueError, match="calibration"):
        get_peft_model(tiny_llama(), S2FTConfig(strategy="gradient"))
    # query-head units cannot train K/V rows under GQA (a KV row serves a whole group)
    with pytest.raises(ValueError, match="KV group"):
        select_s2ft_units(base, S2FTConfig(target_components=["v"], attention_unit="query_head"))
    q_only = select_s2ft_units(base, S2FTConfig(target_components=["o"], attention_unit="query_head", count=3))
    assert max(max(v) for v in q_only.values()) < 4


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_gqa_decoders_train_consistent_kv_groups(arch):
    torch.manual_seed(0)
    kw = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=48, vocab_size=VOCAB, max_position_embeddings=64)
    base = (Qwen2ForCausalLM(Qwen2Config(**kw)) if arch == "qwen2" else MistralForCausalLM(MistralConfig(**kw))).eval()
    inputs = batch()
    ref = base(**inputs).logits
    original = copy.deepcopy(base.state_dict())
    selection = {f"model.layers.0.self_attn.{p}": [1] for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    cfg = S2FTConfig(target_components=["q", "k", "v", "o"], selection=selection)
    model = get_peft_model(base, cfg)
    torch.testing.assert_close(model(**inputs).logits, ref, rtol=0, atol=0)
    train(model, steps=2)
    merged = model.merge_and_unload().state_dict()
    changed = lambda n, dim: sorted(set((merged[n] != original[n]).nonzero()[:, dim].tolist()))  # noqa: E731
    p = "model.layers.0.self_attn."
    # KV group 1 = KV head 1 (rows 8..15 of k/v) and query heads 2, 3 (rows/columns 16..31 of q/o)
    assert set(changed(p + "v_proj.weight", 0)) <= set(range(8, 16)) and changed(p + "v_proj.weight", 0)
    assert set(changed(p + "k_proj.weight", 0)) <= set(range(8, 16))
    assert set(changed(p + "q_proj.weight", 0)) <= set(range(16, 32)) and changed(p + "q_proj.weight", 0)
    assert set(changed(p + "o_proj.weight", 1)) <= set(range(16, 32)) and changed(p + "o_proj.weight", 1)
    if arch == "qwen2":  # q/k/v biases are untouched
        assert torch.equal(merged[p + "v_proj.bias"], original[p + "v_proj.bias"])


def test_bert_encoder_sequence_classification():
    torch.manual_seed(0)
    base = BertForSequenceClassification(
        BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                   vocab_size=VOCAB, num_labels=3)
    ).eval()
    ids = torch.randint(0, VOCAB, (2, 10))
    ref = base(input_ids=ids).logits
    cfg = S2FTConfig(task_type="SEQ_CLS", target_components=["v", "o", "up", "down"], ratio=0.5)
    model = get_peft_model(base, cfg)
    assert any(k.endswith("encoder.layer.0.attention.output.dense") for k in cfg.selection)
    assert any(k.endswith("encoder.layer.0.output.dense") for k in cfg.selection)
    torch.testing.assert_close(model(input_ids=ids).logits, ref, rtol=0, atol=0)
    model.train()
    model(input_ids=ids, labels=torch.tensor([0, 2])).loss.backward()
    trained = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is not None]
    assert any("s2ft_delta" in n for n in trained) and any("classifier" in n for n in trained)


def test_matformer_nested_widths():
    from hf_plugins.configuration.matformer import MatFormerConfig
    from hf_plugins.modeling.matformer import MatFormerForCausalLM

    torch.manual_seed(0)
    cfg = MatFormerConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          vocab_size=VOCAB, granularities=[16, 32, 64], max_position_embeddings=64)
    base = MatFormerForCausalLM(cfg).eval()
    inputs = batch()
    ref = base(input_ids=inputs["input_ids"]).logits
    model = get_peft_model(base, S2FTConfig(target_components=["o", "up", "down"], ratio=0.25))
    torch.testing.assert_close(model(input_ids=inputs["input_ids"]).logits, ref, rtol=0, atol=0)
    model.train()
    model(**inputs).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_bitsandbytes_quantised_base():
    import bitsandbytes as bnb

    base = tiny_llama()
    for layer in base.model.layers:
        for parent, name in ((layer.self_attn, "o_proj"), (layer.mlp, "down_proj")):
            lin = getattr(parent, name)
            for qcls in (bnb.nn.Linear8bitLt,) if name == "o_proj" else (bnb.nn.Linear4bit,):
                kwargs = {"has_fp16_weights": False} if qcls is bnb.nn.Linear8bitLt else {"compute_dtype": torch.float32}
                q = qcls(lin.in_features, lin.out_features, bias=False, **kwargs)
                q.load_state_dict(lin.state_dict())
                setattr(parent, name, q.to("cpu"))
    inputs = batch()
    ref = base(**inputs).logits
    model = get_peft_model(base, S2FTConfig(ratio=0.5))
    torch.testing.assert_close(model(**inputs).logits, ref, rtol=0, atol=0)
    train(model, steps=2)
    assert not torch.allclose(model(**inputs).logits, ref)
    with pytest.raises(ValueError, match="bitsandbytes"):
        model.merge_adapter()


def test_unsupported_layer_type_is_a_clear_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=VOCAB))
    cfg = S2FTConfig(target_components=["o", "down"], component_modules={"o": "attn.c_proj", "down": "mlp.c_proj"})
    with pytest.raises(TypeError, match="Conv1D"):
        get_peft_model(model, cfg)
    with pytest.raises(ValueError, match="no transformer layer"):
        get_peft_model(tiny_llama(), S2FTConfig(component_modules={"o": "attn.out", "down": "ffn.out"}))


def test_recipe_s2ft_legal_tiny(tmp_path):
    import json

    from hf_plugins.recipes import get_recipe, run_recipe
    from hf_plugins.recipes.s2ft import lora_parameters
    from transformers import AutoModelForCausalLM

    out = run_recipe("s2ft-legal", ["--tiny", "--max-steps", "2", "--method", "s2ft", "--output-dir", str(tmp_path / "run")])
    assert get_recipe("s2ft-legal").paper == "s2ft"
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    for key in ("new_domain_loss", "old_domain_loss", "forgetting", "new_domain_loss_before"):
        assert key in test and test[key] == test[key]  # present and not NaN
    readme = (tmp_path / "run" / "README.md").read_text()
    assert "S²FT" in readme and "@inproceedings{yang2024s2ft" in readme
    config = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert config["peft_type"] == "S2FT" and config["selection"]
    # the folder is self-contained: its base model plus the adapter load back
    base = AutoModelForCausalLM.from_pretrained(f"{out}/base_model")
    linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert 0 < test["trainable_parameters"] <= lora_parameters(base, 4, linear)
    model = PeftModel.from_pretrained(base, out)
    assert sum(p.numel() for n, p in model.named_parameters() if "s2ft_delta" in n) == test["trainable_parameters"]
