"""BudgetLongformer: LongformerRTDConfig / LongformerRTDForPreTraining, the fast Longformer attention, the
RTD collator, discriminator export, LED warm start and the recipes."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForPreTraining,
    LongformerConfig,
    LongformerForMaskedLM,
    LongformerModel,
)
from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

import hf_plugins
from hf_plugins import (
    DataCollatorForRTD,
    FastLongformerSelfAttention,
    LongformerRTDConfig,
    LongformerRTDForPreTraining,
    set_attention_backend,
)

TINY = dict(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            attention_window=8, max_position_embeddings=80, generator_size_ratio=0.5,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_model(**overrides) -> LongformerRTDForPreTraining:
    torch.manual_seed(0)
    return LongformerRTDForPreTraining(LongformerRTDConfig(**{**TINY, **overrides}))


def masked_batch(vocab=50, batch=3, length=37, rate=0.3, seed=0):
    """Token ids with <s> first, right padding in two rows, ``rate`` of the real tokens masked (mask id 4)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    ids[:, 0] = 0
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 25:] = 0
    attention_mask[2, 12:] = 0
    ids[attention_mask == 0] = 1
    chosen = (torch.rand(ids.shape, generator=g) < rate) & attention_mask.bool()
    chosen[:, 0] = False
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    inputs = ids.masked_fill(chosen, 4)
    global_mask = torch.zeros_like(ids)
    global_mask[:, 0] = 1
    return dict(input_ids=inputs, attention_mask=attention_mask, global_attention_mask=global_mask, labels=labels), ids


# -- config ----------------------------------------------------------------------------------------------


def test_config_validates_and_round_trips(tmp_path):
    with pytest.raises(ValueError, match="attention_backend"):
        LongformerRTDConfig(**{**TINY, "attention_backend": "flash"})
    with pytest.raises(ValueError, match="generator_size_ratio"):
        LongformerRTDConfig(**{**TINY, "generator_size_ratio": 1.5})
    with pytest.raises(ValueError, match="attention_window"):
        LongformerRTDConfig(**{**TINY, "attention_window": 7})
    with pytest.raises(ValueError, match="mlm_probability"):
        LongformerRTDConfig(**{**TINY, "mlm_probability": 0.0})
    config = LongformerRTDConfig(**TINY, rtd_weight=20.0)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is LongformerRTDConfig and loaded.rtd_weight == 20.0
    gen, disc = loaded.generator_config(), loaded.discriminator_config()
    assert type(disc) is LongformerConfig and disc.model_type == "longformer" and disc.hidden_size == 32
    assert (gen.hidden_size, gen.num_attention_heads, gen.num_hidden_layers) == (16, 1, 2)
    assert LongformerRTDConfig().rtd_weight == 50.0  # ELECTRA's lambda


# -- the joint model -------------------------------------------------------------------------------------


def test_generator_and_discriminator_share_embeddings(tmp_path):
    model = tiny_model()
    shared, gen_emb = model.discriminator.embeddings, model.generator.embeddings
    assert gen_emb.word_embeddings is shared.word_embeddings
    assert gen_emb._shared is shared  # positions, token types and LayerNorm too: the same module
    assert model.generator_lm_head.decoder.weight is shared.word_embeddings.weight
    assert gen_emb.project.in_features == 32 and gen_emb.project.out_features == 16
    # Stored once, under the discriminator.
    assert not [k for k in model.state_dict() if k.startswith("generator.embeddings.") and "project" not in k]
    # The generator's MLM loss trains the shared embeddings.
    batch, _ = masked_batch()
    model(**batch).mlm_loss.backward()
    assert shared.word_embeddings.weight.grad.abs().sum() > 0
    assert shared.position_embeddings.weight.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert isinstance(loaded, LongformerRTDForPreTraining)
    assert loaded.generator.embeddings._shared is loaded.discriminator.embeddings
    assert loaded.generator_lm_head.decoder.weight is loaded.discriminator.embeddings.word_embeddings.weight
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)


