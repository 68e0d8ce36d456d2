"""score: Kaldi's %WER line, checked against jiwer on the same hypotheses."""
import json
import random

import jiwer
import pytest

from speechtune.errors import StageError
from speechtune.scoring.wer import score_decode_dir
from stages.score import main

VOCAB = "TURN ON OFF THE KITCHEN LIGHTS SET A TIMER FOR TEN MINUTES PLAY JAZZ".split()


def write_table(path, table):
    path.write_text("".join(f"{utt} {' '.join(words)}".rstrip() + "\n" for utt, words in table.items()))


def corrupt(words, rng):
    out = list(words)
    for _ in range(rng.randint(0, 3)):
        op = rng.choice("sid")
        pos = rng.randrange(len(out) + 1)
        if op == "i":
            out.insert(pos, rng.choice(VOCAB))
        elif out and pos < len(out):
            if op == "s":
                out[pos] = rng.choice(VOCAB)
            else:
                del out[pos]
    return out


@pytest.fixture
def decode_dir(tmp_path):
    rng = random.Random(3)
    refs = {f"spk{i % 3}-u{i:03d}": [rng.choice(VOCAB) for _ in range(rng.randint(1, 9))] for i in range(60)}
    hyps = {utt: corrupt(words, rng) for utt, words in refs.items()}
    hyps["spk0-u000"] = []  # an utterance the decoder found nothing for
    write_table(tmp_path / "ref.txt", refs)
    write_table(tmp_path / "hyp.txt", hyps)
    write_table(tmp_path / "utt2spk", {utt: [utt.split("-")[0]] for utt in refs})
    return tmp_path, refs, hyps


def test_wer_agrees_with_jiwer(decode_dir):
    path, refs, hyps = decode_dir
    total = score_decode_dir(path)
    utts = sorted(refs)
    expected = jiwer.process_words([" ".join(refs[u]) for u in utts], [" ".join(hyps[u]) for u in utts])
    assert total.errors == expected.substitutions + expected.deletions + expected.insertions
    assert total.words == sum(len(refs[u]) for u in utts)
    assert total.wer == pytest.approx(100 * expected.wer)
    assert total.errors > 0


def test_kaldi_line_first_and_per_utt_and_per_speaker_files(decode_dir):
    path, refs, _ = decode_dir
    total = score_decode_dir(path)
    first = (path / "wer.txt").read_text().splitlines()[0]
    assert first == f"%WER {total.wer:.2f} [ {total.errors} / {total.words}, {total.ins} ins, {total.dels} del, {total.subs} sub ]"
    per_utt = (path / "per_utt.txt").read_text().splitlines()
    assert len(per_utt) == 4 * len(refs)
    assert per_utt[0].startswith("spk0-u000 ref") and per_utt[3].startswith("spk0-u000 #csid 0 0 0 ")
    summary = json.loads((path / "wer.json").read_text())
    assert sum(s["words"] for s in summary["per_speaker"].values()) == summary["words"] == total.words
    assert sorted(summary["per_speaker"]) == ["spk0", "spk1", "spk2"]
    assert len((path / "per_spk.txt").read_text().splitlines()) == 4


def test_missing_hypothesis_is_an_error(decode_dir, tmp_path):
    path, _, hyps = decode_dir
    del hyps["spk1-u001"]
    write_table(path / "hyp.txt", hyps)
    with pytest.raises(StageError, match="lacks 1 of 60 utterances"):
        score_decode_dir(path)


def test_cli_prints_and_copies_the_kaldi_line(decode_dir, capsys):
    path, _, _ = decode_dir
    main([str(path), "--copy-to", str(path / "copy" / "wer.txt")])
    line = capsys.readouterr().out.strip()
    assert line.startswith("%WER ") and (path / "copy" / "wer.txt").read_text().startswith(line)


def test_ctc_greedy_search_merges_repeats_drops_blanks_and_joins_pieces():
    import torch

    from speechtune.decoding import greedy_words

    tokens = {0: "<blk>", 1: "\u2581TURN", 2: "\u2581O", 3: "N", 4: "\u2581LIGHTS"}
    frames = [1, 1, 0, 2, 3, 3, 0, 0, 4, 0, 4]  # the second LIGHTS follows a blank: kept
    log_probs = torch.nn.functional.one_hot(torch.tensor(frames + [1, 1]), 5).float().log()
    assert greedy_words(log_probs, len(frames), tokens) == ["TURN", "ON", "LIGHTS", "LIGHTS"]
