"""Data collators for long-document masked-LM and replaced-token-detection pretraining.

:class:`DataCollatorForRTD` extends transformers' ``DataCollatorForLanguageModeling`` with what Longformer and
ELECTRA-style pretraining need (BudgetLongformer, Niklaus & Giofre 2022):

* padding to a multiple of the attention window (Longformer's sliding-window attention needs it; transformers
  pads inside the model otherwise, with a warning, on every forward);
* a ``global_attention_mask`` with global attention on the first token (``<s>``);
* a whole-word option that works with byte-level BPE (RoBERTa / Longformer tokenizers), SentencePiece and
  WordPiece vocabularies: words are found from the token strings (``Ġ``/``▁`` start a word, ``##`` continues
  one), not from character offsets, which are contiguous in byte-level BPE and would make one "word" of a whole
  document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from transformers import DataCollatorForLanguageModeling


@dataclass
class DataCollatorForRTD(DataCollatorForLanguageModeling):
    """Masks ``mlm_probability`` of the tokens and pads for Longformer.

    Returns ``input_ids`` (masked), ``labels`` (original token at masked positions, -100 elsewhere),
    ``attention_mask`` and ``global_attention_mask``: what both ``LongformerRTDForPreTraining`` and
    ``LongformerForMaskedLM`` take.

    Args:
        tokenizer: a tokenizer with a mask token.
        attention_window: pad every batch to a multiple of this (Longformer's ``attention_window``, max over layers).
        max_length: truncate longer examples to this many tokens (None: no truncation).
        mlm_probability: the masking rate (15% in ELECTRA-base and BudgetLongformer).
        whole_word_mask: mask whole words (every token of a chosen word).
        mask_replace_prob / random_replace_prob: of the masked tokens, the share replaced by ``<mask>`` and by a
            random token; the rest keep the original token. ELECTRA's defaults are 0.85 / 0.0 [memory of the
            ELECTRA code's ``mask()`` helper]; BERT/RoBERTa MLM uses 0.8 / 0.1.
        global_attention_first_token: put global attention on the first token.
        seed: seed of the collator's own generator (reproducible masks).
    """

    attention_window: int = 512
    max_length: int | None = None
    mask_replace_prob: float = 0.85
    random_replace_prob: float = 0.0
    global_attention_first_token: bool = True

    def __post_init__(self):
        if not isinstance(self.attention_window, int) or self.attention_window <= 0:
            raise ValueError(f"attention_window={self.attention_window!r}: expected a positive int")
        if self.max_length is not None and self.max_length <= 0:
            raise ValueError(f"max_length={self.max_length!r}: expected a positive int or None")
        if not self.mlm:
            raise ValueError("mlm=False: DataCollatorForRTD always masks (it prepares MLM/RTD inputs)")
        if self.pad_to_multiple_of is None:
            self.pad_to_multiple_of = self.attention_window
        elif self.pad_to_multiple_of % self.attention_window:
            raise ValueError(
                f"pad_to_multiple_of={self.pad_to_multiple_of}: must be a multiple of attention_window={self.attention_window}"
            )
        # The parent's whole-word masking needs character offsets; this class finds words from token strings.
        self._whole_words = bool(self.whole_word_mask)
        self.whole_word_mask = False
        super().__post_init__()
        self._word_start = _word_start_table(self.tokenizer) if self._whole_words else None

    def torch_call(self, examples: list[Any]) -> dict[str, Any]:
        examples = [self._truncate(e) for e in examples]
        if self.seed is not None and self.generator is None:
            self.create_rng("pt")
        if isinstance(examples[0], Mapping):
            keep = ("input_ids", "attention_mask", "special_tokens_mask")
            examples = [{k: v for k, v in e.items() if k in keep} for e in examples]
        batch = super().torch_call(examples) if not self._whole_words else self._whole_word_call(examples)
        input_ids = batch["input_ids"]
        if "attention_mask" not in batch:
            # Labels of padding are -100 already; the pad token itself marks padding.
            batch["attention_mask"] = (input_ids != self.tokenizer.pad_token_id).long()
            batch["attention_mask"][batch["labels"] != -100] = 1
        global_attention_mask = torch.zeros_like(input_ids)
        if self.global_attention_first_token:
            global_attention_mask[:, 0] = 1
        batch["global_attention_mask"] = global_attention_mask
        return batch

    # -- whole words -------------------------------------------------------------------------------------

    def _whole_word_call(self, examples: list[Any]) -> dict[str, Any]:
        """Pad, choose words with probability ``mlm_probability``, mask every token of the chosen words."""
        from transformers.data.data_collator import _torch_collate_batch, pad_without_fast_tokenizer_warning

        if isinstance(examples[0], Mapping):
            batch = pad_without_fast_tokenizer_warning(
                self.tokenizer, examples, return_tensors="pt", pad_to_multiple_of=self.pad_to_multiple_of
            )
        else:
            batch = {"input_ids": _torch_collate_batch(examples, self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)}
        special = batch.pop("special_tokens_mask", None)
        inputs = batch["input_ids"]
        if special is None:
            special = torch.tensor(
                [self.tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True) for row in inputs.tolist()],
                dtype=torch.bool,
            )
        special = special.bool()
        start_table, space_table = (t.to(inputs.device) for t in self._word_start)
        starts = start_table[inputs] | special
        # A token after a special token or after a bare whitespace token ("Ċ" newline) starts a word as well.
        starts[:, 1:] |= special[:, :-1] | space_table[inputs[:, :-1]]
        word_id = torch.cumsum(starts.long(), dim=1) - 1  # (B, L), >= 0 once the first start is seen
        word_id = word_id.clamp(min=0)
        n_words = int(word_id.max()) + 1
        chosen = torch.bernoulli(torch.full((inputs.shape[0], n_words), self.mlm_probability), generator=self.generator)
        masked = chosen.bool().gather(1, word_id) & ~special
        labels = inputs.clone()
        labels[~masked] = -100
        replace = torch.bernoulli(torch.full(inputs.shape, self.mask_replace_prob), generator=self.generator).bool()
        inputs = inputs.clone()
        inputs[masked & replace] = self.tokenizer.mask_token_id
        rest = 1.0 - self.mask_replace_prob
        if self.random_replace_prob > 0 and rest > 0:
            rand = torch.bernoulli(torch.full(inputs.shape, self.random_replace_prob / rest), generator=self.generator).bool()
            pick = masked & ~replace & rand
            words = torch.randint(len(self.tokenizer), inputs.shape, dtype=torch.long, generator=self.generator)
            inputs[pick] = words[pick]
        batch["input_ids"], batch["labels"] = inputs, labels
        return batch

    def _truncate(self, example: Any) -> Any:
        if self.max_length is None:
            return example
        if isinstance(example, Mapping):
            return {k: (v[: self.max_length] if isinstance(v, (list, torch.Tensor)) else v) for k, v in example.items()}
        return example[: self.max_length]


def _word_start_table(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Two booleans per vocabulary id: does this token start a word; is it whitespace only (so the next starts one)?"""
    vocab_size = len(tokenizer)
    table = torch.zeros(vocab_size, dtype=torch.bool)
    space = torch.zeros(vocab_size, dtype=torch.bool)
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    wordpiece = any(t is not None and t.startswith("##") for t in tokens)
    for i, tok in enumerate(tokens):
        if tok is None:
            continue
        if wordpiece:
            table[i] = not tok.startswith("##")
        else:
            # Byte-level BPE marks a leading space with "Ġ" (and newlines "Ċ"); SentencePiece with "▁".
            table[i] = tok[:1] in _SPACE_MARKS or not tok[:1].isalnum()
            space[i] = bool(tok) and all(ch in _SPACE_MARKS for ch in tok)
    return table, space


_SPACE_MARKS = ("Ġ", "Ċ", "ĉ", "▁")


__all__ = ["DataCollatorForRTD"]
