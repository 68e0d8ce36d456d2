"""Tacotron 2 and its training (speechtune/tts/model.py, training.py) on a handful of sentences
spoken by espeak-ng: shapes and masks, the stop token, growing the speaker table, training that
lowers the loss and brings attention onto the diagonal (an untrained model's is not), a killed
run resumed to the same weights, and fine-tuning with and without rehearsal."""
import io
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from speechtune.errors import StageError
from speechtune.lang.lang_dir import cmudict_lexicon
from speechtune.tts.features import SAMPLE_RATE, log_mel
from speechtune.tts.model import Tacotron2, TacotronConfig
from speechtune.tts.training import (TtsTrainingParams, attention_diagonality, load_tts_model, mel_statistics,
                                     train_tts, tts_loss, validate)

SENTENCES = ["turn on the kitchen lights", "set a timer for ten minutes", "what is the weather like",
             "play some jazz music", "open the front door", "call my sister now"]
# The pretraining voice, and the new one fine-tuning adapts to.
PRETRAINING_VOICE, NEW_VOICE = "en-us", "en-us+f3"
# Untrained, attention spreads over the phones and about 0.2 of its mass lies near the diagonal
# (measured: 0.17-0.25); the trained fixture reaches 0.85 and more.
ALIGNED = 0.5


class Utterance(NamedTuple):
    phones: List[int]
    mel: np.ndarray


def tiny_config(num_phones: int, num_speakers: int = 1, **overrides) -> TacotronConfig:
    """Small enough for a test to train in seconds on one thread."""
    sizes = dict(reduction=4, phone_dim=32, encoder_convs=1, encoder_dim=32, speaker_dim=8, attention_rnn_dim=64,
                 decoder_rnn_dim=64, attention_dim=32, location_filters=8, location_kernel=15, prenet_dim=32,
                 postnet_convs=2, postnet_dim=32)
    return TacotronConfig(num_phones=num_phones, num_speakers=num_speakers, **{**sizes, **overrides})


def speak(text: str, voice: str) -> np.ndarray:
    """espeak-ng's speech at 16 kHz, its leading and trailing digital silence cut to 2 frames."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "190", "--stdout", text], capture_output=True,
                         check=True).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    mel = log_mel(torchaudio.functional.resample(torch.from_numpy(samples), rate, SAMPLE_RATE).numpy())
    loud = np.nonzero(mel.max(axis=1) > mel.min() + 1.0)[0]
    return mel[max(0, loud[0] - 2):loud[-1] + 3]


@pytest.fixture(scope="module")
def corpus() -> Dict[str, object]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng to synthesize speech")
    words = sorted({word for sentence in SENTENCES for word in sentence.split()})
    lexicon, tokens = cmudict_lexicon(words)
    pronunciations: Dict[str, List[str]] = {}
    for word, phones in lexicon:
        pronunciations.setdefault(word, phones)
    voices = {voice: [Utterance([tokens[p] for word in sentence.split() for p in pronunciations[word]],
                                speak(sentence, voice)) for sentence in SENTENCES]
              for voice in (PRETRAINING_VOICE, NEW_VOICE)}
    return {"num_phones": len(tokens), **voices}


def make_batch(utterances: List[Utterance], speaker: int) -> Dict[str, object]:
    """The data module's batch format: phones and mels zero-padded, lengths, speakers, ids."""
    phones = torch.zeros(len(utterances), max(len(u.phones) for u in utterances), dtype=torch.long)
    mels = torch.zeros(len(utterances), max(len(u.mel) for u in utterances), 80)
    for i, u in enumerate(utterances):
        phones[i, :len(u.phones)] = torch.tensor(u.phones)
        mels[i, :len(u.mel)] = torch.from_numpy(u.mel)
    return {"phones": phones, "phone_lens": torch.tensor([len(u.phones) for u in utterances]), "mels": mels,
            "mel_lens": torch.tensor([len(u.mel) for u in utterances]),
            "speakers": torch.full((len(utterances),), speaker), "ids": [f"utt{i}" for i in range(len(utterances))]}


