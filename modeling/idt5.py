"""idT5 models: transformers' MT5 stack with a pruned vocabulary and an lm_head that stays untied.

idT5 (Fuadi et al., arXiv 2302.00856, Sec. III-A) changes nothing in mT5 but the vocabulary: the encoder,
decoder and relative attention are mT5's, reused here by subclassing. What is ours:

* :class:`IdT5Config` honours ``tie_word_embeddings`` (``MT5Config`` forces ``True`` in transformers 5).
* transformers 5 ties ``encoder.embed_tokens``/``decoder.embed_tokens`` to ``shared`` only through the same
  ``tie_word_embeddings`` flag, so an untied MT5 would also lose the encoder/decoder embedding sharing.
  :meth:`IdT5PreTrainedModel.get_expanded_tied_weights_keys` always shares the input embeddings and ties
  ``lm_head`` only when the config says so.
* :meth:`IdT5ForConditionalGeneration.from_mt5` prunes an (m)T5 model and its tokenizer on a corpus
  (through :func:`hf_plugins.vocab.prune_vocabulary`), and :meth:`IdT5PreTrainedModel.to_original_ids` maps
  ids or logits back to the original vocabulary.
"""

from __future__ import annotations

import torch
from transformers import MT5EncoderModel, MT5ForConditionalGeneration
from transformers.models.mt5.modeling_mt5 import MT5PreTrainedModel

from ..configuration.idt5 import IdT5Config

_INPUT_EMBEDDING_TIES = {
    "encoder.embed_tokens.weight": "shared.weight",
    "decoder.embed_tokens.weight": "shared.weight",
}


