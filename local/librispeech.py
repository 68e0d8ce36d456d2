"""LibriSpeech and Mini LibriSpeech (OpenSLR 12 and 31) through lhotse's own recipe.

LibriSpeech is ~1000 hours of English audiobooks read by 2484 speakers, 16 kHz FLAC, CC-BY-4.0
(Panayotov et al., ICASSP 2015); Mini LibriSpeech is two small parts of it (train-clean-5,
dev-clean-2). Both unpack into the same layout, which ``corpus.<domain>.corpus_dir`` points at::

    LibriSpeech/                          corpus_dir
        train-clean-100/                  a part
            19/198/                       <speaker>/<chapter>/
                19-198.trans.txt          "19-198-0001 NORTHANGER ABBEY" one line per utterance
                19-198-0001.flac          <speaker>-<chapter>-<utterance>.flac
        dev-other/ ...

``lhotse.recipes.prepare_librispeech`` reads the parts the config names
(``corpus.<domain>.parts``, e.g. ``{train: [train-clean-100], test: [test-clean]}``) and
:func:`local.lhotse_manifests.write_lhotse_corpus` writes the splits, the FLAC files' own
paths in ``wav.scp`` (16 kHz already: no copy). Transcripts stay as LibriSpeech writes them,
upper case with apostrophes (``prepare`` normalizes them with ``speechtune.text``, a no-op
here); words CMUdict lacks become ``<UNK>`` in the lang stage (``oov.txt`` lists them)::

    run = StageRun("corpus", config, seed=1234)
    write_librispeech("target", config["corpus"]["target"], Path("data/corpus/target"), 2, run)

Before lhotse reads a part, it is checked: a part missing from corpus_dir, or one without
transcripts, is a StageError naming the directory and the fix; a transcript line twice, or a
line without words, is one naming the file and line (lhotse would take one of two lines, or
fail with a bare ValueError). A transcript line whose FLAC is missing, and a FLAC no transcript
names, are skipped (lhotse's own rule), counted in ``provenance.json`` and logged.

``download: true`` runs lhotse's ``download_librispeech`` for the parts missing from corpus_dir
(from ``download_url``, OpenSLR unless a mirror is named): the archives go into corpus_dir's
parent and unpack into ``<parent>/LibriSpeech/<part>``, so corpus_dir must end in
``LibriSpeech``. Parts already there are never fetched again (lhotse would refetch a part
unpacked by hand, which has no ``.completed`` marker).
"""
import collections
import tarfile
import urllib.error
from pathlib import Path
from typing import Any, Counter, Dict, List, Mapping, Sequence, Tuple

from lhotse.recipes.librispeech import LIBRISPEECH, MINI_LIBRISPEECH, download_librispeech, prepare_librispeech

from local.lhotse_manifests import (
    check_known_parts, corpus_dir, download_url, split_parts, write_lhotse_corpus,
)
from speechtune.errors import ConfigError, StageError
from speechtune.provenance import StageRun

LICENSE = "CC-BY-4.0 (LibriSpeech, Panayotov et al. 2015; audio from LibriVox)"
ARCHIVE_DIR = "LibriSpeech"  # what every part's archive unpacks into
# OpenSLR's resource number of each corpus (download_librispeech picks it from the part name).
RESOURCE = {"librispeech": 12, "mini_librispeech": 31}
KNOWN_PARTS = {"librispeech": LIBRISPEECH, "mini_librispeech": MINI_LIBRISPEECH}

NO_AUDIO = "transcript line without its FLAC"
NO_TRANSCRIPT = "FLAC without a transcript line"


def flac_path(part_dir: Path, utt: str) -> Path:
    """Where LibriSpeech (and lhotse's recipe) keeps an utterance: ``19-198-0001`` ->
    ``<part>/19/198/19-198-0001.flac``."""
    return part_dir / Path(utt.replace("-", "/")).parent / f"{utt}.flac"


def _hint(corpus: str, part: str, root: Path) -> str:
    return (f"set download: true (config/download.yaml), or unpack {part}.tar.gz from "
            f"https://www.openslr.org/{RESOURCE[corpus]}/ into {root.parent} (it unpacks into "
            f"{ARCHIVE_DIR}/{part}), or name a part corpus_dir holds")


