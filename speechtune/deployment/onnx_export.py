"""A system's acoustic model as ONNX, with the lang files a runtime decodes it with
(``speechtune export``)::

    info = export_system(find_system(config, "finetuned"), Path("onnx/finetuned"), run)

writes ``OUT_DIR`` whole (atomically: a temporary directory renamed at the end)::

    model.onnx          x (N, T, feature_dim) float32 features, x_lens (N,) int64 valid frames
                        -> log_probs (N, T', num_tokens) float32 (log-softmax over tokens.txt,
                           blank = 0), log_probs_len (N,) int64 = ceil(x_lens / subsampling)
    tokens.txt          the lang dir's tokens (the model's output ids)
    words.txt           the lang dir's words (HLG's output ids)
    lm_<domain>/HLG.pt  the decode stage's graph (k2.Fsa.as_dict()), where the lang dir has it
    bpe.model           where the units are BPE pieces
    model.json          the above as data: inputs, outputs, features (type, settings, dim),
                        subsampling factor, sample rate, decode beams, the checkpoint's hash
    README.md           the same for a person
    provenance.json

``model.onnx`` also carries ``subsampling_factor``, ``feature_dim``, ``vocab_size``,
``sample_rate`` and ``model_type`` in its metadata, as sherpa-onnx's CTC models do.

The export is checked before anything is written: onnxruntime's log-probs on two random
batches of other lengths than the traced one must equal torch's within
:data:`EXPORT_TOLERANCE`. A model whose forward computes in Python from the input's length
(``kaldi_nnet3``: each layer's frame indices) traces into a graph of one length only, fails
that check, and is refused with a StageError saying so.

Decoding through the ONNX model with the pipeline's own HLG 1-best::

    model = OnnxAcousticModel(Path("onnx/finetuned/model.onnx"))
    hyps, _ = decode_cuts(model, decode_loader(cuts, params), load_hlg(out_dir, "target"),
                          read_symbols(out_dir / "words.txt"), None, params)
"""
import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from speechtune.deployment.system import DeployedSystem
from speechtune.errors import StageError
from speechtune.lang.lang_dir import hlg_path
from speechtune.models.layers import output_lengths
from speechtune.provenance import StageRun, atomic_dir, file_sha256
from speechtune.training.checkpoint import load_checkpoint, model_from_checkpoint

log = logging.getLogger("speechtune.export")

OPSET = 13  # onnxruntime 1.19 runs 7-21; torch 1.13 writes up to 17; 13 keeps older runtimes in
EXPORT_TOLERANCE = 1e-4
INPUTS = ("x", "x_lens")
OUTPUTS = ("log_probs", "log_probs_len")


