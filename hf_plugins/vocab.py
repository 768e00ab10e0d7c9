"""Vocabulary pruning: keep only the pieces one language uses, in the model and in the tokenizer.

This is the one pruning module of hf-plugins (idT5 uses it for mT5, BiStil for its XLM-R-style student).
It follows idT5 (Fuadi et al., arXiv 2302.00856, Sec. III-A): tokenize a corpus of the target language with
the original tokenizer, count the pieces it uses, keep those plus the special and byte-fallback pieces and
the single-character pieces of the language's alphabet (so that any text of the language still tokenizes,
without <unk>, into kept pieces), then

* rebuild the fast tokenizer as a real Unigram (SentencePiece) model holding only the kept pieces with their
  original scores, in the original order, with the normaliser (precompiled charsmap), pre-tokenizer,
  decoder, post-processor and special tokens preserved (their ids remapped);
* slice the rows of the input embedding and of the output head (tied or untied, with its bias) of the model.

Because every piece of the best Unigram segmentation of a corpus text is kept and the scores are unchanged,
the pruned tokenizer segments corpus text exactly as the original did (the Viterbi optimum is still a path of
the smaller lattice, and that lattice has no better path); the pruned model then gives the same logits on
the kept ids. ``PrunedVocabulary.old_to_new`` and ``kept_ids`` (new -> old) connect the two vocabularies.
"""

from __future__ import annotations

import copy
import json
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

__all__ = [
    "PrunedVocabulary",
    "count_pieces",
    "decode_id_map",
    "encode_id_map",
    "prune_model_embeddings",
    "prune_tokenizer",
    "prune_vocabulary",
    "read_sentencepiece_model",
    "select_pieces",
    "t5_tokenizer_from_sentencepiece",
    "vocabulary_coverage",
]

#: Characters whose pieces are always kept (with and without the word-start marker) when present.
DEFAULT_ALPHABET = string.ascii_letters + string.digits + string.punctuation
_METASPACE = "\u2581"


@dataclass
class PrunedVocabulary:
    """What :func:`prune_vocabulary` returns.

    Attributes:
        model: the model with sliced embeddings/head (``None`` when only a tokenizer was pruned). An
            ``MT5ForConditionalGeneration`` comes back as :class:`hf_plugins.IdT5ForConditionalGeneration`.
        tokenizer: a ``PreTrainedTokenizerFast`` whose Unigram model holds only the kept pieces.
        kept_ids: ``kept_ids[new_id] == old_id``.
        old_to_new: old id -> new id for every kept piece.
        counts: old id -> how often the corpus used it.
        stats: sizes and coverage figures (``original_size``, ``kept``, ``corpus_tokens``, ...).
    """

    model: Any
    tokenizer: Any
    kept_ids: list[int]
    old_to_new: dict[int, int]
    counts: Counter = field(default_factory=Counter)
    stats: dict = field(default_factory=dict)

    def map_ids(self, old_ids: Iterable[int], default: int | None = None) -> list[int]:
        """Old ids -> new ids (``default``, or the new ``<unk>`` id, for ids that were pruned)."""
        if default is None:
            default = self.tokenizer.unk_token_id
        return [self.old_to_new.get(int(i), default) for i in old_ids]


