"""Fine-tuning methods: the pretrained start (:mod:`~speechtune.finetuning.pretrained`), the
registry of regularizers for ``alpha * L_pre + (1 - alpha) * L_task``
(:mod:`~speechtune.finetuning.regularizers`), and :class:`FineTuning`, the training recipe that
puts them together with partial fine-tuning and adapters (:mod:`~speechtune.finetuning.method`)."""
from speechtune.finetuning.method import FineTuning, all_extra_inputs, extra_inputs
from speechtune.finetuning.regularizers import REGULARIZERS, Regularizer

__all__ = ["FineTuning", "REGULARIZERS", "Regularizer", "all_extra_inputs", "extra_inputs"]
