"""idT5: IdT5Config / IdT5ForConditionalGeneration, pruning an mT5, the tie trap, recipe, CLI."""

import json
import random
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, MT5Config, MT5ForConditionalGeneration

import hf_plugins
from hf_plugins import IdT5Config, IdT5ForConditionalGeneration, prune_vocabulary
from hf_plugins.data.indonesian import indonesian_sentences
from hf_plugins.vocab import decode_id_map, encode_id_map
from hf_plugins.recipes.idt5 import TINY_LANGUAGES, build_multilingual_t5, multilingual_tokenizer, pretrain, rouge_scores

ID_TEXT = "Pemerintah Indonesia memastikan kotak selundupan dibawa melalui pesawat baru milik Garuda."


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tokenizer, texts = multilingual_tokenizer(vocab_size=1500, per_language=150, languages=TINY_LANGUAGES,
                                              cache_dir=str(tmp_path_factory.mktemp("spm")))
    model = build_multilingual_t5(tokenizer, d_model=32, d_ff=64, num_layers=2, num_heads=4, seed=0)
    pretrain(model, tokenizer, texts, steps=3, batch_size=8)
    corpus = indonesian_sentences(limit=800)
    pruned = prune_vocabulary(model, tokenizer, corpus + [ID_TEXT])
    return tokenizer, model.eval(), pruned


def test_config_keeps_untied_and_validates(tmp_path):
    assert MT5Config(tie_word_embeddings=False).tie_word_embeddings is True  # the trap in transformers 5
    config = IdT5Config(vocab_size=4, d_model=8, original_vocab_size=10, original_token_ids=[0, 1, 2, 7])
    assert config.tie_word_embeddings is False and config.original_to_new == {0: 0, 1: 1, 2: 2, 7: 3}
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is IdT5Config and loaded.tie_word_embeddings is False
    assert loaded.original_ids == [0, 1, 2, 7] and loaded.original_token_ids == "0-2,7"
    with pytest.raises(ValueError, match="vocab_size"):
        IdT5Config(vocab_size=3, original_token_ids=[0, 1, 2, 7])
    with pytest.raises(ValueError, match="original_vocab_size"):
        IdT5Config(vocab_size=2, original_vocab_size=5, original_token_ids=[0, 9])


def test_tie_trap_pruned_head_stays_untied(setup, tmp_path):
    tokenizer, model, pruned = setup
    # the trap itself: an MT5 built from a config asking for untied weights shares lm_head with shared
    naive = MT5ForConditionalGeneration(MT5Config(vocab_size=16, d_model=8, d_ff=16, d_kv=4, num_layers=1,
                                                  num_heads=2, tie_word_embeddings=False))
    assert naive.lm_head.weight is naive.shared.weight
    new = pruned.model
    assert isinstance(new, IdT5ForConditionalGeneration) and new.config.tie_word_embeddings is False
    assert new.lm_head.weight is not new.shared.weight
    assert new.encoder.embed_tokens.weight is new.shared.weight is new.decoder.embed_tokens.weight
    torch.testing.assert_close(new.lm_head.weight, model.lm_head.weight[pruned.kept_ids])
    torch.testing.assert_close(new.shared.weight, model.shared.weight[pruned.kept_ids])
    new.tie_weights()  # must not overwrite the embeddings with the head (or the reverse)
    torch.testing.assert_close(new.shared.weight, model.shared.weight[pruned.kept_ids])
    assert new.lm_head.weight is not new.shared.weight
    new.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is not loaded.shared.weight
    assert loaded.encoder.embed_tokens.weight is loaded.shared.weight
    torch.testing.assert_close(loaded.lm_head.weight, new.lm_head.weight)
    torch.testing.assert_close(loaded.shared.weight, new.shared.weight)


def test_logits_and_greedy_generation_match_original(setup):
    tokenizer, model, pruned = setup
    new_model, new_tok = pruned.model.eval(), pruned.tokenizer
    old = tokenizer(ID_TEXT, return_tensors="pt")
    new = new_tok(ID_TEXT, return_tensors="pt")
    assert pruned.map_ids(old.input_ids[0].tolist()) == new.input_ids[0].tolist()
    dec_old = old.input_ids[:, :6]
    dec_new = torch.tensor([pruned.map_ids(dec_old[0].tolist())])
    with torch.no_grad():
        lo = model(**old, decoder_input_ids=dec_old).logits
        ln = new_model(**new, decoder_input_ids=dec_new).logits
    torch.testing.assert_close(ln, lo[..., pruned.kept_ids])
    torch.testing.assert_close(new_model.logits_to_original(ln)[..., pruned.kept_ids], lo[..., pruned.kept_ids])
    # greedy decoding over the kept vocabulary is the same sequence, mapped back through the id map
    dropped = sorted(set(range(model.config.vocab_size)) - set(pruned.kept_ids))
    g_old = model.generate(**old, max_new_tokens=10, do_sample=False, suppress_tokens=dropped)
    g_new = new_model.generate(**new, max_new_tokens=10, do_sample=False)
    assert new_model.to_original_ids(g_new).tolist() == g_old.tolist()


