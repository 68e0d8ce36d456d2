"""The pretrained start of fine-tuning: its checkpoint, checked against the data it will be
fine-tuned on, and what the methods take from it::

    start = PretrainedModel(Path("exp/pretrained/model.pt"), Path("data/lang_phone_target"), feature_dim=80)
    start.same_tokens          # False when the lang dir has other tokens: the output layer is new
    start.model_params         # the architecture, with the lang dir's token count
    reference = start.frozen_copy()     # the pretrained network itself, eval mode, no gradients

When the target lang dir's tokens differ from the pretrained model's (another BPE model or
lexicon), the output layer is re-initialized and the rows of the tokens both share copied
(:meth:`FineTuning.prepare <speechtune.finetuning.method.FineTuning.prepare>`). An imported
Kaldi chain model names its outputs ``pdf0``, ``pdf1``, ...: none is shared, so its output
layer starts afresh over the lang dir's tokens (cross-lingual fine-tuning).

A released icefall model becomes the ``pretrained`` system with :func:`import_icefall_checkpoint`
(the ``import_icefall`` stage): its ``pretrained.pt`` is checked against icefall's
tdnn_lstm_ctc key for key (:mod:`speechtune.models.icefall`) and written as our checkpoint with
its lang dir's tokens, so a lang dir imported from the same release
(:mod:`speechtune.lang.released`) has the same tokens and the output layer is kept::

    import_icefall_checkpoint(Path("icefall_asr_librispeech_tdnn-lstm_ctc/exp/pretrained.pt"),
                              Path("icefall_asr_librispeech_tdnn-lstm_ctc/data/lang_phone"),
                              Path("exp/pretrained"), run)
"""
import logging
from pathlib import Path
from typing import Any, Dict

import torch
from torch import nn

from speechtune.errors import StageError
from speechtune.lang.graphs import output_tokens
from speechtune.lang.released import released_token_table, released_tokens
from speechtune.models import build_model, num_parameters
from speechtune.models.icefall import checked_icefall_state, icefall_params
from speechtune.provenance import StageRun, atomic_dir, file_sha256
from speechtune.training.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger("speechtune.finetuning")


class PretrainedModel:
    """A pretrained checkpoint as the start of fine-tuning on ``lang_dir``'s tokens and
    ``feature_dim``-dimensional features (a mismatch is a StageError naming both files)."""

    def __init__(self, path: Path, lang_dir: Path, feature_dim: int) -> None:
        if not Path(path).is_file():
            raise StageError(f"{path} is missing: run the pretrain stage first")
        checkpoint = load_checkpoint(path)
        self.path = Path(path)
        self.state: Dict[str, torch.Tensor] = checkpoint["model"]
        self.params: Dict[str, Any] = dict(checkpoint["model_params"])
        if feature_dim != self.params["feature_dim"]:
            raise StageError(
                f"{path} was trained on {self.params['feature_dim']}-dim features, "
                f"the target cuts have {feature_dim}: extract them with the pretrained model's features config"
            )
        self.lang_dir = Path(lang_dir)
        self.target_tokens = output_tokens(lang_dir)
        self.tokens: Dict[str, int] = checkpoint.get("tokens") or {}
        if not self.tokens:
            if self.params["num_tokens"] != len(self.target_tokens):
                raise StageError(
                    f"{path} has {self.params['num_tokens']} outputs and does not name "
                    f"its tokens; {lang_dir} has {len(self.target_tokens)}: fine-tune with its own lang dir"
                )
            self.tokens = self.target_tokens  # a checkpoint from before tokens were saved
        self.same_tokens = self.tokens == self.target_tokens
        if not self.same_tokens:
            shared = len(set(self.target_tokens) & set(self.tokens))
            log.info("%s has other tokens than %s: the output layer is re-initialized, %d of %d rows copied",
                     path, lang_dir, shared, len(self.target_tokens))

    @property
    def model_params(self) -> Dict[str, Any]:
        """The pretrained architecture with the lang dir's number of outputs."""
        return {**self.params, "num_tokens": len(self.target_tokens)}

    def fingerprint(self) -> str:
        """The checkpoint file's hash: a fine-tune of another start is never resumed."""
        return file_sha256(self.path)

    def frozen_copy(self) -> nn.Module:
        """The pretrained network, in eval mode and without gradients (a reference)."""
        model = build_model(self.params)
        model.load_state_dict(self.state)
        model.eval()
        for param in model.parameters():
            param.requires_grad = False
        return model

    def copy_shared_rows(self, new: torch.Tensor, old: torch.Tensor) -> None:
        """Copy into the new output layer's ``new`` the rows of ``old`` whose tokens both share."""
        for symbol, new_id in self.target_tokens.items():
            if symbol in self.tokens:
                new[new_id] = old[self.tokens[symbol]]


def import_icefall_checkpoint(checkpoint: Path, lang_dir: Path, exp_dir: Path, run: StageRun) -> None:
    """Write ``exp_dir`` (atomically) from a released icefall tdnn_lstm_ctc checkpoint
    (``{"model": state_dict, ...}``, e.g. its ``exp/pretrained.pt``) and its ``data/lang_phone``::

        exp/pretrained/model.pt         {"model": icefall's state dict, unchanged, "model_params":
                                         {"type": "icefall_tdnn_lstm_ctc", ...}, "epoch": 0, "step": 0,
                                         "tokens": {"<eps>": 0, "AA0": 1, ...}, "icefall": {source, sha256}}
        exp/pretrained/provenance.json  parameters; train_seconds 0 (trained elsewhere)

    A checkpoint that is not whole, has other keys or shapes, or is of another architecture is
    a StageError listing what does not fit (:func:`checked_icefall_state`)."""
    released = load_checkpoint(checkpoint)
    state = released["model"]
    params = icefall_params(state, checkpoint)
    model = build_model(params)
    model.load_state_dict(checked_icefall_state(state, checkpoint, model))
    tokens = released_tokens(lang_dir)
    if len(tokens) != params["num_tokens"]:
        raise StageError(f"{checkpoint} has {params['num_tokens']} outputs but {released_token_table(lang_dir)} "
                         f"has {len(tokens)} tokens: give the lang_phone directory released with this model")
    source = {"checkpoint": str(checkpoint), "sha256": file_sha256(checkpoint), "lang_dir": str(lang_dir),
              "recipe": "icefall egs/librispeech/ASR/tdnn_lstm_ctc"}
    with atomic_dir(exp_dir) as tmp:
        save_checkpoint(tmp / "model.pt", {"model": model.state_dict(), "model_params": params, "epoch": 0,
                                           "step": 0, "tokens": tokens, "icefall": source})
        run.write_provenance(tmp / "provenance.json", parameters=num_parameters(model), train_seconds=0.0,
                             trained_elsewhere=source["recipe"], icefall=source)
    log.info("imported %s: %d parameters, %d tokens, %d-dim features -> %s", checkpoint, num_parameters(model),
             len(tokens), params["feature_dim"], exp_dir)
