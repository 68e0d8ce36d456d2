"""significance: bootstrap intervals of a WER and of a difference, checked against kaldialign's
compute-wer-bootci and against what resampling must do (wider with fewer utterances, no
difference between a system and itself)."""
import random
from pathlib import Path
from typing import Dict, List

import kaldialign
import pytest

from speechtune.errors import StageError
from speechtune.scoring.wer import score_decode_dir
from speechtune.scoring.significance import bootstrap_difference, format_difference, utterance_errors, wer_ci, wer_difference_ci

VOCAB = "TURN ON OFF THE KITCHEN LIGHTS SET A TIMER FOR TEN MINUTES PLAY SOME JAZZ".split()
Table = Dict[str, List[str]]


def write_table(path: Path, table: Table) -> Path:
    path.write_text("".join(f"{utt} {' '.join(words)}".rstrip() + "\n" for utt, words in table.items()))
    return path


def make_refs(num_utts: int, seed: int = 0) -> Table:
    rng = random.Random(seed)
    return {f"spk{i % 4}-u{i:04d}": [rng.choice(VOCAB) for _ in range(rng.randint(2, 10))] for i in range(num_utts)}


def corrupt(refs: Table, rate: float, seed: int) -> Table:
    """Each word substituted, deleted or followed by an insertion with probability ``rate``."""
    rng = random.Random(seed)
    hyps = {}
    for utt, words in refs.items():
        out = []
        for word in words:
            roll = rng.random()
            if roll < rate / 3:
                out.append(rng.choice([w for w in VOCAB if w != word]))
            elif roll < 2 * rate / 3:
                continue
            elif roll < rate:
                out += [word, rng.choice(VOCAB)]
            else:
                out.append(word)
        hyps[utt] = out
    return hyps


@pytest.fixture
def test_set(tmp_path: Path):
    refs = make_refs(120)
    write_table(tmp_path / "utt2spk", {utt: [utt.split("-")[0]] for utt in refs})
    return tmp_path, refs, write_table(tmp_path / "ref.txt", refs)


def test_ci_brackets_the_wer_which_is_score_s(test_set):
    path, refs, ref_path = test_set
    hyp_path = write_table(path / "hyp.txt", corrupt(refs, 0.25, seed=1))
    result = wer_ci(ref_path, hyp_path)
    assert result["ci_low"] < result["wer"] < result["ci_high"]
    assert result["wer"] == pytest.approx(score_decode_dir(path).wer)
    assert (result["utterances"], result["replications"], result["level"]) == (120, 1000, 0.95)
    assert result == wer_ci(ref_path, hyp_path)  # seeded


def test_agrees_with_kaldialign_compute_wer_bootci(test_set):
    path, refs, ref_path = test_set
    hyps_a, hyps_b = corrupt(refs, 0.3, seed=1), corrupt(refs, 0.25, seed=2)
    ours = wer_difference_ci(ref_path, write_table(path / "a.txt", hyps_a), write_table(path / "b.txt", hyps_b),
                             replications=4000)
    utts = sorted(refs)
    theirs = kaldialign.bootstrap_wer_ci(
        [refs[u] for u in utts], [hyps_a[u] for u in utts], [hyps_b[u] for u in utts], replications=4000, seed=7
    )
    for ours_system, theirs_system in ((ours["a"], theirs["system1"]), (ours["b"], theirs["system2"])):
        width = ours_system["ci_high"] - ours_system["ci_low"]
        assert 100 * theirs_system["wer"] == pytest.approx(ours_system["wer"], abs=0.1 * width)
        assert 100 * theirs_system["ci95min"] == pytest.approx(ours_system["ci_low"], abs=0.15 * width)
        assert 100 * theirs_system["ci95max"] == pytest.approx(ours_system["ci_high"], abs=0.15 * width)
    assert theirs["p_s2_improv_over_s1"] == pytest.approx(ours["p_improvement"], abs=0.05)
    assert 0.05 < ours["p_improvement"] < 0.999  # a close pair: the check above means something