def test_out_of_language_text_does_not_crash(setup):
    _, _, pruned = setup
    for text in ["Привет, как дела?", "東京は日本の首都です。", "Where is the station?"]:
        enc = pruned.tokenizer(text, return_tensors="pt")
        assert int(enc.input_ids.max()) < pruned.model.config.vocab_size
        with torch.no_grad():
            out = pruned.model.generate(**enc, max_new_tokens=3, do_sample=False)
        assert out.shape[0] == 1
    with pytest.raises(ValueError, match="input_ids"):
        pruned.model(input_ids=torch.tensor([[pruned.model.config.vocab_size]]), decoder_input_ids=torch.tensor([[0]]))


def test_save_load_round_trip_with_auto_classes(setup, tmp_path):
    _, _, pruned = setup
    pruned.model.save_pretrained(tmp_path)
    pruned.tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "idt5" and config["tie_word_embeddings"] is False
    assert decode_id_map(config["original_token_ids"]) == pruned.kept_ids
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert type(model) is IdT5ForConditionalGeneration
    assert tok(ID_TEXT).input_ids == pruned.tokenizer(ID_TEXT).input_ids
    enc = tok(ID_TEXT, return_tensors="pt")
    with torch.no_grad():
        a = model(**enc, decoder_input_ids=enc.input_ids[:, :3]).logits
        b = pruned.model.eval()(**enc, decoder_input_ids=enc.input_ids[:, :3]).logits
    torch.testing.assert_close(a, b)
    from transformers import AutoModelForTextEncoding

    encoder = AutoModelForTextEncoding.from_pretrained(tmp_path).eval()
    assert type(encoder).__name__ == "IdT5EncoderModel"
    with torch.no_grad():
        torch.testing.assert_close(encoder(**enc).last_hidden_state, model.encoder(**enc).last_hidden_state)


def test_prune_vocab_cli(setup, tmp_path):
    tokenizer, model, _ = setup
    src = tmp_path / "mt5"
    model.save_pretrained(src)
    tokenizer.save_pretrained(src)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(indonesian_sentences(limit=200)), encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "hf_plugins.cli", "prune-vocab", str(src), "--corpus", str(corpus),
                          "--language", "id", "--output-dir", str(tmp_path / "idt5")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "parameters:" in out.stdout and "fewer" in out.stdout
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "idt5")
    assert type(loaded) is IdT5ForConditionalGeneration and loaded.config.pruned_language == "id"
    assert loaded.config.vocab_size < model.config.vocab_size


def test_id_map_text_round_trip():
    ids = [0, 1, 2, 3, 7, 9, 10, 11, 250001]
    assert encode_id_map(ids) == "0-3,7,9-11,250001"
    assert decode_id_map(encode_id_map(ids)) == ids and decode_id_map(ids) == ids and encode_id_map([]) == ""
    assert decode_id_map("") == [] and decode_id_map("4") == [4] and decode_id_map("2-4,6-6") == [2, 3, 4, 6]
    rng = random.Random(0)
    for _ in range(50):  # the vectorised decoder against the definition
        ids = sorted(set(rng.sample(range(5000), rng.randint(1, 300)) + list(range(7, rng.randint(8, 40)))))
        assert decode_id_map(encode_id_map(ids)) == ids
    for bad in ("5-2", "1,,2", "1-2-3", "-3", "x"):
        with pytest.raises(ValueError, match="bad id map"):
            decode_id_map(bad)


def test_rouge_scores_by_hand():
    r = rouge_scores(["siapa pergi ke pasar"], ["siapa yang pergi ke pasar"])
    assert r["rouge1"] == pytest.approx(2 * 4 / 9)  # 4 shared unigrams, 4 vs 5 words
    assert r["rouge2"] == pytest.approx(2 * 2 / 7)  # "pergi ke", "ke pasar"
    assert r["rougeL"] == pytest.approx(2 * 4 / 9)
    assert rouge_scores(["a"], ["b"])["rouge1"] == 0.0


def test_tiny_sentiment_recipe_writes_folder(tmp_path):
    from hf_plugins.recipes import run_recipe

    out = run_recipe("idt5-sentiment", ["--tiny", "--max-steps", "2", "--output-dir", str(tmp_path / "run")])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    test = metrics["test"]
    assert 0.0 <= test["accuracy"] <= 1.0 and test["vocab_size"] == test["kept_pieces"]
    assert test["test_loss"] > 0  # Trainer finds `labels` in IdT5's forward signature
    assert test["pruned_parameters"] < test["original_parameters"]
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    assert type(model) is IdT5ForConditionalGeneration
    assert "idT5" in (tmp_path / "run" / "README.md").read_text()