class _WithLengths(nn.Module):
    """The acoustic model with its output lengths as a second output (sherpa-onnx's CTC form)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.model(x, x_lens), self.model.output_lengths(x_lens)


class OnnxAcousticModel(nn.Module):
    """An exported ``model.onnx`` run by onnxruntime (CPU), offering what
    :func:`speechtune.decoding.decode_cuts` asks of a model: ``forward(features, feature_lens)``
    -> log-probs, ``subsampling_factor``, ``output_lengths``, ``select_domain`` (the domain is
    fixed at export) and a parameter whose device says where to put the batch."""

    def __init__(self, path: Path, threads: int = 1):
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.subsampling_factor = int(meta["subsampling_factor"])
        self.domain = meta.get("domain")
        # decode_cuts moves batches to the device of the model's first parameter: the CPU here.
        self._device = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, features: torch.Tensor, feature_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        if feature_lens is None:
            feature_lens = torch.full((features.size(0),), features.size(1), dtype=torch.int64)
        log_probs, = self.session.run([OUTPUTS[0]], {
            INPUTS[0]: features.detach().cpu().numpy().astype(np.float32),
            INPUTS[1]: feature_lens.detach().cpu().numpy().astype(np.int64),
        })
        return torch.from_numpy(log_probs).to(features.device)

    def output_lengths(self, num_frames: Union[int, torch.Tensor]) -> Union[int, torch.Tensor]:
        return output_lengths(num_frames, self.subsampling_factor)

    def select_domain(self, domain: str) -> None:
        if self.domain is not None and domain != self.domain:
            raise StageError(f"this ONNX model was exported for the {self.domain} domain; export it again with "
                             f"--domain {domain}")


def _max_difference(session: Any, wrapper: nn.Module, x: torch.Tensor, x_lens: torch.Tensor) -> float:
    """The largest |onnxruntime - torch| over log-probs and lengths for one batch."""
    with torch.no_grad():
        expected, expected_lens = wrapper(x, x_lens)
    got, got_lens = session.run(list(OUTPUTS), {INPUTS[0]: x.numpy(), INPUTS[1]: x_lens.numpy()})
    if got.shape != tuple(expected.shape) or not np.array_equal(got_lens, expected_lens.numpy()):
        return float("inf")
    return float(np.abs(got - expected.numpy()).max())


def export_acoustic_model(model: nn.Module, path: Path, feature_dim: int,
                          metadata: Optional[Mapping[str, Any]] = None) -> float:
    """Write ``model`` (eval mode) to ``path`` as ONNX with dynamic batch and time axes and
    ``metadata``; return the largest difference from torch that the check measured (module
    docstring). A StageError where the model cannot be exported or its export is wrong."""
    import onnx
    import onnxruntime

    model_type = getattr(model, "params", {}).get("type", type(model).__name__)
    wrapper = _WithLengths(model.eval()).eval()
    generator = torch.Generator().manual_seed(0)
    traced = (torch.randn(2, 120, feature_dim, generator=generator), torch.tensor([120, 95]))
    unsupported = (f"model type {model_type} cannot be exported to ONNX here; decode it with `speechtune recognize` "
                   "(torch) instead")
    try:
        # The exporter's notes on constant folding and shape inference: the check below
        # measures the graph itself.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, traced, str(path), input_names=list(INPUTS), output_names=list(OUTPUTS),
                dynamic_axes={"x": {0: "N", 1: "T"}, "x_lens": {0: "N"},
                              "log_probs": {0: "N", 1: "T_out"}, "log_probs_len": {0: "N"}},
                opset_version=OPSET, do_constant_folding=True,
            )
    except Exception as e:  # the exporter raises many types for an op or construct it lacks
        raise StageError(f"{unsupported} (torch.onnx.export: {type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    proto = onnx.load(str(path))
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # a failed run below is reported as the StageError, not logged
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    worst = 0.0
    # Other lengths and batch sizes than the traced ones: a graph frozen to one length fails here.
    for batch, frames in ((3, 57), (1, 301)):
        x = torch.randn(batch, frames, feature_dim, generator=generator)
        x_lens = torch.tensor([frames - 7 * i for i in range(batch)])
        try:
            difference = _max_difference(session, wrapper, x, x_lens)
        except Exception as e:  # onnxruntime's errors for shapes fixed at trace time
            difference, why = float("inf"), f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
        else:
            why = f"log-probs differ from torch's by up to {difference:.3g}"
        if not difference <= EXPORT_TOLERANCE:
            raise StageError(f"{unsupported}: its traced ONNX graph does not follow the input's length (at T={frames}, "
                             f"traced at T=120: {why}); its forward computes in Python from the length "
                             "(kaldi_nnet3: each layer's frame indices), which a traced graph freezes")
        worst = max(worst, difference)
    return worst


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def export_system(system: DeployedSystem, out_dir: Path, run: Optional[StageRun] = None) -> Dict[str, Any]:
    """Write ``out_dir`` (module docstring) for ``system``; return what ``model.json`` holds.
    ``out_dir`` is replaced whole, so it must be new, empty or an earlier export."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "model.json").is_file())):
        raise StageError(f"{out_dir} exists and is not an earlier export: export replaces its OUT_DIR whole, so pass "
                         "a new directory")
    checkpoint = load_checkpoint(system.model_path)
    params = checkpoint["model_params"]
    feature_dim = int(params["feature_dim"])
    if system.extractor.feature_dim(system.sample_rate) != feature_dim:
        raise StageError(f"{system.model_path} takes {feature_dim}-dim features but the config's extractor gives "
                         f"{system.extractor.feature_dim(system.sample_rate)}; pass the --config presets it was trained with")
    model = model_from_checkpoint(system.model_path)
    model.select_domain(system.domain)  # the domain's adapters (or none) are baked into the graph
    hlg = str(hlg_path(Path(), system.domain))  # relative to the exported lang dir
    info: Dict[str, Any] = {
        "system": system.name, "domain": system.domain, "model_type": params["type"],
        "checkpoint": str(system.model_path), "checkpoint_sha256": file_sha256(system.model_path),
        "model": "model.onnx", "opset": OPSET,
        "inputs": {
            "x": {"shape": ["N", "T", feature_dim], "dtype": "float32",
                  "what": "features of each utterance, padded at the end to the longest"},
            "x_lens": {"shape": ["N"], "dtype": "int64", "what": "valid frames of each utterance"},
        },
        "outputs": {
            "log_probs": {"shape": ["N", "T_out", int(params["num_tokens"])],
                          "dtype": "float32", "what": "log-softmax over tokens.txt per output frame; blank is 0"},
            "log_probs_len": {"shape": ["N"], "dtype": "int64",
                              "what": f"valid output frames: ceil(x_lens / {model.subsampling_factor})"},
        },
        "subsampling_factor": int(model.subsampling_factor),
        "num_tokens": int(params["num_tokens"]), "blank_id": 0,
        "sample_rate": system.sample_rate,
        "features": {"type": system.extractor.name, "dim": feature_dim,
                     "frame_shift": system.extractor.frame_shift, "settings": system.extractor.to_dict()},
        "tokens": "tokens.txt", "words": "words.txt", "hlg": hlg,
        "decode": {k: system.decode[k] for k in ("search_beam", "output_beam", "min_active_states", "max_active_states")},
    }
    metadata = {"model_type": f"speechtune_{params['type']}_ctc", "subsampling_factor": model.subsampling_factor,
                "feature_dim": feature_dim, "vocab_size": params["num_tokens"], "sample_rate": system.sample_rate,
                "feature_type": system.extractor.name, "domain": system.domain, "blank_id": 0}
    with atomic_dir(out_dir) as tmp:
        info["max_difference_from_torch"] = export_acoustic_model(model, tmp / "model.onnx", feature_dim, metadata)
        for name in ("tokens.txt", "words.txt", hlg, "bpe.model"):
            if (system.lang_dir / name).is_file():
                _copy(system.lang_dir / name, tmp / name)
        if (system.lang_dir / "bpe.model").is_file():
            info["bpe_model"] = "bpe.model"
        (tmp / "model.json").write_text(json.dumps(info, indent=2) + "\n")
        (tmp / "README.md").write_text(readme(info))
        if run is not None:
            run.write_provenance(tmp / "provenance.json", system=system.name, domain=system.domain,
                                 checkpoint=str(system.model_path), lang_dir=str(system.lang_dir))
    log.info("%s: %s (%s) as ONNX with %s; onnxruntime within %.2g of torch", out_dir, system.name, params["type"],
             system.lang_dir, info["max_difference_from_torch"])
    return info


