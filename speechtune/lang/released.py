"""A released icefall model's ``data/lang_phone`` as one of our lang dirs: its tokens are the
model's outputs, so they are kept id for id; the words, lexicon and L are the model's; the LM
and HLG are the domain's own (or, if asked, the released ``HLG.pt``)::

    import_lang_dir(Path("icefall_asr_librispeech_tdnn-lstm_ctc/data/lang_phone"),
                    [("target", Path("data/manifests/target_train_cuts.jsonl.gz"))],
                    Path("data/lang_phone_target"), config["lang"], run,
                    lexicon=Path("librispeech-lexicon.txt"))

The released lang dir is icefall's layout (``egs/librispeech/ASR/local/prepare_lang.py``):
``tokens.txt`` (older releases: ``phones.txt``) with ``<eps> 0`` first -- the CTC blank of
tdnn_lstm_ctc -- then the phones sorted, then ``#0``, ``#1``, ...; ``words.txt`` with ``<eps> 0``,
the words sorted, ``#0``, ``<s>``, ``</s>``; and, where the release has it, ``lexicon.txt``.
The released LibriSpeech model ships only ``HLG.pt``, ``tokens.txt`` and ``words.txt``: its
lexicon is LibriSpeech's ``librispeech-lexicon.txt``, given as ``lexicon``, to which the lines
icefall's prepare.sh adds (``!SIL SIL``, ``<SPOKEN_NOISE> SPN``, ``<UNK> SPN``) are added here.

The output has our lang dir's files (:mod:`speechtune.lang.lang_dir`): ``tokens.txt`` and
``words.txt`` as released, ``lexicon.txt``, ``lexicon_disambig.txt``, ``L.pt`` and
``L_disambig.pt`` as icefall's prepare_lang.py builds them (optional silence ``SIL`` between
words, probability 0.5: the graphs the model was trained with), ``oov.txt`` and one
``lm_<domain>/`` per LM text: the domain's n-gram LM, ``G.pt`` and ``HLG.pt`` compiled by
:func:`~speechtune.lang.lang_dir.compile_hlg`; with ``released_hlg`` the released ``HLG.pt``
(the LibriSpeech LM) is every domain's HLG instead.
"""
import logging
import math
import shutil
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import k2
import torch

from speechtune.errors import StageError
from speechtune.lang.graphs import num_output_tokens
from speechtune.lang.lang_dir import (EPS, UNK_WORD, WORD_DISAMBIG, Lexicon, add_disambig_symbols, hlg_path,
                                      make_lm_and_hlg, read_transcripts, report_oovs, write_lexicon, write_mapping)
from speechtune.provenance import StageRun, atomic_dir

log = logging.getLogger("speechtune.lang")

TOKEN_TABLES = ("tokens.txt", "phones.txt")  # icefall's name, and older releases'
SILENCE, SILENCE_PROB = "SIL", 0.5  # icefall's prepare_lang.py
# The entries icefall's LibriSpeech prepare.sh adds to librispeech-lexicon.txt.
PREPARE_SH_ENTRIES = ("!SIL SIL", "<SPOKEN_NOISE> SPN", f"{UNK_WORD} SPN")


def released_token_table(released_dir: Path) -> Path:
    """The released lang dir's token table: ``tokens.txt``, or ``phones.txt`` of older releases."""
    for name in TOKEN_TABLES:
        if (Path(released_dir) / name).is_file():
            return Path(released_dir) / name
    raise StageError(f"{released_dir} has neither {' nor '.join(TOKEN_TABLES)}: give the released model's "
                     "data/lang_phone directory (pretrained.lang_dir)")


def released_tokens(released_dir: Path) -> Dict[str, int]:
    """symbol -> id of the released model's outputs (``<eps>`` = 0, the blank; no ``#k``)."""
    table = k2.SymbolTable.from_file(released_token_table(released_dir))
    if table.get(0) != EPS:
        raise StageError(f"{released_token_table(released_dir)}: id 0 is {table.get(0)!r}, not {EPS!r}: not "
                         "an icefall lang_phone token table")
    return {table.get(i): i for i in range(num_output_tokens(table))}


