"""BudgetLongformer (Niklaus & Giofre 2022, arXiv 2211.17135): Longformer pretrained with ELECTRA's
replaced-token detection (Clark et al. 2020, "ELECTRA", Section 2).

One forward of :class:`LongformerRTDForPreTraining`:

1. the generator, a narrow Longformer masked LM, predicts the masked tokens (``L_MLM``);
2. replacements are sampled from its softmax, without gradient (ELECTRA Section 2: "we do not back-propagate
   the discriminator loss through the generator");
3. the discriminator, a full Longformer, labels every non-padding token as original (0) or replaced (1), where
   "replaced" means exactly "differs from the original token" (a sample equal to the original counts as original);
4. ``loss = L_MLM + lambda * L_Disc`` with ``lambda = 50`` (ELECTRA Eq. 1 and Section 3.1).

Generator and discriminator share the token, position and token-type embeddings and their LayerNorm (ELECTRA
Section 3.2, "weight sharing"); the generator, which is narrower, reads them through a linear projection (as
ELECTRA's ``embeddings_project``) and its output layer is tied to the shared token embeddings. Both are
transformers' own ``LongformerModel`` (the attention is switched to the exact, faster
:class:`~hf_plugins.modeling.longformer_attention.FastLongformerSelfAttention` by ``attention_backend="fast"``).

Only the discriminator is kept: :meth:`LongformerRTDForPreTraining.export_discriminator` writes it as a plain
``LongformerModel`` checkpoint and :func:`longformer_to_led` warm-starts an LED encoder-decoder from it (the
BudgetLongformer model card: a randomly initialised decoder worked better on BillSum).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import LEDConfig, LEDForConditionalGeneration, LongformerModel, PreTrainedModel
from transformers import initialization as init
from transformers.models.electra.modeling_electra import ElectraDiscriminatorPredictions
from transformers.models.longformer.modeling_longformer import LongformerLMHead
from transformers.utils import ModelOutput

from .._io import atomic_directory
from ..configuration.longformer_rtd import LongformerRTDConfig
from .longformer_attention import set_attention_backend


@dataclass
class LongformerRTDForPreTrainingOutput(ModelOutput):
    """Output of :class:`LongformerRTDForPreTraining`.

    Args:
        loss: ``mlm_loss + rtd_weight * rtd_loss`` (only when ``labels`` are given).
        mlm_loss: the generator's cross-entropy on the masked positions.
        rtd_loss: the discriminator's binary cross-entropy, averaged over every non-padding token.
        logits: the discriminator's per-token logits ``(batch, seq_len)``; > 0 means "replaced".
        generator_logits: the generator's logits at the masked positions ``(num_masked, vocab_size)``.
        rtd_labels: 1 where the discriminator's input differs from the original token ``(batch, seq_len)``.
        discriminator_input_ids: the corrupted sequence the discriminator saw.
        hidden_states / attentions / global_attentions: the discriminator's, when asked for.
    """

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    rtd_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    generator_logits: torch.Tensor | None = None
    rtd_labels: torch.Tensor | None = None
    discriminator_input_ids: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    global_attentions: tuple[torch.Tensor, ...] | None = None


class LongformerRTDPreTrainedModel(PreTrainedModel):
    """Base class: config class, weight initialisation, checkpointing flags."""

    config_class = LongformerRTDConfig
    config: LongformerRTDConfig
    base_model_prefix = "discriminator"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LongformerLayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LongformerLMHead):
            init.zeros_(module.bias)


class LongformerRTDForPreTraining(LongformerRTDPreTrainedModel):
    """Generator + discriminator Longformers trained jointly with replaced-token detection.

    Inputs come from :class:`~hf_plugins.data.collators.DataCollatorForRTD`: ``input_ids`` with some tokens
    masked, ``labels`` holding the original token at the masked positions and -100 elsewhere,
    ``attention_mask`` and ``global_attention_mask`` (the first token). Without ``labels`` the model only runs the
    discriminator on ``input_ids`` as given (to detect replaced tokens in a text), like ``ElectraForPreTraining``.
    """

    _tied_weights_keys = {
        "generator_lm_head.decoder.weight": "discriminator.embeddings.word_embeddings.weight",
        "generator_lm_head.decoder.bias": "generator_lm_head.bias",
    }

    def __init__(self, config: LongformerRTDConfig):
        super().__init__(config)
        disc_config = config.discriminator_config()
        gen_config = config.generator_config()
        self.discriminator = LongformerModel(disc_config, add_pooling_layer=False)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(disc_config)
        self.generator = LongformerModel(gen_config, add_pooling_layer=False)
        # ELECTRA Section 3.2: the generator shares the discriminator's embeddings and projects them to its width.
        self.generator.embeddings = _SharedEmbeddingsProjection(
            self.discriminator.embeddings, config.hidden_size, gen_config.hidden_size
        )
        # The generator's MLM head maps back to the shared embedding width, its output layer is the shared
        # token embedding matrix (tied below through _tied_weights_keys).
        self.generator_lm_head = LongformerLMHead(disc_config)
        self.generator_lm_head.dense = nn.Linear(gen_config.hidden_size, config.hidden_size)
        set_attention_backend(self, config.attention_backend)
        self.post_init()

    def get_input_embeddings(self):
        return self.discriminator.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.discriminator.embeddings.word_embeddings = value

    def get_output_embeddings(self):
        return self.generator_lm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.generator_lm_head.decoder = new_embeddings

    def set_attention_backend(self, backend: str) -> None:
        """Switch both Longformers between ``"fast"`` and ``"hf"`` attention (same weights, same outputs)."""
        set_attention_backend(self, backend)
        self.config.attention_backend = backend

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        global_attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> LongformerRTDForPreTrainingOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            The original token at each masked position, -100 elsewhere (the collator's MLM labels). Given them,
            the model runs the generator, samples replacements and returns both losses.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        _check_inputs(input_ids, attention_mask=attention_mask, global_attention_mask=global_attention_mask,
                      token_type_ids=token_type_ids, position_ids=position_ids, labels=labels)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        common = dict(
            attention_mask=attention_mask,
            global_attention_mask=global_attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
        )

        mlm_loss = generator_logits = rtd_labels = None
        disc_input_ids = input_ids
        if labels is not None:
            masked = labels != -100
            original = torch.where(masked, labels, input_ids)
            gen_hidden = self.generator(input_ids, **common).last_hidden_state
            # ELECTRA computes the generator's logits at the masked positions only.
            generator_logits = self.generator_lm_head(gen_hidden[masked])
            if generator_logits.shape[0] > 0:
                mlm_loss = F.cross_entropy(generator_logits.float(), labels[masked])
            else:  # nothing masked: a zero that still touches the generator (DDP needs every parameter used)
                mlm_loss = gen_hidden.sum() * 0.0
            with torch.no_grad():
                sampled = _sample(generator_logits.detach().float(), self.config.sampling_temperature)
            disc_input_ids = input_ids.clone()
            disc_input_ids[masked] = sampled
            rtd_labels = (disc_input_ids != original).long()

        disc_outputs = self.discriminator(
            disc_input_ids,
            **common,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.discriminator_predictions(disc_outputs.last_hidden_state)

        loss = rtd_loss = None
        if labels is not None:
            active = attention_mask.bool()
            rtd_loss = F.binary_cross_entropy_with_logits(logits[active].float(), rtd_labels[active].float())
            loss = mlm_loss + self.config.rtd_weight * rtd_loss

        output = LongformerRTDForPreTrainingOutput(
            loss=loss,
            mlm_loss=mlm_loss,
            rtd_loss=rtd_loss,
            logits=logits,
            generator_logits=generator_logits,
            rtd_labels=rtd_labels,
            discriminator_input_ids=disc_input_ids if labels is not None else None,
            hidden_states=disc_outputs.hidden_states,
            attentions=disc_outputs.attentions,
            global_attentions=disc_outputs.global_attentions,
        )
        return output if return_dict else output.to_tuple()

    # -- what is kept after pretraining ------------------------------------------------------------------

    def export_discriminator(self, save_directory: str | os.PathLike, tokenizer=None) -> str:
        """Write the discriminator as a plain ``LongformerModel`` checkpoint (config + safetensors).

        transformers loads it without hf-plugins: ``LongformerModel.from_pretrained(dir)`` (identical hidden
        states) or ``LongformerForMaskedLM`` / ``LongformerForSequenceClassification.from_pretrained(dir)``
        (the encoder loads, the task head is new). The folder is written to a temporary sibling, then renamed.
        """
        save_directory = os.path.abspath(os.fspath(save_directory))
        with atomic_directory(save_directory) as tmp:
            self.discriminator.config.architectures = ["LongformerModel"]
            self.discriminator.save_pretrained(tmp, safe_serialization=True)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
        return save_directory

    def to_led(self, **kwargs) -> LEDForConditionalGeneration:
        """Warm-start an ``LEDForConditionalGeneration`` from the discriminator; see :func:`longformer_to_led`."""
        return longformer_to_led(self.discriminator, **kwargs)


def longformer_to_led(
    longformer: LongformerModel,
    decoder_layers: int | None = None,
    decoder_init: str = "random",
    max_decoder_position_embeddings: int = 1024,
    attention_backend: str = "fast",
) -> LEDForConditionalGeneration:
    """Build an LED encoder-decoder whose encoder is ``longformer`` (for long-document summarisation).

    The encoder is an exact copy: token embeddings, positions (shifted by RoBERTa's ``pad_token_id + 1`` offset,
    with the token-type-0 embedding folded in, since LED has no token types), embedding LayerNorm and every
    layer (Longformer and LED encoder layers are both post-LayerNorm: attention, residual, LayerNorm, FFN,
    residual, LayerNorm). LED's LayerNorms use eps 1e-5, so the copy is exact when the Longformer's
    ``layer_norm_eps`` is 1e-5 (LongformerRTDConfig's default, and allenai/longformer-base-4096's).

    Args:
        decoder_layers: decoder depth (default: the encoder's).
        decoder_init: ``"random"`` (the BudgetLongformer model card: a randomly initialised decoder did better on
            BillSum) or ``"encoder"`` (decoder self-attention, FFN, LayerNorms and positions copied from the
            encoder; cross-attention random).
        max_decoder_position_embeddings: decoder length.
        attention_backend: ``"fast"`` or ``"hf"`` for the LED encoder's self-attention.
    """
    if decoder_init not in ("random", "encoder"):
        raise ValueError(f"decoder_init={decoder_init!r}: expected 'random' or 'encoder'")
    src = longformer.config
    if not isinstance(src.hidden_act, str):
        raise ValueError(f"hidden_act={src.hidden_act!r}: LED needs an activation name")
    offset = src.pad_token_id + 1
    n_layers = src.num_hidden_layers
    decoder_layers = decoder_layers or n_layers
    windows = src.attention_window if isinstance(src.attention_window, list) else [src.attention_window] * n_layers
    config = LEDConfig(
        vocab_size=src.vocab_size,
        d_model=src.hidden_size,
        encoder_layers=n_layers,
        encoder_attention_heads=src.num_attention_heads,
        encoder_ffn_dim=src.intermediate_size,
        decoder_layers=decoder_layers,
        decoder_attention_heads=src.num_attention_heads,
        decoder_ffn_dim=src.intermediate_size,
        max_encoder_position_embeddings=src.max_position_embeddings - offset,
        max_decoder_position_embeddings=max_decoder_position_embeddings,
        activation_function=src.hidden_act,
        dropout=src.hidden_dropout_prob,
        attention_dropout=src.attention_probs_dropout_prob,
        init_std=src.initializer_range,
        attention_window=list(windows),
        pad_token_id=src.pad_token_id,
        bos_token_id=src.bos_token_id,
        eos_token_id=src.eos_token_id,
        decoder_start_token_id=src.eos_token_id,
    )
    led = LEDForConditionalGeneration(config)
    emb = longformer.embeddings
    enc = led.led.encoder
    with torch.no_grad():
        led.led.shared.weight.copy_(emb.word_embeddings.weight)
        n_pos = enc.embed_positions.weight.shape[0]
        enc.embed_positions.weight.copy_(
            emb.position_embeddings.weight[offset : offset + n_pos] + emb.token_type_embeddings.weight[0]
        )
        _copy_norm(enc.layernorm_embedding, emb.LayerNorm)
        for src_layer, dst in zip(longformer.encoder.layer, enc.layers):
            attn = src_layer.attention.self
            for name in ("query", "key", "value", "query_global", "key_global", "value_global"):
                _copy_linear(getattr(dst.self_attn.longformer_self_attn, name), getattr(attn, name))
            _copy_linear(dst.self_attn.output, src_layer.attention.output.dense)
            _copy_norm(dst.self_attn_layer_norm, src_layer.attention.output.LayerNorm)
            _copy_linear(dst.fc1, src_layer.intermediate.dense)
            _copy_linear(dst.fc2, src_layer.output.dense)
            _copy_norm(dst.final_layer_norm, src_layer.output.LayerNorm)
        if decoder_init == "encoder":
            dec = led.led.decoder
            n_dec_pos = min(dec.embed_positions.weight.shape[0], enc.embed_positions.weight.shape[0])
            dec.embed_positions.weight[:n_dec_pos].copy_(enc.embed_positions.weight[:n_dec_pos])
            _copy_norm(dec.layernorm_embedding, emb.LayerNorm)
            for i, dst in enumerate(dec.layers):
                src_layer = longformer.encoder.layer[i % n_layers]
                attn = src_layer.attention.self
                _copy_linear(dst.self_attn.q_proj, attn.query)
                _copy_linear(dst.self_attn.k_proj, attn.key)
                _copy_linear(dst.self_attn.v_proj, attn.value)
                _copy_linear(dst.self_attn.out_proj, src_layer.attention.output.dense)
                _copy_norm(dst.self_attn_layer_norm, src_layer.attention.output.LayerNorm)
                _copy_linear(dst.fc1, src_layer.intermediate.dense)
                _copy_linear(dst.fc2, src_layer.output.dense)
                _copy_norm(dst.final_layer_norm, src_layer.output.LayerNorm)
        led.final_logits_bias.zero_()
    led.tie_weights()
    return set_attention_backend(led, attention_backend)


# -- helpers -------------------------------------------------------------------------------------------


class _SharedEmbeddingsProjection(nn.Module):
    """The generator's embedding layer: the discriminator's ``LongformerEmbeddings`` (word + position + token
    type + LayerNorm, *not* registered here, so the weights are stored once, under ``discriminator.``) followed
    by a linear map to the generator's width (ELECTRA's ``embeddings_project``)."""

    def __init__(self, shared: nn.Module, shared_size: int, hidden_size: int):
        super().__init__()
        object.__setattr__(self, "_shared", shared)  # a reference, not a submodule
        self.project = nn.Linear(shared_size, hidden_size) if shared_size != hidden_size else nn.Identity()

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self._shared.word_embeddings

    @property
    def padding_idx(self) -> int:
        return self._shared.padding_idx

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        shared = self._shared(
            input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds
        )
        return self.project(shared)


def _sample(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """One token per row from ``softmax(logits / temperature)`` (ELECTRA Section 2)."""
    if logits.shape[0] == 0:
        return logits.new_zeros(0, dtype=torch.long)
    probs = torch.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, 1).squeeze(-1)


def _check_inputs(input_ids, **others) -> None:
    if input_ids is None:
        raise ValueError("input_ids: required, a LongTensor of shape (batch_size, sequence_length)")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids: expected shape (batch_size, sequence_length), got {tuple(input_ids.shape)}")
    for name, tensor in others.items():
        if tensor is not None and tuple(tensor.shape) != tuple(input_ids.shape):
            raise ValueError(
                f"{name}: expected shape {tuple(input_ids.shape)} (that of input_ids), got {tuple(tensor.shape)}"
            )


def _copy_linear(dst: nn.Linear, src: nn.Linear) -> None:
    dst.weight.copy_(src.weight)
    dst.bias.copy_(src.bias)


def _copy_norm(dst: nn.LayerNorm, src: nn.LayerNorm) -> None:
    dst.weight.copy_(src.weight)
    dst.bias.copy_(src.bias)