def prune_vocabulary(
    model,
    tokenizer,
    corpus: Iterable[str],
    *,
    min_frequency: int = 1,
    keep: Iterable[str | int] = (),
    max_pieces: int | None = None,
    alphabet: str | None = DEFAULT_ALPHABET,
    keep_corpus_characters: bool = True,
    output_class=None,
    batch_size: int = 1000,
) -> PrunedVocabulary:
    """Prune ``tokenizer`` (and ``model``, if given) to the pieces ``corpus`` uses.

    Args:
        model: a ``PreTrainedModel`` whose input embeddings (and output head, if any) are indexed by the
            tokenizer's ids: T5, mT5, BERT/XLM-R-style encoders, ... or ``None`` to prune the tokenizer only.
        tokenizer: a fast tokenizer with a Unigram (SentencePiece) model.
        corpus: texts of the language to keep (an iterable of strings; a list of files is read by the CLI).
        min_frequency: keep pieces used at least this often in the corpus.
        keep: extra pieces (strings) or ids to keep; a string that is not a piece keeps the pieces it
            tokenizes into (e.g. English words that should stay cheap).
        max_pieces: keep at most this many corpus pieces (the most frequent) besides the mandatory ones.
        alphabet: characters whose single-character pieces (``"a"`` and ``"▁a"``) are always kept, so that
            unseen words of the language still tokenize without ``<unk>``.
        keep_corpus_characters: also keep the single-character pieces of every character in the corpus.
        output_class: class of the returned model; by default the model's own class, except that an
            ``MT5ForConditionalGeneration`` becomes ``IdT5ForConditionalGeneration`` (MT5's config would tie
            the pruned ``lm_head`` to the embeddings again).
        batch_size: texts per tokenizer call while counting.
    """
    corpus = list(corpus)
    counts = count_pieces(tokenizer, corpus, batch_size=batch_size)
    characters = set(alphabet or "")
    if keep_corpus_characters:
        characters.update(_normalized_characters(tokenizer, corpus))
    kept_ids = select_pieces(
        tokenizer, counts, min_frequency=min_frequency, keep=keep, max_pieces=max_pieces, characters=characters
    )
    if model is not None:
        rows = model.get_input_embeddings().weight.shape[0]
        kept_ids = [i for i in kept_ids if i < rows]
    new_tokenizer = prune_tokenizer(tokenizer, kept_ids)
    old_to_new = {old: new for new, old in enumerate(kept_ids)}
    new_model = None
    if model is not None:
        new_model = prune_model_embeddings(model, kept_ids, output_class=output_class)
    total = sum(counts.values())
    unk = tokenizer.unk_token_id
    stats = {
        "original_size": len(tokenizer),
        "kept": len(kept_ids),
        "kept_fraction": len(kept_ids) / max(1, len(tokenizer)),
        "corpus_texts": len(corpus),
        "corpus_tokens": total,
        "corpus_types": len(counts),
        "corpus_unk_rate": counts.get(unk, 0) / max(1, total) if unk is not None else 0.0,
        "kept_token_coverage": sum(c for i, c in counts.items() if i in old_to_new) / max(1, total),
    }
    if model is not None:
        stats["original_parameters"] = sum(p.numel() for p in model.parameters())
        stats["pruned_parameters"] = sum(p.numel() for p in new_model.parameters())
    return PrunedVocabulary(new_model, new_tokenizer, kept_ids, old_to_new, counts, stats)


def count_pieces(tokenizer, corpus: Iterable[str], batch_size: int = 1000) -> Counter:
    """How often each id occurs when ``tokenizer`` tokenizes ``corpus`` (no special tokens added)."""
    backend = _backend(tokenizer)
    counts: Counter = Counter()
    batch: list[str] = []
    for text in corpus:
        batch.append(text)
        if len(batch) >= batch_size:
            for enc in backend.encode_batch(batch, add_special_tokens=False):
                counts.update(enc.ids)
            batch = []
    if batch:
        for enc in backend.encode_batch(batch, add_special_tokens=False):
            counts.update(enc.ids)
    return counts


def select_pieces(
    tokenizer,
    counts: Counter,
    *,
    min_frequency: int = 1,
    keep: Iterable[str | int] = (),
    max_pieces: int | None = None,
    characters: Iterable[str] = (),
) -> list[int]:
    """Sorted old ids to keep: special/added/control and byte-fallback pieces, ``<unk>``, corpus pieces used
    ``min_frequency`` times or more (the ``max_pieces`` most frequent), single-character pieces of
    ``characters``, and ``keep``."""
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
    if max_pieces is not None and max_pieces < 1:
        raise ValueError(f"max_pieces must be >= 1 or None, got {max_pieces}")
    state = _unigram_state(tokenizer)
    vocab = state["model"]["vocab"]
    piece_to_id = {piece: i for i, (piece, _) in enumerate(vocab)}
    kept: set[int] = set(_mandatory_ids(tokenizer, state))
    frequent = [i for i, c in counts.most_common() if c >= min_frequency]
    if max_pieces is not None:
        frequent = frequent[:max_pieces]
    kept.update(frequent)
    for ch in characters:
        for piece in (ch, _METASPACE + ch):
            if piece in piece_to_id:
                kept.add(piece_to_id[piece])
    if _METASPACE in piece_to_id:
        kept.add(piece_to_id[_METASPACE])
    backend = _backend(tokenizer)
    for item in keep:
        if isinstance(item, int):
            if not 0 <= item < len(tokenizer):
                raise ValueError(f"keep holds id {item}, outside the vocabulary (0..{len(tokenizer) - 1})")
            kept.add(item)
        elif item in piece_to_id:
            kept.add(piece_to_id[item])
        else:
            kept.update(backend.encode(item, add_special_tokens=False).ids)
    return sorted(kept)


