"""Real recorded speech for a telephony target: Asterisk's English core prompts.

Debian's ``asterisk-core-sounds-en-wav`` holds the 568 prompts of the Asterisk PBX (voicemail
menus, digits, letters, dates, ...) read by one professional speaker, Allison Smith, as 8 kHz
16-bit mono WAVs (about 25 minutes); ``asterisk-core-sounds-en`` holds their transcripts, one
``name: transcript`` line each, in ``core-sounds-en.txt.gz``. Install both with::

    apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en

License: the recordings and transcripts are CC-BY-SA-3.0 (recorded by Allison Smith,
http://www.theivrvoice.com, financed by Digium, Inc.; see
/usr/share/doc/asterisk-core-sounds-en/copyright). Anything derived from them and shared (the
16 kHz copies this module writes, models trained on them, if they count as adaptations) must
credit them and carry the same license.

Reading the prompts keeps every one that has both a WAV and a spoken transcript; the rest are
left out and counted (:class:`Catalog`)::

    catalog = read_catalog(Path(SOUNDS_DIR), Path(TEXT_FILE))
    catalog.prompts[0]   # Prompt(id='ast-activated', name='activated', path=PosixPath(...),
                         #        transcript='Activated.', text='ACTIVATED')
    catalog.left_out     # {'no WAV': ['pls-try-call-later'],
                         #  'non-speech transcript': ['ascending-2tone', 'beep', ...]}
    splits = split_prompts(catalog.prompts, {"train": 0.7, "dev": 0.1, "test": 0.2}, seed=1234)

``spoken_words`` turns what a transcript writes into what Allison says, as the project's
upper-case words (``"press 1 then #"`` -> ``"PRESS ONE THEN POUND"``); what it does with each
symbol the transcripts hold is in its comments. ``write_asterisk_corpus`` writes the Kaldi data
dirs and 16 kHz copies of the audio (a ``corpus`` stage recipe, for a telephony target).
The longest prompt, ``demo-instruct``, is 73 s: over ``prepare.max_duration`` (60 s), so
``prepare`` skips it, counted, in whichever split it falls.
"""
import collections
import gzip
import hashlib
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from shlex import join as shell_join
from typing import Any, Dict, List, Mapping, Sequence

import soundfile as sf

from local.target_grammar import number_words
from speechtune.data.tables import write_table
from speechtune.errors import ConfigError, StageError
from speechtune.provenance import StageRun, atomic_dir
from speechtune.text import normalize_text

log = logging.getLogger("speechtune.corpus")

SOUNDS_DIR = "/usr/share/asterisk/sounds/en_US_f_Allison"
TEXT_FILE = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
DEBIAN_PACKAGES = ("asterisk-core-sounds-en-wav", "asterisk-core-sounds-en")
INSTALL_HINT = f"install the Debian packages with `apt-get install {' '.join(DEBIAN_PACKAGES)}`"
LICENSE = "CC-BY-SA-3.0 (recorded by Allison Smith, http://www.theivrvoice.com; Digium, Inc.)"

DEFAULT_CONFIG: Mapping[str, Any] = {
    "sounds_dir": SOUNDS_DIR,
    "text": TEXT_FILE,
    "splits": {"train": 0.7, "dev": 0.1, "test": 0.2},
}

SAMPLE_RATE = 16000
SPEAKER = "ast-allison"  # one speaker for every prompt: Allison recorded them all
ID_PREFIX = "ast-"
# -R seeds sox's dither, so a rerun writes the same bytes; -G lowers the gain only where the
# resampler's ringing would clip a full-scale peak.
SOX = ("sox", "-R", "-G")

# Why a prompt is left out (the keys of Catalog.left_out).
NO_WAV = "no WAV"
NO_TEXT = "no transcript"
NON_SPEECH = "non-speech transcript"
NO_WORDS = "no words after normalization"
MALFORMED = "line without 'name:'"


@dataclass(frozen=True)
class Prompt:
    """One recorded prompt: its Kaldi id, its name in the package (``dictate/pause``), its
    WAV, the transcript as the package writes it and the words said (:func:`spoken_words`)."""

    id: str
    name: str
    path: Path
    transcript: str
    text: str


