"""Stage ``features`` and its extractors: Kaldi agreement, outputs an icefall recipe loads,
atomic failure."""
import importlib.util
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.dataset import DynamicBucketingSampler, K2SpeechRecognitionDataset, SimpleCutSampler
from lhotse.features.base import FeatureExtractor, get_extractor_type
from lhotse.utils import compute_num_frames

from local.embedded_corpus import Utterance, plan_corpus, synthesize
from local.voices import Speaker
from speechtune.errors import StageError
from speechtune.config import load_config, REPO_ROOT
from speechtune.features.extractors import KaldiNativeFbank, make_extractor
from speechtune.features.extract import output_paths
from stages.features import main

ESPEAK = Speaker("t-spk", "espeak-ng", "en-us")
TEXTS = {
    "t-spk-0": "set a timer for ten minutes",
    "t-spk-1": "turn off the kitchen lights please",
    "t-spk-2": "what is the weather like in boston tomorrow morning",
}
LOG_FLOOR = float(np.log(np.finfo(np.float32).eps))  # both extractors floor mel energies here


def espeak(text: str) -> np.ndarray:
    """Clean espeak-ng speech, 16 kHz float32; it holds digital silence before and after."""
    return synthesize(Utterance("t-spk-x", ESPEAK, text, None))


def target_domain_utterance() -> np.ndarray:
    """The embedded default's target_test utterance 0: flite, room reverb, background noise."""
    plan = plan_corpus("target", load_config([])["corpus"]["target"], seed=1234)["test"]
    return synthesize(plan.utterance(0))


def tone_noise_and_silence() -> np.ndarray:
    """A seeded signal that needs no synthesizer: a tone in noise, half a second of zeros."""
    rng = np.random.default_rng(0)
    t = np.arange(48000) / 16000
    audio = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
    audio[16000:24000] = 0
    return audio.astype(np.float32)


@pytest.mark.parametrize("make_audio", [
    lambda: espeak("set a timer for ten minutes and turn off the kitchen lights"),
    target_domain_utterance,
    tone_noise_and_silence,
], ids=["espeak-ng-clean", "target-domain-noisy", "tone-noise-silence"])
def test_lhotse_fbank_agrees_with_kaldi_native_fbank(make_audio) -> None:
    """lhotse's Fbank against Kaldi's C++ (kaldi-native-fbank), same samples, matched options:
    80 mel bins 20 Hz..7600 Hz, 25 ms Povey window, 10 ms shift, 512-point FFT, pre-emphasis
    0.97, DC removal, no dither, snip_edges=False, power spectrum, log floored at float32 eps.

    Measured (lhotse 1.31.1, kaldi-native-fbank 1.22.4, torch 1.13.1 CPU): max |diff| 3.9e-4
    (espeak-ng), 1.1e-4 (target domain), 1.5e-4 (tone); mean |diff| 2e-6..4.5e-6; in bins above
    log energy -8, max 7.8e-5. No frame differs in kind: the counts match, the edge frames that
    snip_edges=False pads agree as well as inner ones (lhotse reflects the signal exactly as
    Kaldi does), and the floored elements (digital silence) are the same, bit for bit. What
    differs is float32 round-off: the two compute Kaldi's mel weights in float32 each (they
    differ by up to 1.4e-5) and use different FFTs; relative to a frame's loud bins that is
    ~1e-7, but a bin within a few times of the floor (1e-7, while the frame's peak is ~20)
    takes it as a 1e-4 relative error, hence the largest log differences sit in near-floor bins
    of loud frames. The bounds below are about 2x the worst measured; lilcom storage then
    rounds to 2^-5 = 0.031, far coarser than either.
    """
    audio = np.array(make_audio())  # writable: torch warns about synthesize's read-only buffer
    ours = make_extractor("lhotse-fbank", num_mel_bins=80).extract(audio, 16000)
    kaldi = make_extractor("kaldi-native-fbank", num_mel_bins=80).extract(audio, 16000)
    assert ours.shape == kaldi.shape == (compute_num_frames(len(audio) / 16000, 0.01, 16000), 80)
    diff = np.abs(ours - kaldi)
    assert diff.max() < 1e-3
    assert diff.mean() < 1e-5
    assert diff[ours > -8].max() < 2e-4
    assert max(diff[0].max(), diff[-1].max()) < 2e-4
    np.testing.assert_array_equal(ours <= LOG_FLOOR, kaldi <= LOG_FLOOR)