def prune_tokenizer(tokenizer, kept_ids: Sequence[int]):
    """A new ``PreTrainedTokenizerFast`` holding only ``kept_ids`` (sorted old ids), renumbered 0..n-1.

    The Unigram pieces keep their scores, ``unk_id`` and ``byte_fallback``; the normaliser, pre-tokenizer and
    decoder are copied as they are; the post-processor's, padding's and added tokens' ids are remapped.
    """
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    kept_ids = [int(i) for i in kept_ids]
    if kept_ids != sorted(set(kept_ids)):
        raise ValueError("kept_ids must be sorted and unique (old ids in their original order)")
    state = _unigram_state(tokenizer)
    vocab = state["model"]["vocab"]
    old_to_new = {old: new for new, old in enumerate(kept_ids)}
    in_vocab = [i for i in kept_ids if i < len(vocab)]
    if in_vocab != kept_ids[: len(in_vocab)]:
        raise ValueError("kept ids outside the Unigram vocabulary must come after it")
    unk_id = state["model"].get("unk_id")
    if unk_id is not None and unk_id not in old_to_new:
        raise ValueError(f"the unknown piece (id {unk_id}) must be kept")
    state["model"]["vocab"] = [vocab[i] for i in in_vocab]
    if unk_id is not None:
        state["model"]["unk_id"] = old_to_new[unk_id]
    added = []
    for token in state.get("added_tokens") or []:
        if token["id"] in old_to_new:
            added.append({**token, "id": old_to_new[token["id"]]})
    state["added_tokens"] = added
    state["post_processor"] = _remap_processor(state.get("post_processor"), old_to_new)
    if state.get("padding") and "pad_id" in state["padding"]:
        state["padding"]["pad_id"] = old_to_new.get(state["padding"]["pad_id"], 0)
    backend = Tokenizer.from_str(json.dumps(state))
    special = {}
    for name in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        value = getattr(tokenizer, name, None)
        if value is not None and backend.token_to_id(str(value)) is not None:
            special[name] = str(value)
    extra = [str(t) for t in _extra_special_tokens(tokenizer) if backend.token_to_id(str(t)) is not None]
    new = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=tokenizer.model_max_length,
        padding_side=tokenizer.padding_side,
        truncation_side=tokenizer.truncation_side,
        clean_up_tokenization_spaces=getattr(tokenizer, "clean_up_tokenization_spaces", False),
        additional_special_tokens=extra,
        **special,
    )
    if len(new) != len(kept_ids):
        raise ValueError(f"pruned tokenizer has {len(new)} entries, expected {len(kept_ids)} (a special token was added)")
    return new