def batches_of(utterances: List[Utterance], speaker: int, batch_size: int):
    """``batches(epoch)``: the utterances shuffled by the epoch, as the data module does."""
    def batches(epoch: int) -> Iterator[Dict[str, object]]:
        order = np.random.default_rng(epoch).permutation(len(utterances))
        for start in range(0, len(order), batch_size):
            yield make_batch([utterances[i] for i in order[start:start + batch_size]], speaker)
    return batches


def state_dicts_equal(a: Path, b: Path) -> bool:
    first, second = load_tts_model(a).state_dict(), load_tts_model(b).state_dict()
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_shapes_and_padding_change_nothing(corpus):
    torch.manual_seed(0)
    model = Tacotron2(tiny_config(corpus["num_phones"], prenet_dropout=0.0)).eval()
    short, long = corpus[PRETRAINING_VOICE][2], corpus[PRETRAINING_VOICE][1]
    pair = make_batch([short, long], 0)
    model.set_normalization(*mel_statistics([pair]))
    out = model(pair["phones"], pair["phone_lens"], pair["mels"], pair["mel_lens"], pair["speakers"])
    frames = -(-len(long.mel) // 4) * 4
    assert out.mel.shape == out.mel_post.shape == out.target.shape == (2, frames, 80)
    assert out.stop_logits.shape == (2, frames)
    assert out.alignments.shape == (2, frames // 4, len(long.phones))
    # Attention never reaches the padding, and sums to one over the phones there are.
    assert float(out.alignments[0, :, len(short.phones):].abs().max()) == 0.0
    assert torch.allclose(out.alignments.sum(-1), torch.ones(2, frames // 4))

    alone = make_batch([short], 0)
    out_alone = model(alone["phones"], alone["phone_lens"], alone["mels"], alone["mel_lens"], alone["speakers"])
    valid = len(short.mel)
    assert torch.allclose(out.mel_post[0, :valid], out_alone.mel_post[0, :valid], atol=1e-5)
    # More padding, filled with garbage, leaves the utterance's loss as it was.
    padded = dict(alone, phones=torch.nn.functional.pad(alone["phones"], (0, 5)),
                  mels=torch.cat([alone["mels"], torch.full((1, 9, 80), 7.0)], dim=1))
    out_padded = model(padded["phones"], padded["phone_lens"], padded["mels"], padded["mel_lens"], padded["speakers"])
    loss_alone, terms_alone = tts_loss(out_alone, alone)
    loss_padded, terms_padded = tts_loss(out_padded, padded)
    assert float(loss_padded) == pytest.approx(float(loss_alone), rel=1e-5)
    assert terms_padded == pytest.approx(terms_alone, rel=1e-4)


def test_infer_stops_or_says_it_did_not(corpus):
    torch.manual_seed(0)
    model = Tacotron2(tiny_config(corpus["num_phones"]))
    phones = torch.tensor(corpus[PRETRAINING_VOICE][0].phones)
    with torch.no_grad():
        model.decoder.stop.bias.fill_(-30.0)  # never stops
    cut_off = model.infer(phones, speaker=0, max_frames=10)
    assert not cut_off.stopped
    assert cut_off.mel.shape == (10, 80) and cut_off.alignment.shape == (3, len(phones))
    with torch.no_grad():
        model.decoder.stop.bias.fill_(-30.0)
        model.decoder.stop.bias[1] = 30.0  # stops at the second frame of the first step
    stopped = model.infer(phones, speaker=0, max_frames=10)
    assert stopped.stopped and stopped.mel.shape == (2, 80) and stopped.alignment.shape == (1, len(phones))
    assert model.training  # infer leaves the mode as it found it


def test_set_speakers_keeps_rows_and_starts_new_ones_at_the_mean(corpus):
    model = Tacotron2(tiny_config(corpus["num_phones"], num_speakers=3))
    old = model.speaker_embedding.weight.detach().clone()
    model.set_speakers(5)
    grown = model.speaker_embedding.weight.detach()
    assert grown.shape == (5, 8) and model.config.num_speakers == 5
    assert torch.equal(grown[:3], old)
    assert torch.allclose(grown[3], old.mean(0)) and torch.allclose(grown[4], old.mean(0))
    Tacotron2(model.config).load_state_dict(model.state_dict())  # the config rebuilds the grown model
    model.set_speakers(2)
    assert torch.equal(model.speaker_embedding.weight.detach(), old[:2])


def test_attention_diagonality_measures_the_diagonal():
    diagonal = torch.eye(10)
    assert attention_diagonality(diagonal, 10, 10) == pytest.approx(1.0)
    assert attention_diagonality(diagonal.flip(0), 10, 10) < 0.3
    # Spread evenly: the band of three phones (two at either end) holds 28 of the 100 cells.
    assert attention_diagonality(torch.full((10, 10), 0.1), 10, 10) == pytest.approx(0.28)
    padded = torch.zeros(12, 14)
    padded[:10, :10] = diagonal
    assert attention_diagonality(padded, 10, 10) == pytest.approx(1.0)


def test_load_tts_model_names_a_file_that_is_not_one(tmp_path):
    with pytest.raises(StageError, match="missing"):
        load_tts_model(tmp_path / "model.pt")
    torch.save({"model": {}, "model_params": {"type": "tdnn"}}, tmp_path / "asr.pt")
    with pytest.raises(StageError, match="not a TTS model"):
        load_tts_model(tmp_path / "asr.pt")


TRAINING = TtsTrainingParams(epochs=30, lr=5e-3, warmup_steps=5, lr_decay=1.0)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Dict[str, object]:
    """A model trained on the pretraining voice's six sentences, and the untrained model's
    numbers on the same (teacher-forced) batches."""
    exp_dir = tmp_path_factory.mktemp("tts") / "pretrained"
    utterances = corpus[PRETRAINING_VOICE]
    config = tiny_config(corpus["num_phones"])
    torch.manual_seed(TRAINING.seed)
    untrained = Tacotron2(config)
    untrained.set_normalization(*mel_statistics([make_batch(utterances, 0)]))
    valid = batches_of(utterances, 0, batch_size=6)
    before_loss, before_diagonality = validate(untrained, valid(0), TRAINING)
    summary = train_tts(exp_dir, batches_of(utterances, 0, batch_size=3), valid, TRAINING, config)
    return {"exp_dir": exp_dir, "summary": summary, "before_loss": before_loss,
            "before_diagonality": before_diagonality, "before_terms": loss_terms(untrained, valid(0)),
            "after_terms": loss_terms(load_tts_model(exp_dir / "model.pt"), valid(0))}


def loss_terms(model: Tacotron2, batches: Iterator[Dict[str, object]]) -> Dict[str, float]:
    """The loss terms of the (one) batch, the prenet's dropout seeded alike for every model."""
    torch.manual_seed(0)
    with torch.no_grad():
        (batch,) = list(batches)
        output = model(batch["phones"], batch["phone_lens"], batch["mels"], batch["mel_lens"], batch["speakers"])
        return tts_loss(output, batch)[1]


@pytest.mark.slow
def test_training_lowers_the_loss_and_aligns(trained, corpus):
    summary, before, after = trained["summary"], trained["before_terms"], trained["after_terms"]
    print(f"valid loss {trained['before_loss']:.3f} -> {summary['valid_losses'][-1]:.3f}, diagonality "
          f"{trained['before_diagonality']:.3f} -> {summary['diagonalities'][-1]:.3f}; terms {before} -> {after}")
    assert trained["before_diagonality"] < ALIGNED < summary["diagonalities"][-1]
    # Measured: the loss to 0.52 of the untrained model's, the frames' L1 after the postnet to 0.67.
    assert summary["valid_losses"][-1] < 0.65 * trained["before_loss"]
    assert summary["train_losses"][-1] < 0.65 * summary["train_losses"][0]
    assert after["post_l1"] < 0.8 * before["post_l1"] and after["mel_l1"] < before["mel_l1"]

    exp_dir = trained["exp_dir"]
    lines = (exp_dir / "log" / "log-train.txt").read_text().splitlines()
    epoch_lines = [line for line in lines if ": epoch " in line]
    assert len(epoch_lines) == TRAINING.epochs
    assert all(term in epoch_lines[-1] for term in ("mel_l1", "post_mse", "stop", "guided", "valid loss",
                                                    "diagonality"))
    assert sorted(p.name for p in exp_dir.glob("epoch-*.pt")) == ["epoch-29.pt", "epoch-30.pt"]
    model = load_tts_model(exp_dir / "model.pt")
    assert not model.training and float(model.mel_std.min()) > 0 and float(model.mel_mean.mean()) < 0
    synthesis = model.infer(torch.tensor(corpus[PRETRAINING_VOICE][0].phones), speaker=0, max_frames=400)
    assert synthesis.mel.shape[1] == 80 and len(synthesis.mel) <= 400
    # De-normalized: log mel power, whose speech frames lie far above silence's floor near -16.
    assert -16.5 < float(synthesis.mel.mean()) < 5


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_weights(corpus, tmp_path):
    utterances = corpus[PRETRAINING_VOICE][:2]
    config = tiny_config(corpus["num_phones"])
    params = TtsTrainingParams(epochs=3, warmup_steps=2)
    batches, valid = batches_of(utterances, 0, batch_size=1), batches_of(utterances, 0, batch_size=2)
    train_tts(tmp_path / "uninterrupted", batches, valid, params, config)

    def killed_in_epoch_3(epoch: int) -> Iterator[Dict[str, object]]:
        for i, batch in enumerate(batches(epoch)):
            if epoch == 3 and i == 1:
                raise KeyboardInterrupt
            yield batch

    with pytest.raises(KeyboardInterrupt):
        train_tts(tmp_path / "killed", killed_in_epoch_3, valid, params, config)
    assert not (tmp_path / "killed" / "model.pt").exists()
    train_tts(tmp_path / "killed", batches, valid, params, config)
    assert "resuming from" in (tmp_path / "killed" / "log" / "log-train.txt").read_text()
    assert state_dicts_equal(tmp_path / "uninterrupted" / "model.pt", tmp_path / "killed" / "model.pt")


@pytest.mark.slow
def test_finetuning_with_and_without_rehearsal(trained, corpus, tmp_path):
    pretrained = trained["exp_dir"] / "model.pt"
    target = batches_of(corpus[NEW_VOICE][:2], 1, batch_size=1)  # the new voice: the first new row
    source = batches_of(corpus[PRETRAINING_VOICE], 0, batch_size=1)
    rehearsed_epochs: List[int] = []

    def counted_source(epoch: int) -> Iterator[Dict[str, object]]:
        rehearsed_epochs.append(epoch)
        return source(epoch)

    def finetune(name: str, alpha: float, **kwargs) -> Path:
        params = TtsTrainingParams(epochs=2, lr=1e-3, warmup_steps=1, alpha=alpha)
        train_tts(tmp_path / name, target, target, params, init_from=pretrained, **kwargs)
        return tmp_path / name / "model.pt"

    rehearsal = finetune("rehearsal", 0.5, pretraining_batches=counted_source)
    assert rehearsed_epochs == [1, 2]
    assert " pre " in (tmp_path / "rehearsal" / "log" / "log-train.txt").read_text()
    plain = finetune("plain", 0.0)
    ignored = finetune("alpha0", 0.0, pretraining_batches=counted_source)
    assert rehearsed_epochs == [1, 2]  # alpha = 0 never draws a pretraining batch
    assert state_dicts_equal(plain, ignored) and not state_dicts_equal(plain, rehearsal)

    source_model, model = load_tts_model(pretrained), load_tts_model(plain)
    assert model.config.num_speakers == 2
    assert torch.equal(model.mel_mean, source_model.mel_mean)  # the pretrained normalization is kept
    with pytest.raises(StageError, match="pretraining_batches"):
        finetune("no_source", 0.5)
