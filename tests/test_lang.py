"""lang: icefall-compatible lang dirs (BPE and CMUdict phones), LMs and HLGs that decode."""
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import k2
import pytest
import sentencepiece as spm
import torch
from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment

from speechtune.errors import StageError
from speechtune.config import validate_config
from speechtune.lang.lang_dir import add_disambig_symbols, prepare_lang
from stages.lang import main
from speechtune.provenance import StageRun
from tests.conftest import REPO_ROOT

CONFIG = {
    "unit": "bpe",
    # Tiny text cannot support many pieces: let sentencepiece stop below vocab_size.
    "bpe": {"vocab_size": 60, "model_type": "unigram", "character_coverage": 1.0, "hard_vocab_limit": False},
    "lm": {"order": 3},
}
PHONE_CONFIG = dict(CONFIG, unit="phone")

# Source: general sentences; target: smart-speaker commands from a toy grammar.
SOURCE_TEXTS = [
    f"THE {adj} {noun} {verb} THE {obj}"
    for adj, noun, verb, obj in itertools.product(
        ["OLD", "QUIET", "CLEVER"], ["DOG", "TEACHER", "FARMER"], ["FOLLOWED", "WATCHED"],
        ["RIVER", "CHILDREN"],
    )
]
TARGET_TEXTS = [
    f"TURN {state} THE {room} LIGHTS"
    for state, room in itertools.product(["ON", "OFF"], ["KITCHEN", "BEDROOM", "HALL"])
] + [f"SET A TIMER FOR {n} MINUTES" for n in ["TWO", "FIVE", "TEN", "TWENTY"]] + [
    # Spellings that are prefixes of others (A, AN, ALARM; ON, ONE) need disambiguation symbols.
    "SET AN ALARM FOR ONE", "WHAT'S THE WEATHER",
]


def write_cuts(path: Path, texts: Sequence[str]) -> Path:
    """A cut manifest with one cut per text; the recordings are never loaded."""
    cuts = []
    for i, text in enumerate(texts):
        cut_id = f"{path.name.split('_')[0]}-{i:04d}"
        recording = Recording(
            id=cut_id, sources=[AudioSource(type="file", channels=[0], source="/nonexistent.wav")],
            sampling_rate=16000, num_samples=16000, duration=1.0,
        )
        supervision = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0, duration=1.0, text=text)
        cuts.append(
            MonoCut(cut_id, start=0, duration=1.0, channel=0, recording=recording, supervisions=[supervision])
        )
    CutSet.from_cuts(cuts).to_file(path)
    return path


def read_table(path: Path) -> Dict[str, int]:
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        symbol, index = line.split()
        table[symbol] = int(index)
    return table


def read_lexicon(path: Path) -> List[List[str]]:
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines()]


def run_lang(
    train_cuts: List[Path], lm_texts: List[Tuple[str, Path]], lang_dir: Path, config: dict = CONFIG
) -> Path:
    prepare_lang(train_cuts, lm_texts, lang_dir, config, StageRun("lang", config, 0))
    return lang_dir


def build(tmp: Path, config: dict, target_texts: Sequence[str] = TARGET_TEXTS) -> Path:
    source = write_cuts(tmp / "source_train_cuts.jsonl.gz", SOURCE_TEXTS)
    target = write_cuts(tmp / "target_train_cuts.jsonl.gz", target_texts)
    return run_lang([source, target], [("target", target), ("source", source)], tmp / "lang", config)


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("bpe"), CONFIG)


@pytest.fixture(scope="module")
def phone_dir(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("phone"), PHONE_CONFIG, TARGET_TEXTS + ["PLAY ZORBLAXIAN JAZZ"] * 2)


def test_test_configs_match_the_schema():
    validate_config(CONFIG, section="lang")
    validate_config(PHONE_CONFIG, section="lang")