def prune_model_embeddings(model, kept_ids: Sequence[int], output_class=None):
    """A copy of ``model`` whose input embedding and output head hold only rows ``kept_ids``.

    A tied head stays tied, an untied one stays untied (``config.tie_word_embeddings`` is set to match);
    vocabulary-sized biases (BERT's ``cls.predictions.bias``, BART's ``final_logits_bias``) are sliced too.
    ``config.vocab_size``, the special token ids of the config and generation config, and the id map
    (``config.original_vocab_size``, ``config.original_token_ids``) are updated.
    """
    import torch
    from torch import nn

    kept_ids = [int(i) for i in kept_ids]
    if not kept_ids:
        raise ValueError("kept_ids is empty")
    inp = model.get_input_embeddings()
    rows, dim = inp.weight.shape
    if max(kept_ids) >= rows:
        raise ValueError(f"kept id {max(kept_ids)} is outside the model's embedding ({rows} rows)")
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is inp.weight
    old_to_new = {old: new for new, old in enumerate(kept_ids)}

    model = copy.deepcopy(model)
    inp = model.get_input_embeddings()
    out = model.get_output_embeddings()
    index = torch.tensor(kept_ids, dtype=torch.long, device=inp.weight.device)
    with torch.no_grad():
        padding_idx = old_to_new.get(inp.padding_idx) if inp.padding_idx is not None else None
        new_inp = nn.Embedding(len(kept_ids), dim, padding_idx=padding_idx, device=inp.weight.device, dtype=inp.weight.dtype)
        new_inp.weight.copy_(inp.weight[index])
        new_inp.weight.requires_grad_(inp.weight.requires_grad)
        model.set_input_embeddings(new_inp)
        sliced = {id(inp.weight), id(new_inp.weight)}
        if out is not None:
            sliced.add(id(out.weight))
            has_bias = getattr(out, "bias", None) is not None
            new_out = nn.Linear(dim, len(kept_ids), bias=has_bias, device=out.weight.device, dtype=out.weight.dtype)
            if tied:
                new_out.weight = new_inp.weight
            else:
                new_out.weight.copy_(out.weight[index])
            if has_bias:
                sliced.add(id(out.bias))
                new_out.bias.copy_(out.bias[index])
            model.set_output_embeddings(new_out)
        _slice_vocab_biases(model, rows, index, sliced)
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for cfg in {id(config): config, id(text_config): text_config}.values():
        cfg.vocab_size = len(kept_ids)
        cfg.tie_word_embeddings = bool(tied)
        _remap_token_ids(cfg, old_to_new)
    if getattr(model, "generation_config", None) is not None:
        _remap_token_ids(model.generation_config, old_to_new)
    original_vocab = getattr(config, "original_vocab_size", None)
    previous = decode_id_map(getattr(config, "original_token_ids", None))
    # Pruning twice composes the maps, so ids always point into the very first vocabulary.
    config.original_token_ids = encode_id_map([previous[i] for i in kept_ids] if previous else kept_ids)
    config.original_vocab_size = original_vocab or rows
    if output_class is None and getattr(config, "model_type", None) == "mt5" and out is not None:
        from .modeling.idt5 import IdT5ForConditionalGeneration

        output_class = IdT5ForConditionalGeneration
    if output_class is not None and not isinstance(model, output_class):
        if not hasattr(output_class, "from_sliced"):
            raise ValueError(f"output_class {output_class.__name__} has no from_sliced(model, kept_ids, vocab_size)")
        model = output_class.from_sliced(model, config.original_token_ids, config.original_vocab_size)
    return model


def encode_id_map(ids: Sequence[int]) -> str:
    """Compact text form of an id list, as stored in ``config.original_token_ids``: ``"0-3,7,9-12"``.

    Inclusive ranges of consecutive ids, comma-separated. A config holding a 20k-int list is deep-copied and
    type-checked element by element many times per ``from_pretrained``; a string is copied in O(1).
    """
    parts, ids = [], [int(i) for i in ids]
    start = prev = None
    for i in ids:
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def decode_id_map(value) -> list[int] | None:
    """The id list of :func:`encode_id_map`'s text (a list of ints passes through; ``None`` stays ``None``).

    Vectorised: a pruned XLM-R map has ~20k entries and is decoded on every ``from_pretrained``.
    """
    import re

    import numpy as np

    if value is None:
        return None
    if not isinstance(value, str):
        return [int(i) for i in value]
    value = value.strip(",")
    if not value:
        return []
    if not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", value):
        bad = next((p for p in value.split(",") if not re.fullmatch(r"\d+(-\d+)?", p)), value)
        raise ValueError(f"bad id map entry {bad!r}: expected 'N' or 'N-M'")
    numbers = np.fromstring(value.replace("-", ","), dtype=np.int64, sep=",")
    chars = np.frombuffer(value.encode("ascii"), dtype=np.uint8)
    separators = chars[(chars == ord(",")) | (chars == ord("-"))]
    is_end = np.zeros(len(numbers), dtype=bool)  # the number after a '-' closes a range
    is_end[1:] = separators == ord("-")
    starts = numbers[~is_end]
    ends = starts.copy()
    range_start = np.flatnonzero(is_end) - 1  # positions (in numbers) of the ranges' first ids
    ends[np.searchsorted(np.flatnonzero(~is_end), range_start)] = numbers[is_end]
    if np.any(ends < starts):
        i = int(np.flatnonzero(ends < starts)[0])
        raise ValueError(f"bad id map range '{starts[i]}-{ends[i]}': the end is before the start")
    lengths = ends - starts + 1
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return (np.arange(int(lengths.sum())) + offsets).tolist()