def read_released_lexicon(released_dir: Path, lexicon: Optional[Path] = None) -> Lexicon:
    """``lexicon`` (with prepare.sh's entries added where it lacks them), else the released
    ``lexicon.txt``; sorted and without duplicate lines, as prepare.sh's ``sort | uniq``."""
    path = Path(lexicon) if lexicon is not None else Path(released_dir) / "lexicon.txt"
    if not path.is_file():
        raise StageError(
            f"{path} is missing: the released model's lexicon is needed to build L (training graphs) "
            f"and HLG; the LibriSpeech model's is librispeech-lexicon.txt "
            f"(https://www.openslr.org/resources/11/librispeech-lexicon.txt): set pretrained.lexicon to it")
    lines = {" ".join(line.split()) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    words = {line.split()[0] for line in lines}
    lines |= {entry for entry in PREPARE_SH_ENTRIES if entry.split()[0] not in words}
    entries = [(line.split()[0], line.split()[1:]) for line in sorted(lines)]
    bad = [word for word, units in entries if not units]
    if bad:
        raise StageError(f"{path}: {', '.join(bad[:5])} has no pronunciation; expected 'WORD PHONE ...' lines")
    return entries


def icefall_lexicon_fst(lexicon: Lexicon, token2id: Mapping[str, int], word2id: Mapping[str, int],
                        need_self_loops: bool = False) -> k2.Fsa:
    """icefall's ``lexicon_to_fst`` (prepare_lang.py): L with optional ``SIL`` before the
    first word and after each (probability 0.5), tokens in, words out; with
    ``need_self_loops``, ``#0:#0`` self-loops wherever a word starts, for L_disambig o G."""
    sil_score, no_sil_score = math.log(SILENCE_PROB), math.log(1.0 - SILENCE_PROB)
    start, loop, sil = 0, 1, 2  # words start at `loop`; end at `loop`, or at `sil` before a silence
    next_state = 3
    arcs: List[Tuple[int, int, int, int, float]] = [
        (start, loop, 0, 0, no_sil_score), (start, sil, 0, 0, sil_score), (sil, loop, token2id[SILENCE], 0, 0.0)]
    for word, units in lexicon:
        word_id, ids = word2id[word], [token2id[u] for u in units]
        state = loop
        for i, token in enumerate(ids[:-1]):
            arcs.append((state, next_state, token, word_id if i == 0 else 0, 0.0))
            state, next_state = next_state, next_state + 1
        last = word_id if len(ids) == 1 else 0
        arcs.append((state, loop, ids[-1], last, no_sil_score))
        arcs.append((state, sil, ids[-1], last, sil_score))
    if need_self_loops:
        sources = sorted({arc[0] for arc in arcs if arc[3] != 0})
        arcs += [(s, s, token2id["#0"], word2id[WORD_DISAMBIG], 0.0) for s in sources]
    final = next_state
    arcs.append((loop, final, -1, -1, 0.0))
    arcs.sort(key=lambda arc: arc[0])
    text = "\n".join(f"{s} {d} {label} {aux} {score}" for s, d, label, aux, score in arcs)
    return k2.Fsa.from_str(f"{text}\n{final}", acceptor=False)


def _check_lexicon(lexicon: Lexicon, token2id: Mapping[str, int], word2id: Mapping[str, int], where: str) -> None:
    """Every unit a token and every word a word of the released tables: a lexicon of another
    model would give L and HLG arcs the network has no output for."""
    units = sorted({u for _, us in lexicon for u in us} - set(token2id))
    words = sorted({w for w, _ in lexicon} - set(word2id))
    if units or words:
        raise StageError(f"{where}: the lexicon does not match the released tables (units not in the token "
                         f"table: {units[:10]}; words not in words.txt: {words[:10]}): give the lexicon the "
                         "model was trained with")
    for symbol in (SILENCE, "#0"):
        if symbol not in token2id:
            raise StageError(f"{where}: the token table has no {symbol!r}: not an icefall lang_phone layout")
    for symbol in (WORD_DISAMBIG, UNK_WORD):
        if symbol not in word2id:
            raise StageError(f"{where}: words.txt has no {symbol!r}: not an icefall lang_phone layout")


def import_lang_dir(
    released_dir: Path,
    lm_texts: Sequence[Tuple[str, Path]],
    out_dir: Path,
    config: Mapping,
    run: StageRun,
    lexicon: Optional[Path] = None,
    released_hlg: bool = False,
) -> None:
    """Write the lang dir ``out_dir`` (module docstring) atomically from ``released_dir``, with
    an LM and HLG per ``(domain, cuts)`` of ``lm_texts`` (``config``: the ``lang`` section,
    whose ``lm.order`` is used)."""
    released_dir = Path(released_dir)
    token_table = k2.SymbolTable.from_file(released_token_table(released_dir))
    token2id = {token_table.get(i): i for i in sorted(token_table.ids)}
    words_txt = released_dir / "words.txt"
    if not words_txt.is_file():
        raise StageError(f"{words_txt} is missing: give the released model's data/lang_phone directory")
    word_table = k2.SymbolTable.from_file(words_txt)
    word2id = {word_table.get(i): i for i in sorted(word_table.ids)}
    entries = read_released_lexicon(released_dir, lexicon)
    _check_lexicon(entries, token2id, word2id, str(lexicon or released_dir / "lexicon.txt"))
    released = released_dir / "HLG.pt"
    if released_hlg and not released.is_file():
        raise StageError(f"{released} is missing: set pretrained.released_hlg: false to compile HLG from "
                         "the domain's LM")
    texts = {path: read_transcripts(path) for path in dict.fromkeys(path for _, path in lm_texts)}
    with atomic_dir(out_dir) as tmp:
        write_mapping(tmp / "tokens.txt", token2id)
        write_mapping(tmp / "words.txt", word2id)
        write_lexicon(tmp / "lexicon.txt", entries)
        disambig, max_disambig = add_disambig_symbols(entries)
        if f"#{max_disambig}" not in token2id:
            raise StageError(f"{released_token_table(released_dir)} has no #{max_disambig}, which the lexicon's "
                             "homophones need: the lexicon is not the one the token table was made with")
        write_lexicon(tmp / "lexicon_disambig.txt", disambig)
        L_disambig = icefall_lexicon_fst(disambig, token2id, word2id, need_self_loops=True)
        torch.save(icefall_lexicon_fst(entries, token2id, word2id).as_dict(), tmp / "L.pt")
        torch.save(L_disambig.as_dict(), tmp / "L_disambig.pt")
        oovs = report_oovs(texts, word2id, tmp / "oov.txt")
        lms: Dict[str, Dict[str, object]] = {}
        for domain, path in lm_texts:
            if released_hlg:
                hlg_path(tmp, domain).parent.mkdir()
                shutil.copy(released, hlg_path(tmp, domain))
                lms[domain] = {"hlg": str(released)}
            else:
                lms[domain] = make_lm_and_hlg(tmp / f"lm_{domain}", texts[path], tmp, L_disambig,
                                              token2id, word2id, config["lm"]["order"])
            lms[domain]["text"] = str(path)
        run.write_provenance(tmp / "provenance.json", released_lang_dir=str(released_dir),
                             lexicon=str(lexicon or released_dir / "lexicon.txt"), released_hlg=released_hlg,
                             num_tokens=num_output_tokens(token_table), num_words=len(word2id), oov=oovs, lms=lms)
    log.info("%s: %d tokens, %d words, %d lexicon entries from %s", out_dir, num_output_tokens(token_table),
             len(word2id), len(entries), released_dir)
