"""yesno (OpenSLR 1) through lhotse's own recipe: Kaldi's smallest test corpus.

60 WAVs of one male speaker saying eight Hebrew words each, every word "yes" or "no"; the
file name is the transcript (1 = yes, 0 = no), 8 kHz 16-bit mono, about 6 s each (~6 minutes
in all). ``corpus.<domain>.corpus_dir`` points at the directory the archive unpacks into::

    waves_yesno/                  corpus_dir
        0_0_0_0_1_1_1_1.wav       "NO NO NO NO YES YES YES YES"
        ...                       60 files

``lhotse.recipes.prepare_yesno`` makes two parts of it, ``train`` and ``test`` (every other
file, 30 each); ``corpus.<domain>.parts`` gives them to the splits, and splits naming the same
part share it out (:mod:`local.lhotse_manifests`), e.g. ``{train: [train], dev: [train], test:
[test]}``. The transcripts are lhotse's English glosses ``YES`` and ``NO``: the lang stage
pronounces them with CMUdict's English phones, though the speaker says Hebrew "ken" and "lo",
so yesno checks that a chain runs on real recorded speech, not how well anything recognizes.

The audio is 8 kHz, the pipeline 16 kHz (``prepare.sample_rate``): the recipe writes 16 kHz
copies, resampled by sox, under ``data/corpus/<domain>/wav/<split>/``. Nothing above 4 kHz is
in them, as in config/telephony.yaml's 8 kHz prompts.

    run = StageRun("corpus", config, seed=1234)
    write_yesno("target", config["corpus"]["target"], Path("data/corpus/target"), 2, run)

lhotse's recipe asserts exactly 60 files named ``x_x_x_x_x_x_x_x.wav``; the recipe checks this
first and says which files are missing or misnamed. ``download: true`` runs lhotse's
``download_yesno`` (4.5 MB, from ``download_url``/1/waves_yesno.tar.gz, OpenSLR unless a mirror
is named) into corpus_dir's parent, so corpus_dir must end in ``waves_yesno``.
"""
import re
import tarfile
import urllib.error
from pathlib import Path
from typing import Any, Mapping

from lhotse import SupervisionSet
from lhotse.recipes.yesno import download_yesno, prepare_yesno
from lhotse.utils import fastcopy

from local.lhotse_manifests import check_known_parts, corpus_dir, download_url, split_parts, write_lhotse_corpus
from speechtune.errors import ConfigError, StageError
from speechtune.provenance import StageRun

ARCHIVE_DIR = "waves_yesno"
FILES = 60  # lhotse's recipe splits exactly these in two
PARTS = ("train", "test")
SPEAKER = "yesno"  # one speaker said them all; lhotse's supervisions leave the speaker empty
LICENSE = "CC-BY-4.0 (as OpenSLR 1 gives it; recorded for the Kaldi project)"
_NAME = re.compile(r"[01](_[01]){7}\.wav")


def archive_url(config: Mapping[str, Any]) -> str:
    return f"{download_url(config)}/1/{ARCHIVE_DIR}.tar.gz"


def check_layout(root: Path, domain: str = "target") -> None:
    """``root`` holds the 60 ``x_x_x_x_x_x_x_x.wav`` files lhotse's recipe expects."""
    fix = (f"point corpus.{domain}.corpus_dir at the {ARCHIVE_DIR}/ directory that {ARCHIVE_DIR}.tar.gz "
           f"(https://www.openslr.org/1/) unpacks into, or set download: true (config/download.yaml)")
    if not root.is_dir():
        raise StageError(f"corpus_dir {root} is not a directory: {fix}")
    wavs = sorted(p.name for p in root.glob("*.wav"))
    misnamed = [name for name in wavs if not _NAME.fullmatch(name)]
    if misnamed:
        raise StageError(f"{root}: {', '.join(misnamed[:5])} is not named like yesno's 0_1_0_0_1_0_1_1.wav "
                         f"(the name is the transcript); move it out of corpus_dir")
    if len(wavs) != FILES:
        raise StageError(f"{root} holds {len(wavs)} yesno WAVs, lhotse's recipe needs all {FILES}: "
                         f"unpack the archive again, or {fix}")


def download(root: Path, config: Mapping[str, Any], log: Any) -> None:
    """lhotse's ``download_yesno`` into ``root``'s parent, unless ``root`` holds the corpus."""
    if root.is_dir() and len(list(root.glob("*.wav"))) == FILES:
        return
    if root.name != ARCHIVE_DIR:
        raise ConfigError(f"corpus_dir is {root}: yesno's archive unpacks into <dir>/{ARCHIVE_DIR}, so with "
                          f"download: true corpus_dir must end in /{ARCHIVE_DIR} (e.g. {root / ARCHIVE_DIR})")
    url = archive_url(config)
    log.info("downloading %s into %s", url, root.parent)
    try:
        download_yesno(root.parent, url=url)
    except (urllib.error.URLError, OSError, tarfile.TarError, EOFError) as e:
        raise StageError(f"downloading {url} failed ({type(e).__name__}: {e}); check download_url and the network, "
                         f"or fetch the archive by hand into {root.parent} and set download: false") from None


def write_yesno(domain: str, config: Mapping[str, Any], out_dir: Path, jobs: int, run: StageRun) -> None:
    """The ``yesno`` recipe: see the module docstring."""
    root = corpus_dir(domain, config, f"yesno's 60 WAVs (the {ARCHIVE_DIR}/ directory its archive unpacks into)")
    parts = split_parts(domain, config)
    check_known_parts(domain, "yesno", parts, PARTS)
    if config.get("download"):
        download(root, config, run.log)
    check_layout(root, domain)
    manifests = prepare_yesno(root)
    for part in manifests.values():
        part["supervisions"] = SupervisionSet.from_segments(fastcopy(s, speaker=SPEAKER) for s in part["supervisions"])
    write_lhotse_corpus(out_dir, manifests, "yesno", domain, config, run, corpus_dir=str(root), license=LICENSE)