def vocabulary_coverage(tokenizer, corpus: Iterable[str], batch_size: int = 1000) -> dict:
    """Token and word coverage of ``tokenizer`` on ``corpus``: how much of it tokenizes without ``<unk>``."""
    backend = _backend(tokenizer)
    unk = tokenizer.unk_token_id
    tokens = unk_tokens = words = unk_words = 0
    texts = list(corpus)
    for start in range(0, len(texts), batch_size):
        for enc in backend.encode_batch(texts[start : start + batch_size], add_special_tokens=False):
            tokens += len(enc.ids)
            unk_tokens += sum(1 for i in enc.ids if i == unk)
            word_ids = [w for w in enc.word_ids if w is not None]
            bad = {w for w, i in zip(enc.word_ids, enc.ids) if i == unk and w is not None}
            words += len(set(word_ids))
            unk_words += len(bad)
    return {
        "tokens": tokens,
        "token_coverage": 1 - unk_tokens / max(1, tokens),
        "words": words,
        "word_coverage": 1 - unk_words / max(1, words),
        "tokens_per_word": tokens / max(1, words),
    }


# -- helpers -------------------------------------------------------------------------------------------


def _backend(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; pruning needs a tokenizers-backed (Unigram) one"
        )
    return backend


def _unigram_state(tokenizer) -> dict:
    state = json.loads(_backend(tokenizer).to_str())
    kind = state.get("model", {}).get("type")
    if kind != "Unigram":
        raise ValueError(
            f"vocabulary pruning needs a Unigram (SentencePiece) tokenizer model, got {kind!r}; "
            "BPE and WordPiece vocabularies are not supported"
        )
    return state


def _mandatory_ids(tokenizer, state) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids.update(t["id"] for t in state.get("added_tokens") or [])
    model = state["model"]
    if model.get("unk_id") is not None:
        ids.add(model["unk_id"])
    for i, (piece, _score) in enumerate(model["vocab"]):
        if model.get("byte_fallback") and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            ids.add(i)
    return ids


def _extra_special_tokens(tokenizer) -> list:
    for name in ("additional_special_tokens", "extra_special_tokens"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, (list, tuple)) and value:
            return list(value)
    return []


def _normalized_characters(tokenizer, corpus: Iterable[str]) -> set[str]:
    normalizer = _backend(tokenizer).normalizer
    chars: set[str] = set()
    for text in corpus:
        chars.update(normalizer.normalize_str(text) if normalizer is not None else text)
    chars.discard(" ")
    return chars


def _remap_processor(node, old_to_new: dict[int, int]):
    """Remap the ids in a serialized post-processor (Template, Roberta, Bert, Sequence)."""
    if node is None:
        return None
    node = copy.deepcopy(node)
    kind = node.get("type")
    if kind == "Sequence":
        node["processors"] = [_remap_processor(p, old_to_new) for p in node.get("processors", [])]
    elif kind == "TemplateProcessing":
        for spec in (node.get("special_tokens") or {}).values():
            spec["ids"] = [_remap_one(i, old_to_new, spec.get("id")) for i in spec.get("ids", [])]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            if key in node:
                token, old = node[key]
                node[key] = [token, _remap_one(old, old_to_new, token)]
    return node


def _remap_one(old: int, old_to_new: dict[int, int], what) -> int:
    if old not in old_to_new:
        raise ValueError(f"the post-processor uses special token {what!r} (id {old}), which was not kept")
    return old_to_new[old]