def test_kaldi_native_fbank_is_a_registered_serializable_lhotse_extractor() -> None:
    extractor = make_extractor("kaldi-native-fbank", num_mel_bins=40)
    assert get_extractor_type("kaldi-native-fbank") is KaldiNativeFbank
    restored = FeatureExtractor.from_dict(extractor.to_dict())
    assert restored.config == extractor.config and restored.feature_dim(16000) == 40
    audio = tone_noise_and_silence()
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(extractor)).extract(audio, 16000),
                                  extractor.extract(audio[None, :], 16000))


@pytest.mark.skipif(importlib.util.find_spec("kaldifeat") is not None, reason="kaldifeat is installed")
def test_kaldifeat_without_kaldifeat_says_how_to_build_it_or_what_to_pick(tmp_path: Path) -> None:
    with pytest.raises(StageError, match=r"no wheel.*torch 1\.13\.1.*CUDA.*cuDNN.*lhotse-fbank"):
        make_extractor("kaldifeat", num_mel_bins=80)
    in_cuts = write_cuts(tmp_path, TEXTS)
    out_cuts = tmp_path / "fbank" / "t_cuts.jsonl.gz"
    with pytest.raises(StageError, match="kaldifeat"):
        run_stage(in_cuts, out_cuts, extractor="kaldifeat")
    assert not out_cuts.parent.exists() or not any(out_cuts.parent.iterdir())


# ---------------------------------------------------------------------------------------------
# The stage CLI on a tiny CutSet


def write_cuts(tmp_path: Path, texts: Dict[str, str]) -> Path:
    """A CutSet as prepare writes it: one MonoCut per espeak-ng wav, with its supervision."""
    cuts = []
    for cut_id, text in texts.items():
        wav = tmp_path / "wav" / f"{cut_id}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(wav), espeak(text), 16000, subtype="PCM_16")
        recording = Recording.from_file(wav, recording_id=cut_id)
        supervision = SupervisionSegment(
            id=cut_id, recording_id=cut_id, start=0.0, duration=recording.duration,
            text=text.upper(), speaker="t-spk", language="English",
        )
        cuts.append(MonoCut(id=cut_id, start=0.0, duration=recording.duration, channel=0,
                            recording=recording, supervisions=[supervision]))
    path = tmp_path / "manifests" / "t_cuts.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    CutSet.from_cuts(cuts).to_file(path)
    return path


def run_stage(in_cuts: Path, out_cuts: Path, extractor: str = "lhotse-fbank", num_jobs: int = 1) -> None:
    config = {"extractor": extractor, "num_mel_bins": 80}
    main([str(in_cuts), str(out_cuts), "--config-json", json.dumps(config), "--seed", "7", "--threads", str(num_jobs)])


def leftovers(directory: Path) -> List[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".tmp-"))


@pytest.fixture(scope="module")
def in_cuts(tmp_path_factory) -> Path:
    return write_cuts(tmp_path_factory.mktemp("features"), TEXTS)