def test_rtd_labels_are_exactly_token_differs_from_original():
    model = tiny_model(vocab_size=12)  # a small vocabulary: the generator often samples the original token
    batch, original = masked_batch(vocab=12, rate=0.5)
    torch.manual_seed(1)
    out = model(**batch)
    masked = batch["labels"] != -100
    disc_in = out.discriminator_input_ids
    assert torch.equal(disc_in[~masked], batch["input_ids"][~masked])  # only masked positions are replaced
    assert torch.equal(out.rtd_labels, (disc_in != original).long())
    assert out.rtd_labels[masked].min() == 0 and out.rtd_labels[masked].max() == 1  # both cases occur
    assert out.rtd_labels[~masked].sum() == 0
    # BCE over every non-padding token, total = mlm + lambda * rtd.
    active = batch["attention_mask"].bool()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits[active], out.rtd_labels[active].float())
    torch.testing.assert_close(out.rtd_loss, expected)
    torch.testing.assert_close(out.loss, out.mlm_loss + 50.0 * out.rtd_loss)
    assert out.logits.shape == original.shape and out.generator_logits.shape == (int(masked.sum()), 12)
    # At initialisation: BCE ~ ln 2 and MLM ~ ln V (logits near zero).
    assert abs(out.rtd_loss.item() - math.log(2)) < 0.05
    assert abs(out.mlm_loss.item() - math.log(12)) < 0.5
    # No gradient flows through sampling into the generator from the discriminator loss.
    model.zero_grad()
    out.rtd_loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for n, p in model.generator.named_parameters()
               if "project" in n or "encoder" in n)