def test_ci_shrinks_with_more_utterances(tmp_path: Path):
    refs = make_refs(50)
    hyps = corrupt(refs, 0.3, seed=1)
    widths = []
    for copies in (1, 4):
        refs_n = {f"{utt}-c{c}": words for c in range(copies) for utt, words in refs.items()}
        hyps_n = {f"{utt}-c{c}": words for c in range(copies) for utt, words in hyps.items()}
        result = wer_ci(write_table(tmp_path / f"ref{copies}.txt", refs_n),
                        write_table(tmp_path / f"hyp{copies}.txt", hyps_n))
        widths.append(result["ci_high"] - result["ci_low"])
    # The same WER on 4x the utterances: the interval is about half as wide (1/sqrt(4)).
    assert 0.35 < widths[1] / widths[0] < 0.65


def test_identical_systems_differ_by_nothing(test_set):
    path, refs, ref_path = test_set
    hyp_path = write_table(path / "hyp.txt", corrupt(refs, 0.25, seed=1))
    result = wer_difference_ci(ref_path, hyp_path, hyp_path)
    assert (result["difference"], result["ci_low"], result["ci_high"]) == (0.0, 0.0, 0.0)
    assert result["p_improvement"] < 0.5
    assert format_difference(result, "a", "b") == "b vs a: 0.0 abs, 95% CI [0.0, 0.0], P(improvement) = 0.00"


def test_a_clearly_better_system_is_almost_surely_better(test_set):
    path, refs, ref_path = test_set
    worse = write_table(path / "worse.txt", corrupt(refs, 0.4, seed=1))
    better = write_table(path / "better.txt", corrupt(refs, 0.05, seed=2))
    result = wer_difference_ci(ref_path, worse, better)
    assert result["difference"] == pytest.approx(result["b"]["wer"] - result["a"]["wer"])
    assert result["ci_low"] < result["difference"] < result["ci_high"] < 0
    assert result["p_improvement"] > 0.99
    reverse = wer_difference_ci(ref_path, better, worse)
    assert reverse["p_improvement"] < 0.01 and reverse["ci_low"] > 0


def test_formats_a_difference_line():
    result = {"difference": -12.34, "ci_low": -14.0, "ci_high": -10.61, "p_improvement": 0.999, "level": 0.95}
    assert format_difference(result, "pretrained", "finetuned") == (
        "finetuned vs pretrained: \u221212.3 abs, 95% CI [\u221214.0, \u221210.6], P(improvement) = 1.00"
    )
    result = {"difference": 0.4, "ci_low": -1.25, "ci_high": 2.0, "p_improvement": 0.31, "level": 0.9}
    assert format_difference(result, "scratch", "finetuned") == (
        "finetuned vs scratch: +0.4 abs, 90% CI [\u22121.2, +2.0], P(improvement) = 0.31"
    )


def test_mismatched_utterances_are_an_error_naming_the_files(test_set, tmp_path: Path):
    path, refs, ref_path = test_set
    hyps = corrupt(refs, 0.2, seed=1)
    good = write_table(path / "good.txt", hyps)
    renamed = dict(hyps)
    renamed["spk9-other"] = renamed.pop("spk0-u0000")
    bad = write_table(path / "bad.txt", renamed)
    with pytest.raises(StageError, match=r"bad\.txt lacks 1 utterances of .*ref\.txt \(first: spk0-u0000\) "
                                         r"and has 1 utterances .*ref\.txt lacks \(first: spk9-other\)"):
        wer_difference_ci(ref_path, good, bad)

    other_ref = write_table(tmp_path / "other_ref.txt", make_refs(119, seed=5))
    other_hyp = write_table(tmp_path / "other_hyp.txt", make_refs(119, seed=5))
    with pytest.raises(StageError, match=r"good\.txt and .*other_hyp\.txt are not on the same utterances"):
        bootstrap_difference(utterance_errors(ref_path, good), utterance_errors(other_ref, other_hyp))

    same_ids = write_table(tmp_path / "same_ids_ref.txt", make_refs(120, seed=5))
    with pytest.raises(StageError, match=r"ref\.txt and .*same_ids_ref\.txt give utterance .* different reference words"):
        bootstrap_difference(utterance_errors(ref_path, good), utterance_errors(same_ids, good))