def test_bpe_tables_and_lexicon_are_consistent(bpe_dir):
    tokens, words = read_table(bpe_dir / "tokens.txt"), read_table(bpe_dir / "words.txt")
    # icefall's conventions: blank 0, <sos/eos> 1, <unk> 2; words <eps> 0 ... #0 <s> </s>.
    assert list(tokens)[:3] == ["<blk>", "<sos/eos>", "<unk>"] and list(tokens.values())[:3] == [0, 1, 2]
    assert list(words)[:2] == ["<eps>", "<UNK>"] and list(words)[-3:] == ["#0", "<s>", "</s>"]
    assert list(words.values()) == list(range(len(words)))
    vocabulary = {w for text in SOURCE_TEXTS + TARGET_TEXTS for w in text.split()}
    assert set(words) - {"<eps>", "<UNK>", "#0", "<s>", "</s>"} == vocabulary
    assert list(words)[2:-3] == sorted(vocabulary)
    # Disambiguation symbols come after every real token.
    disambig = [t for t in tokens if t.startswith("#")]
    assert disambig[0] == "#0" and list(tokens.values()) == list(range(len(tokens)))
    assert list(tokens)[-len(disambig):] == disambig

    sp = spm.SentencePieceProcessor(model_file=str(bpe_dir / "bpe.model"))
    assert sp.get_piece_size() == tokens["#0"]
    lexicon = read_lexicon(bpe_dir / "lexicon.txt")
    for word, *pieces in lexicon:
        assert word in words and all(p in tokens for p in pieces)
        expected = ["<unk>"] if word == "<UNK>" else sp.encode(word, out_type=str)
        assert pieces == expected
    # Target words are spelled with pieces learned on source text, never with <unk>,
    # although some of their characters (K, B, ') never occur in the source text.
    assert set("".join(TARGET_TEXTS)) - set("".join(SOURCE_TEXTS))
    assert all("<unk>" not in pieces for word, *pieces in lexicon if word != "<UNK>")
    lexicon_disambig = read_lexicon(bpe_dir / "lexicon_disambig.txt")
    assert [entry[0] for entry in lexicon_disambig] == [entry[0] for entry in lexicon]
    assert any(entry[-1] == "#1" for entry in lexicon_disambig)  # A, ON: prefixes of AN, ONE
    for (word, *plain), (_, *marked) in zip(lexicon, lexicon_disambig):
        assert marked[: len(plain)] == plain
        assert all(t in tokens and t.startswith("#") for t in marked[len(plain):])
    # k2 reads both tables.
    assert k2.SymbolTable.from_file(str(bpe_dir / "words.txt"))["#0"] == words["#0"]
    assert (bpe_dir / "oov.txt").read_text() == ""
    provenance = json.loads((bpe_dir / "provenance.json").read_text())
    assert provenance["config"] == CONFIG and provenance["num_tokens"] == sp.get_piece_size()
    assert set(provenance["lms"]) == {"target", "source"}


def test_add_disambig_symbols_marks_prefixes_and_homophones():
    lexicon = [
        ("A", ["a"]), ("AB", ["a", "b"]), ("RED", ["r", "e", "d"]), ("READ", ["r", "e", "d"]), ("X", ["x"]),
    ]
    disambig, max_disambig = add_disambig_symbols(lexicon)
    assert disambig == [
        ("A", ["a", "#1"]), ("AB", ["a", "b"]), ("RED", ["r", "e", "d", "#1"]),
        ("READ", ["r", "e", "d", "#2"]), ("X", ["x"]),
    ]
    assert max_disambig == 2


def words_of(best_path: k2.Fsa, words: Dict[str, int]) -> List[str]:
    id2word = {i: w for w, i in words.items()}
    return [id2word[i] for i in k2.get_aux_labels(best_path)[0]]