def check_part(corpus: str, root: Path, part: str) -> Tuple[Counter, List[str]]:
    """Check one part's layout and transcripts before lhotse reads it; return what lhotse will
    skip (counted by reason) and the ids of each skip, for the log."""
    part_dir = root / part
    if not part_dir.is_dir():
        held = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise StageError(f"{part_dir} is missing: corpus_dir {root} holds "
                         f"{', '.join(held) or 'no part'}; {_hint(corpus, part, root)}")
    transcripts: Dict[str, str] = {}
    for trans in sorted(part_dir.rglob("*.trans.txt")):
        try:
            lines = trans.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise StageError(f"{trans}: not UTF-8 ({e}); LibriSpeech's transcripts are ASCII: unpack the part again")
        for lineno, line in enumerate(lines, start=1):
            fields = line.split(maxsplit=1)
            if len(fields) < 2:  # lhotse's recipe would fail on it with a bare ValueError
                raise StageError(f"{trans}:{lineno}: expected '<speaker>-<chapter>-<utterance> WORDS ...', got "
                                 f"{line[:80]!r}; remove the line or give its words")
            utt = fields[0]
            if utt in transcripts:
                raise StageError(f"{trans}:{lineno}: utterance '{utt}' already has a transcript "
                                 f"({transcripts[utt]}); keep one of the two lines")
            transcripts[utt] = f"{trans}:{lineno}"
    if not transcripts:
        raise StageError(f"{part_dir} holds no <speaker>-<chapter>.trans.txt: not a LibriSpeech part "
                         f"(an unfinished unpack?); {_hint(corpus, part, root)}")
    flacs = {p.stem for p in part_dir.rglob("*.flac")}
    no_audio = sorted(utt for utt in transcripts if not flac_path(part_dir, utt).is_file())
    no_text = sorted(flacs - set(transcripts))
    return collections.Counter({NO_AUDIO: len(no_audio), NO_TRANSCRIPT: len(no_text)}), no_audio + no_text


def download(corpus: str, root: Path, parts: Sequence[str], url: str, log: Any) -> None:
    """lhotse's ``download_librispeech`` for each of ``parts`` missing from ``root``."""
    missing = [part for part in parts if not (root / part).is_dir()]
    if missing and root.name != ARCHIVE_DIR:
        raise ConfigError(f"corpus_dir is {root}: LibriSpeech's archives unpack into <dir>/{ARCHIVE_DIR}/<part>, "
                          f"so with download: true corpus_dir must end in /{ARCHIVE_DIR} (e.g. {root / ARCHIVE_DIR})")
    for part in missing:
        archive = f"{url}/{RESOURCE[corpus]}/{part}.tar.gz"
        log.info("downloading %s into %s", archive, root.parent)
        try:
            download_librispeech(root.parent, dataset_parts=[part], base_url=url)
        except (urllib.error.URLError, OSError, tarfile.TarError, EOFError) as e:
            raise StageError(f"downloading {archive} failed ({type(e).__name__}: {e}); check download_url and "
                             f"the network, or fetch the archive by hand into {root.parent} and set download: false"
                             ) from None


def write_parts(corpus: str, domain: str, config: Mapping[str, Any], out_dir: Path, jobs: int, run: StageRun) -> None:
    """The ``librispeech`` and ``mini_librispeech`` recipes (``corpus``): see the module docstring."""
    root = corpus_dir(domain, config,
                      f"a local copy of {corpus} (the {ARCHIVE_DIR}/ directory its archives unpack into)")
    parts = split_parts(domain, config)
    check_known_parts(domain, corpus, parts, KNOWN_PARTS[corpus])
    needed = sorted({part for names in parts.values() for part in names})
    if config.get("download"):
        download(corpus, root, needed, download_url(config), run.log)
    if not root.is_dir():
        raise StageError(f"corpus_dir {root} is not a directory: point corpus.{domain}.corpus_dir at the "
                         f"{ARCHIVE_DIR}/ directory the archives unpack into, or set download: true "
                         f"(config/download.yaml)")
    skipped: Counter = collections.Counter()
    for part in needed:
        counts, ids = check_part(corpus, root, part)
        skipped.update(counts)
        for utt in ids:
            run.log.warning("%s: skipping %s: %s", part, utt,
                            NO_AUDIO if not flac_path(root / part, utt).is_file() else NO_TRANSCRIPT)
    manifests = prepare_librispeech(root, dataset_parts=needed, num_jobs=max(1, jobs))
    write_lhotse_corpus(out_dir, manifests, corpus, domain, config, run, skipped=+skipped,
                        corpus_dir=str(root), license=LICENSE)


def write_librispeech(domain: str, config: Mapping[str, Any], out_dir: Path, jobs: int, run: StageRun) -> None:
    """The ``librispeech`` recipe: parts of LibriSpeech (OpenSLR 12)."""
    write_parts("librispeech", domain, config, out_dir, jobs, run)


def write_mini_librispeech(domain: str, config: Mapping[str, Any], out_dir: Path, jobs: int, run: StageRun) -> None:
    """The ``mini_librispeech`` recipe: train-clean-5 and dev-clean-2 (OpenSLR 31)."""
    write_parts("mini_librispeech", domain, config, out_dir, jobs, run)
