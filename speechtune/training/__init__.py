"""Training: the loop (:mod:`~speechtune.training.loop`), what it starts from and optimizes
(:mod:`~speechtune.training.recipe`), batches and augmentations
(:mod:`~speechtune.training.batches`), inputs a method declares
(:mod:`~speechtune.training.inputs`), losses (:mod:`~speechtune.training.losses`: k2 CTC and
LF-MMI), icefall-format checkpoints (:mod:`~speechtune.training.checkpoint`) and data-parallel
training in several processes (:mod:`~speechtune.training.distributed`: torch DDP under torchrun)."""