def spell(sentence: str, lang_dir: Path, lexicon: str = "lexicon.txt") -> List[int]:
    tokens = read_table(lang_dir / "tokens.txt")
    spelling = {}
    for word, *units in read_lexicon(lang_dir / lexicon):
        spelling.setdefault(word, units)  # the first pronunciation
    return [tokens[unit] for word in sentence.split() for unit in spelling[word]]


@pytest.mark.parametrize("name", ["L", "L_disambig"])
def test_L_maps_a_spelling_to_its_words(bpe_dir, name):
    L = k2.arc_sort(k2.Fsa.from_dict(torch.load(bpe_dir / f"{name}.pt")))
    sentence = "SET AN ALARM FOR ONE"
    spelled = k2.linear_fsa(spell(sentence, bpe_dir, name.replace("L", "lexicon") + ".txt"))
    path = k2.shortest_path(k2.create_fsa_vec([k2.connect(k2.intersect(L, spelled))]), use_double_scores=True)
    assert words_of(path, read_table(bpe_dir / "words.txt")) == sentence.split()


def test_lms_have_their_orders_and_graphs_load(bpe_dir):
    words = read_table(bpe_dir / "words.txt")
    for domain in ("target", "source"):
        lm_dir = bpe_dir / f"lm_{domain}"
        header = lm_dir.joinpath("lm.arpa").read_text(encoding="utf-8").split("\n\n")[0].splitlines()
        counts = dict(line.split()[1].split("=") for line in header[1:])
        assert sorted(counts) == ["1", "2", "3"] and all(int(c) > 0 for c in counts.values())
        G = k2.Fsa.from_dict(torch.load(lm_dir / "G.pt"))
        assert G.num_arcs > 0 and int(G.labels.max()) <= words["#0"]
        HLG = k2.Fsa.from_dict(torch.load(lm_dir / "HLG.pt"))
        assert HLG.num_arcs > 0 and hasattr(HLG, "tokens")
        # No disambiguation symbol is left: HLG's labels are CTC tokens, its words real words.
        assert int(HLG.labels.max()) < read_table(bpe_dir / "tokens.txt")["#0"]
        assert int(HLG.aux_labels.values.max()) < words["#0"]


def decode(HLG: k2.Fsa, token_ids: Sequence[int], num_classes: int) -> k2.Fsa:
    """The best path of HLG for fake CTC output that says ``token_ids``, blank-separated."""
    frames = [t for token in token_ids for t in (token, 0)]
    logits = torch.zeros(1, len(frames), num_classes)
    logits[0, torch.arange(len(frames)), torch.tensor(frames)] = 15.0
    lengths = torch.tensor([len(frames)])
    lattice = k2.get_lattice(logits.log_softmax(-1), lengths, HLG, search_beam=20, output_beam=8)
    return k2.one_best_decoding(lattice)


@pytest.mark.parametrize("fixture", ["bpe_dir", "phone_dir"])
@pytest.mark.parametrize("domain, sentence", [("target", TARGET_TEXTS[7]), ("source", SOURCE_TEXTS[5])])
def test_hlg_decodes_a_training_sentence(request, fixture, domain, sentence):
    lang_dir = request.getfixturevalue(fixture)
    HLG = k2.Fsa.from_dict(torch.load(lang_dir / f"lm_{domain}" / "HLG.pt"))
    num_classes = read_table(lang_dir / "tokens.txt")["#0"]
    best_path = decode(HLG, spell(sentence, lang_dir), num_classes)
    assert words_of(best_path, read_table(lang_dir / "words.txt")) == sentence.split()