@pytest.fixture(scope="module")
def out_cuts(in_cuts: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fbank") / "t_cuts.jsonl.gz"
    run_stage(in_cuts, out)
    return out


def test_stage_writes_cuts_with_loadable_80_dim_features_and_provenance(in_cuts: Path, out_cuts: Path) -> None:
    storage, provenance = output_paths(out_cuts)
    assert storage.name == "t_feats.lca" and provenance.name == "t.provenance.json"
    assert storage.is_file() and provenance.is_file() and leftovers(out_cuts.parent) == []
    cuts = CutSet.from_file(out_cuts).to_eager()
    assert [cut.id for cut in cuts] == list(TEXTS)  # the input's order
    for cut, source in zip(cuts, CutSet.from_file(in_cuts)):
        assert cut.supervisions == source.supervisions and cut.recording == source.recording
        assert cut.features.storage_path == str(storage)  # the final name, not a temporary's
        feats = cut.load_features()
        assert feats.shape == (cut.num_frames, 80) == (compute_num_frames(cut.duration, 0.01, 16000), 80)
        assert abs(cut.num_frames - cut.duration * 100) <= 1
        assert np.isfinite(feats).all() and feats.std() > 1  # speech, not a constant
        # lilcom keeps the features to its 2^-5 step: the stored matrix is the extractor's output.
        computed = make_extractor("lhotse-fbank", 80).extract(cut.load_audio(), 16000)
        assert np.abs(feats - computed).max() <= 2 ** -5
    record = json.loads(provenance.read_text())
    assert record["config"] == {"extractor": "lhotse-fbank", "num_mel_bins": 80}
    assert record["seed"] == 7 and record["wall_seconds"] >= 0 and record["cuts"] == 3
    assert "lhotse" in record["versions"] and record["extractor"]["feature_type"] == "kaldi-fbank"
    assert record["frames"] == sum(cut.num_frames for cut in cuts)


def test_parallel_jobs_write_one_archive_with_the_same_features(in_cuts: Path, out_cuts: Path, tmp_path: Path) -> None:
    parallel = tmp_path / "t_cuts.jsonl.gz"
    run_stage(in_cuts, parallel, num_jobs=2)
    assert output_paths(parallel)[0].is_file() and leftovers(tmp_path) == []
    single, double = CutSet.from_file(out_cuts).to_eager(), CutSet.from_file(parallel).to_eager()
    assert [cut.id for cut in double] == list(TEXTS)
    assert {cut.features.storage_path for cut in double} == {str(output_paths(parallel)[0])}
    for a, b in zip(single, double):
        np.testing.assert_array_equal(a.load_features(), b.load_features())


def test_kaldi_native_fbank_extractor_through_the_stage(in_cuts: Path, out_cuts: Path, tmp_path: Path) -> None:
    knf_cuts = tmp_path / "t_cuts.jsonl.gz"
    run_stage(in_cuts, knf_cuts, extractor="kaldi-native-fbank")
    for ours, kaldi in zip(CutSet.from_file(out_cuts), CutSet.from_file(knf_cuts)):
        assert kaldi.features.type == "kaldi-native-fbank"
        # Agreement to ~1e-4 (above) becomes at most one lilcom step once stored.
        assert np.abs(ours.load_features() - kaldi.load_features()).max() <= 2 ** -5


def test_unreadable_audio_fails_naming_the_file_and_leaves_no_output(tmp_path: Path) -> None:
    in_cuts = write_cuts(tmp_path, TEXTS)
    (tmp_path / "wav" / "t-spk-1.wav").unlink()
    out_cuts = tmp_path / "fbank" / "t_cuts.jsonl.gz"
    with pytest.raises(StageError, match=r"1 of 3 cuts.*t-spk-1 \(.*wav/t-spk-1\.wav\)"):
        run_stage(in_cuts, out_cuts)
    storage, provenance = output_paths(out_cuts)
    assert not out_cuts.exists() and not storage.exists() and not provenance.exists()
    assert leftovers(out_cuts.parent) == []


def test_a_failed_rerun_leaves_the_previous_output_as_it_was(tmp_path: Path) -> None:
    in_cuts = write_cuts(tmp_path, TEXTS)
    out_cuts = tmp_path / "fbank" / "t_cuts.jsonl.gz"
    run_stage(in_cuts, out_cuts)
    storage = output_paths(out_cuts)[0]
    before = (out_cuts.read_bytes(), storage.read_bytes())
    (tmp_path / "wav" / "t-spk-2.wav").unlink()
    with pytest.raises(StageError, match="t-spk-2"):
        run_stage(in_cuts, out_cuts)
    assert (out_cuts.read_bytes(), storage.read_bytes()) == before
    assert leftovers(out_cuts.parent) == []


@pytest.mark.parametrize("sampler_type", [SimpleCutSampler, DynamicBucketingSampler])
def test_an_icefall_style_dataloader_reads_a_batch(out_cuts: Path, sampler_type) -> None:
    cuts = CutSet.from_file(out_cuts)
    if sampler_type is DynamicBucketingSampler:
        sampler = DynamicBucketingSampler(cuts, max_duration=100.0, num_buckets=2, shuffle=False)
    else:
        sampler = SimpleCutSampler(cuts, max_duration=100.0, shuffle=False)
    loader = torch.utils.data.DataLoader(
        K2SpeechRecognitionDataset(return_cuts=True), sampler=sampler, batch_size=None, num_workers=0
    )
    batch = next(iter(loader))
    inputs, supervisions = batch["inputs"], batch["supervisions"]
    longest = max(cut.num_frames for cut in cuts)
    assert inputs.shape == (3, longest, 80) and inputs.dtype == torch.float32
    assert sorted(supervisions["text"]) == sorted(text.upper() for text in TEXTS.values())
    assert supervisions["num_frames"].max() == longest


def test_cli_help_and_a_bad_output_name(tmp_path: Path) -> None:
    shown = subprocess.run([sys.executable, "-m", "stages.features", "--help"],
                           cwd=REPO_ROOT, capture_output=True, text=True)
    assert shown.returncode == 0 and "_feats.lca" in shown.stdout
    with pytest.raises(StageError, match=r"must end in '_cuts\.jsonl\.gz'"):
        run_stage(tmp_path / "in_cuts.jsonl.gz", tmp_path / "out.jsonl.gz")


def test_speed_perturbation_adds_a_copy_per_factor_with_its_length(in_cuts: Path, tmp_path: Path) -> None:
    out = tmp_path / "sp" / "t_sp_cuts.jsonl.gz"
    config = {"extractor": "lhotse-fbank", "num_mel_bins": 80}
    main([str(in_cuts), str(out), "--speed-perturb", "0.9", "1.1",
          "--config-json", json.dumps(config), "--seed", "7"])
    originals = CutSet.from_file(in_cuts)
    cuts = {cut.id: cut for cut in CutSet.from_file(out)}
    assert len(cuts) == 3 * len(originals)
    for cut in originals:
        slow, fast = cuts[f"{cut.id}_sp0.9"], cuts[f"{cut.id}_sp1.1"]
        assert slow.supervisions[0].text == cut.supervisions[0].text
        # 0.9x speed: 1/0.9 as long; the features have the frames of that duration.
        assert slow.duration == pytest.approx(cut.duration / 0.9, abs=0.01)
        assert fast.duration == pytest.approx(cut.duration / 1.1, abs=0.01)
        assert abs(slow.load_features().shape[0] - round(slow.duration * 100)) <= 1
    assert json.loads(out.with_name("t_sp.provenance.json").read_text())["speed_perturb"] == [0.9, 1.1]


def test_noise_stage_writes_noise_cuts_with_features(tmp_path: Path, monkeypatch) -> None:
    from stages.noise import main as noise_main

    monkeypatch.chdir(tmp_path)  # the manifests name data/noise/... relative to the run directory
    config = {"extractor": "lhotse-fbank", "num_mel_bins": 80}
    noise_main(["data/noise", "data/fbank/noise_cuts.jsonl.gz", "--noise-types", "whitenoise", "pinknoise",
                "--config-json", json.dumps(config), "--seed", "3"])
    cuts = CutSet.from_file(tmp_path / "data" / "fbank" / "noise_cuts.jsonl.gz")
    assert sorted(cut.recording_id for cut in cuts) == ["noise-pinknoise", "noise-whitenoise"]
    for cut in cuts:
        assert cut.duration == 60.0 and cut.load_features().shape == (6000, 80)
    assert leftovers(tmp_path / "data") == []