def readme(info: Mapping[str, Any]) -> str:
    """``README.md`` of an export: what goes in, what comes out, what a runtime does."""
    features = info["features"]
    return f"""# {info['system']} ({info['model_type']}), exported by `speechtune export`

`model.onnx` (opset {info['opset']}) is the acoustic model of `{info['checkpoint']}` (sha256
{info['checkpoint_sha256'][:16]}...), {info['domain']} domain.

- input `x`: float32 (N, T, {features['dim']}) features, `x_lens`: int64 (N,) valid frames.
  The features are `{features['type']}` ({features['dim']} dims, a frame every
  {features['frame_shift'] * 1000:g} ms) of {info['sample_rate']} Hz mono audio on a [-1, 1] scale,
  with exactly the settings in `model.json` (`features.settings`; no dither, no normalization:
  the model normalizes).
- output `log_probs`: float32 (N, T', {info['num_tokens']}), log-softmax over `tokens.txt`
  (blank = {info['blank_id']}); `log_probs_len`: int64 (N,), T' = ceil(T / {info['subsampling_factor']}).

To recognize: compute the features, run the model, then search `{info['hlg']}` (a k2 FSA,
`k2.Fsa.from_dict(torch.load(path))`; input labels = tokens, output labels = `words.txt`) for the
best path over `log_probs` (k2.intersect_dense_pruned with search_beam {info['decode']['search_beam']},
output_beam {info['decode']['output_beam']}, then k2.shortest_path), or take the best token per
frame (CTC greedy) without a graph.
"""