def test_phone_lexicon_from_cmudict_counts_oovs(phone_dir):
    tokens, words = read_table(phone_dir / "tokens.txt"), read_table(phone_dir / "words.txt")
    assert not (phone_dir / "bpe.model").exists()
    assert list(tokens)[0] == "<blk>" and {"AH", "SPN", "#0"} <= set(tokens)
    assert not any(ch.isdigit() for t in tokens if not t.startswith("#") for ch in t)  # stress removed
    lexicon = read_lexicon(phone_dir / "lexicon.txt")
    assert ["TIMER", "T", "AY", "M", "ER"] in lexicon and ["<UNK>", "SPN"] in lexicon
    assert all(unit in tokens for _, *units in lexicon for unit in units)
    # The OOV policy: out of words.txt, counted, and <UNK> in the LM text.
    assert "ZORBLAXIAN" not in words and "JAZZ" in words
    assert (phone_dir / "oov.txt").read_text() == "ZORBLAXIAN 2\n"
    assert "PLAY <UNK> JAZZ" in (phone_dir / "lm_target" / "text.txt").read_text()
    oov = json.loads((phone_dir / "provenance.json").read_text())["oov"]
    target = next(v for k, v in oov.items() if k.endswith("target_train_cuts.jsonl.gz"))
    assert target["oov_types"] == 1 and target["oov_tokens"] == 2


def test_same_text_and_seed_give_the_same_files(bpe_dir, tmp_path):
    again = build(tmp_path, CONFIG)
    for name in ("bpe.model", "words.txt", "lexicon_disambig.txt", "L_disambig.pt", "lm_source/HLG.pt"):
        assert (again / name).read_bytes() == (bpe_dir / name).read_bytes(), name


def test_cli_writes_the_lang_dir(tmp_path):
    source = write_cuts(tmp_path / "source_train_cuts.jsonl.gz", SOURCE_TEXTS)
    target = write_cuts(tmp_path / "target_train_cuts.jsonl.gz", TARGET_TEXTS)
    main([
        str(source), str(target), "--lm-text", f"target={target}", str(tmp_path / "lang"),
        "--config-json", json.dumps(CONFIG), "--seed", "3",
    ])
    assert (tmp_path / "lang" / "lm_target" / "HLG.pt").is_file()
    assert not (tmp_path / "lang" / "lm_source").exists()
    assert json.loads((tmp_path / "lang" / "provenance.json").read_text())["seed"] == 3
    assert not list(tmp_path.glob(".tmp-*"))


def test_help():
    out = subprocess.run(
        [sys.executable, "-m", "stages.lang", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout
    assert "--lm-text DOMAIN=CUTS" in out and "OOV policy" in out


def test_missing_cuts_file_is_named(tmp_path):
    source = write_cuts(tmp_path / "source_train_cuts.jsonl.gz", SOURCE_TEXTS)
    missing = tmp_path / "target_train_cuts.jsonl.gz"
    with pytest.raises(StageError, match=f"{missing}: no such cut manifest.*prepare"):
        run_lang([source, missing], [("target", missing)], tmp_path / "lang")
    assert not (tmp_path / "lang").exists()


def test_cuts_without_text_are_an_error(tmp_path):
    silent = write_cuts(tmp_path / "source_train_cuts.jsonl.gz", ["", ""])
    with pytest.raises(StageError, match=f"{silent}: no supervision has text"):
        run_lang([silent], [("source", silent)], tmp_path / "lang")


def test_too_large_a_hard_vocabulary_says_what_to_change(tmp_path):
    config = dict(CONFIG, bpe=dict(CONFIG["bpe"], vocab_size=5000, hard_vocab_limit=True))
    source = write_cuts(tmp_path / "source_train_cuts.jsonl.gz", SOURCE_TEXTS)
    with pytest.raises(StageError, match="lower lang.bpe.vocab_size or set lang.bpe.hard_vocab_limit: false"):
        run_lang([source], [("source", source)], tmp_path / "lang", config)


def test_a_domain_given_twice_is_an_error(tmp_path):
    source = write_cuts(tmp_path / "source_train_cuts.jsonl.gz", SOURCE_TEXTS)
    with pytest.raises(StageError, match="names a domain twice"):
        run_lang([source], [("a", source), ("a", source)], tmp_path / "lang")