@dataclass
class Catalog:
    """What :func:`read_catalog` found: the usable prompts, sorted by id, and the names left
    out by reason (a ``MALFORMED`` entry is the line number, since it names nothing)."""

    prompts: List[Prompt]
    left_out: Dict[str, List[str]] = field(default_factory=dict)

    def left_out_counts(self) -> Dict[str, int]:
        return {reason: len(names) for reason, names in sorted(self.left_out.items())}


# ---------------------------------------------------------------------------------------------
# Transcripts

# A whole transcript in brackets describes a sound, not speech: "[this is a simple beep tone]",
# "<beep ascending>", "(10 seconds of silence)".
_NON_SPEECH = re.compile(r"^\s*(\[[^\]]*\]|<[^>]*>|\([^)]*\))\s*$")
# Inside speech, brackets are the editor's notes: "at [@]" shows the symbol the word names,
# "IAX (note: does not say "2")" and "... the pound key. (simple tone sound plays)" say what is
# not heard. None of it is read out.
_NOTES = re.compile(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)")
# "..." marks a pause where Asterisk splices in another prompt ("Press ... for ...").
_ELLIPSIS = re.compile(r"\.{2,}|\u2026")
_DECIMAL = re.compile(r"(?<![\d.])(\d+)\.(\d+)(?![\d.])")   # "28.8 kilobit" -> twenty eight point eight
_INTEGER = re.compile(r"\d+")
# Keypad and other symbols, as an IVR prompt reads them ("press * to ...", "followed by #").
_SYMBOLS = {"*": "star", "#": "pound", "%": "percent", "&": "and", "+": "plus", "=": "equals", "@": "at"}
_SYMBOL = re.compile("|".join(re.escape(s) for s in _SYMBOLS))
# Misspellings in core-sounds-en.txt of words Allison says correctly; left alone, CMUdict
# cannot pronounce them and the lang stage would make them <UNK>.
_SPELLING = {
    "fourtieth": "fortieth", "exclaimation": "exclamation", "umute": "unmute", "xray": "x-ray",
    "represenatives": "representatives", "un-indentified": "unidentified", "witheld": "withheld",
}
_SPELLING_WORD = re.compile(r"\b(" + "|".join(map(re.escape, _SPELLING)) + r")\b", re.IGNORECASE)
# Acronyms said letter by letter (checked: "P B X", "I V R", "W W W dot asterisk dot org"), as
# the letters CMUdict pronounces; acronyms said as words (SIP, Zap, DAHDI) stay words.
_SPELLED = re.compile(r"\b(PBX|IVR|WWW|MGCP)\b", re.IGNORECASE)
# A web address is read with its dots: "visit www.asterisk.org".
_WEB_ADDRESS = re.compile(r"\b[\w-]+(?:\.[\w-]+)*\.(?:org|com|net)\b", re.IGNORECASE)


def number_as_spoken(digits: str) -> str:
    """How the prompts read a written number: up to two digits as a number, longer ones
    (extensions, passwords, service numbers) digit by digit, 0 as "zero".

    Checked by forced alignment against the recordings (pocketsphinx, a grammar of the
    readings): demo-instruct says "dial five zero zero", "six zero zero", "extension eight five
    zero zero", "one two three four", "four two four two"; spy-h323 says "H three two three".

    >>> number_as_spoken("7"), number_as_spoken("25"), number_as_spoken("500"), number_as_spoken("1234")
    ('seven', 'twenty five', 'five zero zero', 'one two three four')
    """
    if len(digits) <= 2:
        return number_words(int(digits))
    return " ".join(number_words(int(d)) for d in digits)