class IdT5PreTrainedModel(MT5PreTrainedModel):
    """Base class of the idT5 models: :class:`IdT5Config`, untied-head aware weight tying, id mapping."""

    config_class = IdT5Config
    config: IdT5Config
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MT5Block"]

    def get_expanded_tied_weights_keys(self, all_submodels: bool = False) -> dict:
        """Which parameters share storage: the input embeddings always, ``lm_head`` only if tied in the config."""
        if all_submodels:
            return super().get_expanded_tied_weights_keys(all_submodels=True)
        if not isinstance(self, (IdT5ForConditionalGeneration, IdT5EncoderModel)):
            return {}
        names = {n for n, _ in self.named_parameters(remove_duplicate=False)}
        keys = {k: v for k, v in _INPUT_EMBEDDING_TIES.items() if k in names}
        if self.config.tie_word_embeddings and "lm_head.weight" in names:
            keys["lm_head.weight"] = "shared.weight"
        return keys

    def _check_input_ids(self, input_ids, name="input_ids") -> None:
        if input_ids is None:
            return
        if input_ids.dim() != 2:
            raise ValueError(f"{name} must have shape (batch, sequence_length), got {tuple(input_ids.shape)}")
        if input_ids.numel() and (int(input_ids.max()) >= self.config.vocab_size or int(input_ids.min()) < 0):
            raise ValueError(
                f"{name} holds id {int(input_ids.max())} but this idT5 vocabulary has {self.config.vocab_size} "
                "pieces (0..vocab_size-1): tokenize with the pruned tokenizer, or map original ids with "
                "config.original_to_new"
            )

    def to_original_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Map new ids (any shape) to the ids they had in the original vocabulary."""
        table = self._original_id_table(ids.device)
        return table[ids]

    def logits_to_original(self, logits: torch.Tensor, fill_value: float = float("-inf")) -> torch.Tensor:
        """Scatter logits over the pruned vocabulary into the original vocabulary (others get ``fill_value``)."""
        size = self.config.original_vocab_size or self.config.vocab_size
        out = logits.new_full((*logits.shape[:-1], size), fill_value)
        out[..., self._original_id_table(logits.device)] = logits
        return out

    def _original_id_table(self, device) -> torch.Tensor:
        ids = self.config.original_ids
        if ids is None:
            return torch.arange(self.config.vocab_size, device=device)
        return torch.tensor(ids, dtype=torch.long, device=device)


class IdT5ForConditionalGeneration(IdT5PreTrainedModel, MT5ForConditionalGeneration):
    r"""mT5 with a one-language vocabulary (idT5), for text-to-text generation.

    Example::

        >>> from transformers import AutoModelForSeq2SeqLM
        >>> import hf_plugins
        >>> model = AutoModelForSeq2SeqLM.from_pretrained("path/to/idt5")           # doctest: +SKIP
        >>> pruned = hf_plugins.IdT5ForConditionalGeneration.from_mt5(mt5, tok, corpus)  # doctest: +SKIP
    """

    config_class = IdT5Config

    def __init__(self, config: IdT5Config):
        super().__init__(config)
        # A pre-hook, not a forward override: Trainer reads `labels` from forward's signature.
        self.register_forward_pre_hook(_validate_ids_hook, with_kwargs=True)

    @classmethod
    def from_mt5(cls, model, tokenizer, corpus, **prune_kwargs):
        """Prune an (m)T5 ``model`` and its ``tokenizer`` on ``corpus`` (texts of the kept language).

        Returns a :class:`hf_plugins.vocab.PrunedVocabulary` whose ``model`` is an
        :class:`IdT5ForConditionalGeneration` and whose ``tokenizer`` holds only the kept pieces. Keyword
        arguments go to :func:`hf_plugins.vocab.prune_vocabulary` (``min_frequency``, ``keep``...).
        """
        from ..vocab import prune_vocabulary

        return prune_vocabulary(model, tokenizer, corpus, output_class=cls, **prune_kwargs)

    @classmethod
    def from_sliced(cls, model, kept_ids, original_vocab_size: int) -> "IdT5ForConditionalGeneration":
        """Wrap an already sliced T5/MT5 conditional-generation ``model`` (rows ``kept_ids``) as idT5.

        The weights are moved, not copied; ``lm_head`` keeps its own storage unless ``model`` had it tied.
        """
        from ..vocab import decode_id_map

        kept_ids = decode_id_map(kept_ids)
        tied = model.lm_head.weight is model.shared.weight
        data = model.config.to_dict()
        for key in ("model_type", "architectures", "transformers_version", "tie_word_embeddings", "auto_map"):
            data.pop(key, None)
        data.update(
            vocab_size=len(kept_ids),
            tie_word_embeddings=tied,
            original_vocab_size=int(original_vocab_size),
            original_token_ids=kept_ids,
        )
        config = IdT5Config(**data)
        with torch.device("meta"):
            new = cls(config)
        state = model.state_dict()
        new.load_state_dict(state, strict=False, assign=True)
        new.shared = model.shared
        new.encoder.set_input_embeddings(model.shared)
        new.decoder.set_input_embeddings(model.shared)
        new.lm_head = model.lm_head if not tied else new.lm_head
        if tied:
            new.lm_head.weight = new.shared.weight
        leftover = [n for n, p in list(new.named_parameters()) + list(new.named_buffers()) if p.is_meta]
        if leftover:
            raise ValueError(f"could not move these weights into idT5: {leftover[:5]}")
        new.generation_config = model.generation_config
        new.train(model.training)
        return new


class IdT5EncoderModel(IdT5PreTrainedModel, MT5EncoderModel):
    """The encoder of an idT5 model (for embeddings or classification heads on top)."""

    config_class = IdT5Config

    def __init__(self, config: IdT5Config):
        super().__init__(config)
        self.register_forward_pre_hook(_validate_ids_hook, with_kwargs=True)


def _validate_ids_hook(module, args, kwargs):
    module._check_input_ids(args[0] if args else kwargs.get("input_ids"))
    module._check_input_ids(kwargs.get("decoder_input_ids"), "decoder_input_ids")


__all__ = ["IdT5Config", "IdT5EncoderModel", "IdT5ForConditionalGeneration", "IdT5PreTrainedModel"]
