"""Render a test set's sentences with a trained TTS system (the ``tts_synthesize`` stage)::

    synthesize_test_set(Path("exp/tts/finetuned/model.pt"), Path("data/tts/fbank/voice_test_cuts.jsonl.gz"),
                        Path("exp/tts/finetuned/synth"), tts, seed=1234)

writes a Kaldi data dir of the syntheses, so that any recognizer here reads them as it reads a
test set::

    exp/tts/finetuned/synth/
        wav/<utt>.wav      16 kHz mono 16-bit, the vocoder's rendering of the predicted mels
        wav.scp, text, utt2spk
        synthesis.json     per utterance: frames, the reference's frames, stopped, diagonality;
                           and the attention health summary (speechtune.tts.evaluation)
        alignments.png     the attention of the first utterances (a diagonal is healthy)

Each utterance is drawn with the random generator seeded from ``seed`` and its position (the
prenet's dropout stays on at inference, as in Tacotron 2), so a rerun renders the same audio.
``unseen_voice``: the model never had the test voice (the pretrained system): a speaker row at
the mean of its voices is added and used; otherwise the voice is the table's last row.
"""
import json
from pathlib import Path
from typing import Any, Dict, Mapping

import soundfile as sf
import torch
from tqdm import tqdm

from speechtune.data.tables import write_table
from speechtune.provenance import StageRun, atomic_dir
from speechtune.tts.data import PhoneInventory, cut_phones, load_tts_cuts
from speechtune.tts.evaluation import attention_health
from speechtune.tts.features import MEL, SAMPLE_RATE
from speechtune.tts.model import Synthesis
from speechtune.tts.training import attention_diagonality, load_tts_model
from speechtune.tts.vocoder import VOCODERS

PLOTTED_ALIGNMENTS = 4


def plot_alignments(syntheses: Mapping[str, Synthesis], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(syntheses.items())[:PLOTTED_ALIGNMENTS]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.2), squeeze=False)
    for ax, (utt, synthesis) in zip(axes[0], shown):
        ax.imshow(synthesis.alignment.numpy().T, origin="lower", aspect="auto", interpolation="none")
        ax.set_title(f"{utt}{'' if synthesis.stopped else ' (never stopped)'}", fontsize=8)
        ax.set_xlabel("decoder step")
        ax.set_ylabel("phone")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def synthesize_test_set(model_path: Path, test_cuts: Path, out_dir: Path, tts: Mapping[str, Any],
                        seed: int, unseen_voice: bool = False, run: StageRun = None) -> Dict[str, Any]:
    """The stage: see the module docstring. Returns synthesis.json's content."""
    model = load_tts_model(model_path)
    if unseen_voice:
        model.set_speakers(model.config.num_speakers + 1)
    voice_row = model.config.num_speakers - 1
    inventory = PhoneInventory.cmudict()
    cuts = load_tts_cuts(test_cuts)
    vocoder_config = dict(tts["vocoder"])
    vocoder = VOCODERS.get(vocoder_config.pop("name"))(**vocoder_config)
    max_frames = int(tts["synthesize"]["max_seconds"] / MEL.frame_shift)
    syntheses: Dict[str, Synthesis] = {}
    utterances: Dict[str, Dict[str, Any]] = {}
    with atomic_dir(out_dir) as tmp:
        (tmp / "wav").mkdir()
        for i, cut in enumerate(tqdm(cuts, desc=f"synthesizing {out_dir}")):
            torch.manual_seed(seed * 100003 + i)
            phones = cut_phones(cut)
            synthesis = model.infer(torch.tensor(inventory.encode(phones)), voice_row, max_frames)
            sf.write(tmp / "wav" / f"{cut.id}.wav", vocoder.vocode(synthesis.mel.numpy()), SAMPLE_RATE,
                     subtype="PCM_16")
            syntheses[cut.id] = synthesis
            utterances[cut.id] = {
                "frames": len(synthesis.mel), "reference_frames": cut.num_frames, "stopped": synthesis.stopped,
                "diagonality": round(attention_diagonality(synthesis.alignment, len(phones), len(synthesis.alignment)), 4)}
        ids = sorted(utterances)
        write_table(tmp / "wav.scp", [(utt, str(out_dir / "wav" / f"{utt}.wav")) for utt in ids])
        write_table(tmp / "text", [(utt, cuts[utt].supervisions[0].text) for utt in ids])
        write_table(tmp / "utt2spk", [(utt, cuts[utt].supervisions[0].speaker) for utt in ids])
        health = attention_health(syntheses, {utt: len(cut_phones(cuts[utt])) for utt in ids},
                                  {utt: cuts[utt].num_frames for utt in ids})
        summary = {"model": str(model_path), "voice_row": voice_row, "unseen_voice": unseen_voice,
                   "attention": health, "utterances": utterances}
        (tmp / "synthesis.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        plot_alignments(syntheses, tmp / "alignments.png")
        if run is not None:
            run.log.info("%s: %d utterances; attention: diagonality %.3f, %d stop-token errors (%d never stopped)",
                         out_dir, len(ids), health["mean_diagonality"], health["stop_token_errors"],
                         len(health["failed"]))
            run.write_provenance(tmp / "provenance.json", model=str(model_path), utterances=len(ids))
    return summary