def spoken_words(transcript: str) -> str:
    """The words a prompt says, in the project's convention (``speechtune.text.normalize_text``),
    with what the transcript writes as digits and symbols spelled out; ``""`` for a
    non-speech transcript.

    >>> spoken_words("Press 1 to accept, or * to return... followed by #")
    'PRESS ONE TO ACCEPT OR STAR TO RETURN FOLLOWED BY POUND'
    >>> spoken_words("a 28.8 kilobit modem, 3D audio, extension 8500")
    'A TWENTY EIGHT POINT EIGHT KILOBIT MODEM THREE D AUDIO EXTENSION EIGHT FIVE ZERO ZERO'
    >>> spoken_words("Asterisk is a PBX. Visit www.asterisk.org.")
    'ASTERISK IS A P B X VISIT W W W DOT ASTERISK DOT ORG'
    >>> spoken_words("dash [-]"), spoken_words("IAX (note: does not say \\"2\\")"), spoken_words("[beep]")
    ('DASH', 'IAX', '')
    """
    if _NON_SPEECH.match(transcript):
        return ""
    text = _NOTES.sub(" ", transcript)
    text = _ELLIPSIS.sub(" ", text)
    text = _SPELLING_WORD.sub(lambda m: _SPELLING[m.group(1).lower()], text)
    text = _WEB_ADDRESS.sub(lambda m: m.group(0).replace(".", " dot "), text)
    text = _SPELLED.sub(lambda m: " ".join(m.group(1)), text)
    text = _SYMBOL.sub(lambda m: f" {_SYMBOLS[m.group(0)]} ", text)
    text = _DECIMAL.sub(lambda m: f" {number_as_spoken(m.group(1))} point "
                                  f"{' '.join(number_words(int(d)) for d in m.group(2))} ", text)
    # Spaces around every number also split "3D" and "H.323" into words.
    text = _INTEGER.sub(lambda m: f" {number_as_spoken(m.group(0))} ", text)
    return normalize_text(text)


# ---------------------------------------------------------------------------------------------
# Prompts


def prompt_id(name: str) -> str:
    """A Kaldi-safe utterance id for a prompt name: lower case, runs of anything but letters
    and digits as one ``-``.

    >>> prompt_id("dictate/pause"), prompt_id("vm-Cust1"), prompt_id("dictate/play_help")
    ('ast-dictate-pause', 'ast-vm-cust1', 'ast-dictate-play-help')
    """
    return ID_PREFIX + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _check_installed(sounds_dir: Path, text_file: Path) -> None:
    for path, kind in ((sounds_dir, "directory"), (text_file, "file")):
        if not (path.is_dir() if kind == "directory" else path.is_file()):
            raise StageError(f"the Asterisk prompts' {kind} {path} is missing: {INSTALL_HINT}")


def _read_text_file(text_file: Path) -> List[str]:
    opener = gzip.open if text_file.suffix == ".gz" else open
    try:
        with opener(text_file, "rt", encoding="utf-8") as f:
            return f.read().splitlines()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise StageError(f"{text_file}: cannot be read ({e}); reinstall asterisk-core-sounds-en") from None