def test_gradient_checkpointing_trains():
    model = tiny_model()
    model.gradient_checkpointing_enable()
    model.train()
    batch, _ = masked_batch()
    model(**batch).loss.backward()
    assert model.discriminator.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert model.generator.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_wrong_shapes_are_named():
    model = tiny_model()
    with pytest.raises(ValueError, match="input_ids"):
        model(input_ids=torch.ones(5, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        model(input_ids=torch.ones(2, 8, dtype=torch.long), labels=torch.ones(2, 9, dtype=torch.long))


# -- fast attention --------------------------------------------------------------------------------------


@pytest.mark.parametrize("globals_", ["none", "first", "several"])
def test_fast_attention_matches_transformers(globals_):
    config = LongformerConfig(**{k: v for k, v in TINY.items() if k != "generator_size_ratio"})
    torch.manual_seed(0)
    reference = LongformerModel(config).eval()
    fast = set_attention_backend(LongformerModel(config).eval(), "fast")
    fast.load_state_dict(reference.state_dict())
    assert isinstance(fast.encoder.layer[0].attention.self, FastLongformerSelfAttention)
    assert type(reference.encoder.layer[0].attention.self) is LongformerSelfAttention
    batch, ids = masked_batch(length=45)
    global_mask = None
    if globals_ != "none":
        global_mask = torch.zeros_like(ids)
        global_mask[:, 0] = 1
        if globals_ == "several":
            global_mask[0, [7, 30]] = 1
            global_mask[1, 3] = 1
    kwargs = dict(attention_mask=batch["attention_mask"], global_attention_mask=global_mask)
    weights = torch.randn(3, 45, 32, generator=torch.Generator().manual_seed(2))
    outputs = []
    for model in (reference, fast):
        hidden = model(ids, **kwargs).last_hidden_state
        (hidden * weights).sum().backward()
        outputs.append((hidden, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(outputs[1][0], outputs[0][0])
    assert outputs[1][1].keys() == outputs[0][1].keys()
    for name, grad in outputs[0][1].items():
        # Gradients are sums over many tokens: compare at float32 round-off relative to their scale.
        scale = float(grad.abs().max())
        torch.testing.assert_close(outputs[1][1][name], grad, rtol=1e-5, atol=1e-5 * max(scale, 1.0))


def test_fast_attention_layer_parity_and_fallback():
    config = LongformerConfig(hidden_size=64, num_attention_heads=4, attention_window=[16], num_hidden_layers=1,
                              attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    hf = LongformerSelfAttention(config, 0)
    fast = FastLongformerSelfAttention(config, 0)
    fast.load_state_dict(hf.state_dict())
    x = torch.randn(2, 64, 64)
    mask = torch.zeros(2, 64)
    mask[0, [0, 40]] = 10000.0
    mask[1, 50:] = -10000.0
    args = dict(attention_mask=mask, is_index_masked=mask < 0, is_index_global_attn=mask > 0, is_global_attn=True)
    torch.testing.assert_close(fast(x, **args)[0], hf(x, **args)[0])
    assert (fast(x, **args)[0][1, 50:] == 0).all()  # padding rows are zero, as in transformers
    full = fast(x, **args, output_attentions=True)  # falls back to transformers' implementation
    assert len(full) == 3
    with pytest.raises(ValueError, match="multiple"):
        fast(torch.randn(1, 60, 64), **{k: v[:1, :60] if torch.is_tensor(v) else v for k, v in args.items()})


# -- export and LED ----------------------------------------------------------------------------------------


def test_exported_discriminator_loads_in_plain_transformers(tmp_path):
    model = tiny_model().eval()
    batch, ids = masked_batch()
    export = model.export_discriminator(tmp_path / "disc")
    with open(os.path.join(export, "config.json")) as fh:
        assert json.load(fh)["model_type"] == "longformer"
    kwargs = dict(attention_mask=batch["attention_mask"], global_attention_mask=batch["global_attention_mask"])
    from safetensors.torch import load_file, save_file

    save_file({"ids": ids, **{k: v.contiguous() for k, v in kwargs.items()}}, str(tmp_path / "inputs.safetensors"))
    script = (
        "import sys, torch\n"
        "from safetensors.torch import load_file, save_file\n"
        "from transformers import LongformerModel, LongformerForMaskedLM\n"
        f"d = {str(tmp_path)!r}\n"
        "x = load_file(d + '/inputs.safetensors')\n"
        "kw = dict(attention_mask=x['attention_mask'], global_attention_mask=x['global_attention_mask'])\n"
        "m = LongformerModel.from_pretrained(d + '/disc').eval()\n"
        "mlm = LongformerForMaskedLM.from_pretrained(d + '/disc').eval()\n"
        "with torch.no_grad():\n"
        "    h = m(x['ids'], **kw).last_hidden_state\n"
        "    h2 = mlm.longformer(x['ids'], **kw).last_hidden_state\n"
        "assert 'hf_plugins' not in sys.modules\n"
        "save_file({'h': h.contiguous(), 'h2': h2.contiguous()}, d + '/hidden.safetensors')\n"
    )
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=str(tmp_path))
    hidden = load_file(str(tmp_path / "hidden.safetensors"))
    with torch.no_grad():
        ours = model.discriminator(ids, **kwargs).last_hidden_state
    torch.testing.assert_close(hidden["h"], ours)
    torch.testing.assert_close(hidden["h2"], ours)


def test_led_warm_start_copies_the_encoder_and_generates():
    model = tiny_model().eval()
    batch, ids = masked_batch()
    led = model.to_led(decoder_layers=1, max_decoder_position_embeddings=16).eval()
    kwargs = dict(attention_mask=batch["attention_mask"], global_attention_mask=batch["global_attention_mask"])
    with torch.no_grad():
        ours = model.discriminator(ids, **kwargs).last_hidden_state
        encoded = led.get_encoder()(input_ids=ids, **kwargs).last_hidden_state
    active = batch["attention_mask"].bool()
    torch.testing.assert_close(encoded[active], ours[active])
    set_attention_backend(led, "hf")  # LED's own encoder attention gives the same states
    with torch.no_grad():
        torch.testing.assert_close(led.get_encoder()(input_ids=ids, **kwargs).last_hidden_state[active], ours[active])
    # The decoder is randomly initialised (the BudgetLongformer model card's recommendation).
    dec = led.led.decoder.layers[0]
    assert not torch.equal(dec.self_attn.q_proj.weight, model.discriminator.encoder.layer[0].attention.self.query.weight)
    copied = model.to_led(decoder_layers=1, decoder_init="encoder")
    torch.testing.assert_close(copied.led.decoder.layers[0].self_attn.q_proj.weight,
                               model.discriminator.encoder.layer[0].attention.self.query.weight)
    generated = led.generate(ids, **kwargs, max_new_tokens=4, num_beams=2, do_sample=False)
    assert generated.shape[0] == 3 and 2 <= generated.shape[1] <= 5


# -- collator (real licence text) --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def licence_tokenizer():
    from hf_plugins.data.text import license_texts, train_bpe_tokenizer

    texts = license_texts("train")[:60]
    return train_bpe_tokenizer(texts, vocab_size=400, style="roberta"), license_texts("validation")[:24]


@pytest.mark.parametrize("whole_word", [False, True])
def test_collator_masking_rate_padding_and_global_attention(licence_tokenizer, whole_word):
    tokenizer, texts = licence_tokenizer
    encoded = tokenizer(texts, truncation=True, max_length=300)["input_ids"]
    collator = DataCollatorForRTD(tokenizer, attention_window=64, mlm_probability=0.15, whole_word_mask=whole_word,
                                  seed=0)
    batch = collator([{"input_ids": ids} for ids in encoded])
    assert batch["input_ids"].shape[1] % 64 == 0
    assert batch["global_attention_mask"][:, 0].all() and batch["global_attention_mask"][:, 1:].sum() == 0
    active = batch["attention_mask"].bool()
    assert int(active.sum()) == sum(len(ids) for ids in encoded)
    masked = batch["labels"] != -100
    rate = masked.sum().item() / active.sum().item()
    assert 0.12 < rate < 0.18, rate
    specials = torch.tensor([tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id])
    assert (batch["input_ids"][~active] == tokenizer.pad_token_id).all()
    assert not (masked & torch.isin(batch["labels"], specials)).any()
    original = torch.where(masked, batch["labels"], batch["input_ids"])
    share_mask_token = (batch["input_ids"][masked] == tokenizer.mask_token_id).float().mean().item()
    assert 0.75 < share_mask_token < 0.95  # ELECTRA: 85% <mask>, the rest keep the original token
    if whole_word:
        # Two alphanumeric tokens with no space marker between them are one word: masked together or not at all.
        tokens = [tokenizer.convert_ids_to_tokens(row) for row in original.tolist()]
        pairs = 0
        for r, row in enumerate(tokens):
            for i in range(2, int(active[r].sum())):
                cur, prev = row[i], row[i - 1]
                if _wordish(cur[0]) and _wordish(prev[-1]) and prev not in tokenizer.all_special_tokens:
                    pairs += 1
                    assert masked[r, i] == masked[r, i - 1], (r, i, row[i - 1], row[i])
        assert pairs > 100


def _wordish(char: str) -> bool:
    return char.isalnum() and char not in "ĠĊĉ▁"  # byte-level BPE's space markers are letters to Python


# -- recipes ---------------------------------------------------------------------------------------------


def test_recipes_pretrain_then_fine_tune(tmp_path):
    from hf_plugins.recipes import run_recipe

    pretrained = run_recipe("longformer-rtd-legal", ["--tiny", "--max-steps", "2", "--output-dir", str(tmp_path / "rtd")])
    with open(os.path.join(pretrained, "metrics.json")) as fh:
        metrics = json.load(fh)
    assert {"mlm_loss", "rtd_loss", "rtd_accuracy"} <= set(metrics["test"])
    assert os.path.isfile(os.path.join(pretrained, "discriminator", "model.safetensors"))
    assert "BudgetLongformer" in open(os.path.join(pretrained, "README.md")).read()
    assert isinstance(AutoModelForPreTraining.from_pretrained(pretrained), LongformerRTDForPreTraining)
    assert isinstance(LongformerForMaskedLM.from_pretrained(os.path.join(pretrained, "discriminator")), LongformerForMaskedLM)
    tuned = run_recipe("longformer-licence-category", ["--tiny", "--max-steps", "2", "--pretrained", pretrained,
                                                       "--output-dir", str(tmp_path / "cls")])
    with open(os.path.join(tuned, "metrics.json")) as fh:
        test = json.load(fh)["test"]
    assert 0.0 <= test["test_accuracy"] <= 1.0 and "test_macro_f1" in test


def test_public_names_are_exported():
    for name in ("LongformerRTDConfig", "LongformerRTDForPreTraining", "FastLongformerSelfAttention",
                 "set_attention_backend", "DataCollatorForRTD", "longformer_to_led"):
        assert getattr(hf_plugins, name) is not None
