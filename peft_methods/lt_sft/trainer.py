"""Both LT-SFT phases in one ``Trainer.train()`` call."""

from __future__ import annotations

from transformers import Trainer

from .model import LTSFTModel


class LTSFTTrainer(Trainer):
    """A ``Trainer`` whose ``train()`` runs the dense phase, selects the winning ticket, then the sparse phase.

    Args:
        dense_steps / sparse_steps: optimizer steps of each phase (``args.max_steps`` is ignored).
        peft_model: the ``PeftModel`` holding the LT-SFT adapter, when ``model`` is something that wraps it
            (a distillation module, say); default ``model`` itself.

    The sparse phase starts with a fresh optimizer and learning-rate schedule that hold only the K kept
    values (and ``modules_to_save``), so neither Adam's moments from the dense phase nor weight decay can
    move an entry outside the ticket. Single-process only (the trainable set changes between phases).
    """

    def __init__(self, *args, dense_steps: int, sparse_steps: int, peft_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        if dense_steps < 0 or sparse_steps < 1:
            raise ValueError(f"LTSFTTrainer needs dense_steps >= 0 and sparse_steps >= 1, got {dense_steps}, {sparse_steps}")
        self.dense_steps = dense_steps
        self.sparse_steps = sparse_steps
        self.peft_model = peft_model if peft_model is not None else self.model
        tuner = getattr(self.peft_model, "base_model", None)
        if not isinstance(tuner, LTSFTModel):
            raise TypeError(f"LTSFTTrainer needs a PeftModel with an LT-SFT adapter, got {type(tuner).__name__}")
        self.tuner = tuner

    def train(self, *args, **kwargs):
        adapter = self.peft_model.active_adapter
        if self.tuner.peft_config[adapter].phase == "dense":
            if self.dense_steps < 1:
                raise ValueError("the adapter is still dense: dense_steps must be >= 1")
            self.args.max_steps = self.dense_steps
            super().train(*args, **kwargs)
            self.tuner.select_sparse(adapter)
            self.optimizer = None
            self.lr_scheduler = None
        self.args.max_steps = self.sparse_steps
        return super().train(*args, **kwargs)


def train_lt_sft(model, args, dense_steps: int, sparse_steps: int, **trainer_kwargs) -> LTSFTTrainer:
    """Run both LT-SFT phases on ``model`` (a ``PeftModel`` built with ``LTSFTConfig``); return the trainer."""
    trainer = LTSFTTrainer(model=model, args=args, dense_steps=dense_steps, sparse_steps=sparse_steps, **trainer_kwargs)
    trainer.train()
    return trainer