def read_catalog(sounds_dir: Path, text_file: Path) -> Catalog:
    """Pair the transcripts of ``text_file`` with the WAVs under ``sounds_dir``; see
    :class:`Catalog`. A name given twice, or two names with one id, is a StageError: which
    transcript belongs to the WAV would be a guess."""
    sounds_dir, text_file = Path(sounds_dir), Path(text_file)
    _check_installed(sounds_dir, text_file)
    left_out: Dict[str, List[str]] = collections.defaultdict(list)
    transcripts: Dict[str, str] = {}
    for lineno, line in enumerate(_read_text_file(text_file), start=1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        name, colon, transcript = line.partition(":")
        name = name.strip()
        if not colon or not name or " " in name:
            left_out[MALFORMED].append(f"{text_file.name}:{lineno}")
            continue
        if name in transcripts:
            raise StageError(f"{text_file}:{lineno}: prompt '{name}' has a second transcript; "
                             f"keep one of the two lines")
        transcripts[name] = transcript.strip()

    wavs = {str(p.relative_to(sounds_dir).with_suffix("")): p for p in sounds_dir.rglob("*.wav")}
    prompts: Dict[str, Prompt] = {}
    for name in sorted(set(transcripts) | set(wavs)):
        if name not in wavs:
            left_out[NO_WAV].append(name)
        elif name not in transcripts:
            left_out[NO_TEXT].append(name)
        elif _NON_SPEECH.match(transcripts[name]):
            left_out[NON_SPEECH].append(name)
        else:
            text = spoken_words(transcripts[name])
            if not text:
                left_out[NO_WORDS].append(name)
                continue
            utt = prompt_id(name)
            if utt in prompts:
                raise StageError(f"{sounds_dir}: prompts '{prompts[utt].name}' and '{name}' both "
                                 f"make the id '{utt}'; rename one of them")
            prompts[utt] = Prompt(utt, name, wavs[name], transcripts[name], text)
    return Catalog([prompts[utt] for utt in sorted(prompts)], dict(left_out))


def read_prompts(sounds_dir: Path, text_file: Path) -> List[Prompt]:
    """Every prompt with a WAV and a spoken transcript, sorted by id; what was left out is
    logged (:func:`read_catalog` returns it too)::

        prompts = read_prompts(Path(SOUNDS_DIR), Path(TEXT_FILE))
        prompts[0].id, prompts[0].text        # ('ast-activated', 'ACTIVATED')
    """
    catalog = read_catalog(sounds_dir, text_file)
    for reason, names in sorted(catalog.left_out.items()):
        log.info("asterisk: %d prompts left out (%s): %s", len(names), reason, ", ".join(names))
    return catalog.prompts


# ---------------------------------------------------------------------------------------------
# Splits


def _check_fractions(fractions: Mapping[str, float]) -> None:
    if not fractions or any(not 0 <= f <= 1 for f in fractions.values()) or \
            abs(sum(fractions.values()) - 1) > 1e-6:
        raise ConfigError(f"asterisk splits: fractions between 0 and 1 that add up to 1 are needed, "
                          f"got {dict(fractions)}")


def split_prompts(prompts: Sequence[Prompt], fractions: Mapping[str, float], seed: int) -> Dict[str, List[Prompt]]:
    """The prompts in splits of about ``fractions`` of them (in the mapping's order), each sorted
    by id; the same for the same seed, whatever order the prompts come in.

    Prompts that say the same words (``digits/star`` and ``letters/ascii42`` both say "star")
    go to the same split, so no test sentence is one the training text holds word for word.
    Near-duplicates (``conf-adminmenu`` and ``conf-adminmenu-18`` differ by one clause) are
    split like any other prompts.

    >>> p = [Prompt(f"ast-{i}", str(i), Path(f"{i}.wav"), "", f"WORD{i}") for i in range(10)]
    >>> {s: len(v) for s, v in split_prompts(p, {"train": 0.7, "dev": 0.1, "test": 0.2}, 1).items()}
    {'train': 7, 'dev': 1, 'test': 2}
    """
    _check_fractions(fractions)
    groups: Dict[str, List[Prompt]] = collections.defaultdict(list)
    for prompt in prompts:
        groups[prompt.text].append(prompt)

    # A hash, not random.shuffle: a group's place depends on the seed and its words alone.
    def place(text: str) -> str:
        return hashlib.sha256(f"{seed}/{text}".encode()).hexdigest()

    splits: Dict[str, List[Prompt]] = {name: [] for name in fractions}
    bounds, total = [], 0.0
    for name, fraction in fractions.items():
        total += fraction
        bounds.append((total * len(prompts), name))
    done = 0
    for text in sorted(groups, key=place):
        group = groups[text]
        # A group goes where its middle falls, so the split sizes stay within a group of the
        # fractions asked for.
        middle = done + len(group) / 2
        name = next((n for bound, n in bounds if middle < bound), bounds[-1][1])
        splits[name].extend(group)
        done += len(group)
    return {name: sorted(members, key=lambda p: p.id) for name, members in splits.items()}


# ---------------------------------------------------------------------------------------------
# The corpus


def sox_version() -> str:
    if shutil.which("sox") is None:
        raise StageError("sox not found: install the Debian package with `apt-get install sox` (or run `make setup`)")
    return " ".join(subprocess.run(["sox", "--version"], capture_output=True, text=True).stdout.split())


def _package_versions() -> Dict[str, str]:
    """The installed version of each Debian package, for provenance ("unknown" off Debian)."""
    versions = {}
    for package in DEBIAN_PACKAGES:
        try:
            proc = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True)
            versions[package] = proc.stdout.strip() if proc.returncode == 0 else "not installed"
        except OSError:
            versions[package] = "unknown"
    return versions