def _remap_token_ids(cfg, old_to_new: dict[int, int]) -> None:
    for name in list(vars(cfg)):
        if not name.endswith("_token_id") and not name.endswith("_token_ids"):
            continue
        value = getattr(cfg, name)
        if isinstance(value, int):
            setattr(cfg, name, old_to_new.get(value, value))
        elif isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
            setattr(cfg, name, type(value)(old_to_new.get(v, v) for v in value))


def _slice_vocab_biases(model, rows: int, index, done: set[int]) -> None:
    """Slice 1-D vocabulary-sized biases and ``final_logits_bias``-style buffers not handled yet."""
    import torch

    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if id(param) in done or param.dim() != 1 or param.shape[0] != rows or "bias" not in name:
                continue
            new = torch.nn.Parameter(param.detach()[index].clone(), requires_grad=param.requires_grad)
            setattr(module, name, new)
            done.add(id(param))
            # BERT's decoder.bias is the same Parameter as predictions.bias: keep them one object.
            for other in model.modules():
                for oname, oparam in list(other.named_parameters(recurse=False)):
                    if oparam is param:
                        setattr(other, oname, new)
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and buf.shape and buf.shape[-1] == rows and "bias" in name:
                module.register_buffer(name, buf[..., index].clone())


# -- SentencePiece model files (read without protobuf) ---------------------------------------------------


def read_sentencepiece_model(path) -> dict:
    """Read a SentencePiece ``.model`` file: ``{"pieces": [(piece, score, type)], "precompiled_charsmap":
    bytes, "byte_fallback": bool}`` (``type``: 1 normal, 2 unknown, 3 control, 4 user-defined, 6 byte).

    A small protobuf wire-format reader, so that neither ``protobuf`` nor the slow tokenizer is needed.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    pieces, charsmap, byte_fallback = [], b"", False
    for field_no, value in _proto_fields(data):
        if field_no == 1:  # ModelProto.pieces
            piece, score, kind = "", 0.0, 1
            for f, v in _proto_fields(value):
                if f == 1:
                    piece = v.decode("utf-8")
                elif f == 2:
                    score = v
                elif f == 3:
                    kind = v
            pieces.append((piece, score, kind))
        elif field_no == 2:  # TrainerSpec
            for f, v in _proto_fields(value):
                if f == 35:
                    byte_fallback = bool(v)
        elif field_no == 3:  # NormalizerSpec
            for f, v in _proto_fields(value):
                if f == 2:
                    charsmap = bytes(v)
    return {"pieces": pieces, "precompiled_charsmap": charsmap, "byte_fallback": byte_fallback}


def t5_tokenizer_from_sentencepiece(path, extra_ids: int = 100, **kwargs):
    """A transformers ``T5Tokenizer`` (fast, Unigram) from a SentencePiece model trained with
    ``pad_id=0, eos_id=1, unk_id=2, bos_id=-1`` (the T5/mT5 layout), plus ``extra_ids`` sentinels."""
    from transformers import T5Tokenizer

    spm = read_sentencepiece_model(path)
    vocab = [(piece, float(score)) for piece, score, _ in spm["pieces"]]
    if [p for p, _ in vocab[:3]] != ["<pad>", "</s>", "<unk>"]:
        raise ValueError(f"{path}: expected <pad>, </s>, <unk> as ids 0, 1, 2 (the T5 layout), got {vocab[:3]}")
    vocab += [(f"<extra_id_{i}>", 0.0) for i in range(extra_ids - 1, -1, -1)]
    return T5Tokenizer(
        vocab=vocab, _spm_precompiled_charsmap=spm["precompiled_charsmap"] or None, extra_ids=extra_ids, **kwargs
    )


def _proto_fields(data: bytes):
    """Yield ``(field_number, value)`` of a protobuf message (varints as int, 32-bit as float, bytes)."""
    import struct

    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        field_no, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value = struct.unpack_from("<d", data, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value = data[pos : pos + length]
            pos += length
        elif wire == 5:
            value = struct.unpack_from("<f", data, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field_no, value


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