def resample(source: Path, target: Path) -> float:
    """Write ``source`` as a 16 kHz 16-bit mono WAV at ``target``; return its seconds."""
    command = [*SOX, str(source), "-r", str(SAMPLE_RATE), "-b", "16", "-e", "signed-integer", "-c", "1", str(target)]
    proc = subprocess.run(command, capture_output=True)
    if proc.returncode != 0 or not target.is_file():
        raise StageError(f"`{shell_join(command)}` failed (exit status {proc.returncode}): "
                         f"{proc.stderr.decode(errors='replace').strip()}")
    return sf.info(str(target)).frames / SAMPLE_RATE


def write_asterisk_corpus(out_dir: Path, config: Mapping[str, Any], run: StageRun) -> None:
    """Write the prompts as Kaldi data dirs, atomically: ``out_dir/<split>/{wav.scp, text,
    utt2spk, spk2utt, utt2prompt}``, the audio as 16 kHz WAVs under ``out_dir/wav/<split>/``
    (``wav.scp`` holds these final paths) and ``out_dir/provenance.json`` (utterances and
    seconds per split, the prompts left out and why, package and sox versions, the license).

    ``config`` keys (``DEFAULT_CONFIG`` has the Debian defaults):

    - ``sounds_dir``: the WAVs (``asterisk-core-sounds-en-wav``).
    - ``text``: the transcripts, gzipped or not (``asterisk-core-sounds-en``).
    - ``splits``: ``{split: fraction of the prompts}``, adding up to 1, split by
      :func:`split_prompts` with ``run.seed``.

    ::

        run = StageRun("corpus", DEFAULT_CONFIG, seed=1234)
        write_asterisk_corpus(Path("data/corpus/target"), DEFAULT_CONFIG, run)
    """
    out_dir = Path(out_dir)
    _check_fractions(config["splits"])
    catalog = read_catalog(Path(config["sounds_dir"]), Path(config["text"]))
    for reason, names in sorted(catalog.left_out.items()):
        run.log.info("asterisk: %d prompts left out (%s): %s", len(names), reason, ", ".join(names))
    sox = sox_version()
    splits = split_prompts(catalog.prompts, config["splits"], run.seed)
    for split, prompts in splits.items():
        if not prompts:  # an empty data dir would stop prepare, later and less clearly
            raise ConfigError(f"asterisk splits: '{split}' gets none of the {len(catalog.prompts)} "
                              f"prompts; raise its fraction")
    summary: Dict[str, Dict[str, Any]] = {}
    with atomic_dir(out_dir) as tmp:
        for split, prompts in splits.items():
            (tmp / "wav" / split).mkdir(parents=True)
            seconds = {p.id: resample(p.path, tmp / "wav" / split / f"{p.id}.wav") for p in prompts}
            data_dir = tmp / split
            data_dir.mkdir()
            write_table(data_dir / "wav.scp", [(p.id, str(out_dir / "wav" / split / f"{p.id}.wav")) for p in prompts])
            write_table(data_dir / "text", [(p.id, p.text) for p in prompts])
            write_table(data_dir / "utt2spk", [(p.id, SPEAKER) for p in prompts])
            write_table(data_dir / "spk2utt", [(SPEAKER, " ".join(p.id for p in prompts))])
            # Where each utterance came from, to find it in the package or its transcript.
            write_table(data_dir / "utt2prompt", [(p.id, p.name) for p in prompts])
            total = sum(seconds.values())
            summary[split] = {"utterances": len(prompts), "seconds": round(total, 3)}
            run.log.info("asterisk/%s: %d utterances, %.2f minutes", split, len(prompts), total / 60)
        run.write_provenance(
            tmp / "provenance.json",
            corpus="asterisk-core-sounds-en",
            license=LICENSE,
            packages=_package_versions(),
            tools={"sox": sox},
            speaker=SPEAKER,
            splits=summary,
            prompts_read=len(catalog.prompts),
            left_out=catalog.left_out_counts(),
            left_out_prompts={reason: names for reason, names in sorted(catalog.left_out.items())},
        )
