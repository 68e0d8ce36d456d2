"""Real corpora through lhotse's own recipes (local/librispeech.py, local/yesno.py,
local/lhotse_manifests.py), on tiny corpora built here in the exact upstream layouts:
LibriSpeech's ``<part>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` beside
``<speaker>-<chapter>.trans.txt``, yesno's 60 ``waves_yesno/0_1_0_0_1_0_1_1.wav`` at 8 kHz, and a
directory of manifests as lhotse's recipe writes them. Downloads go to an HTTP server on
127.0.0.1 serving archives in the real layout; nothing leaves the machine. One test runs the
chain prepare -> features -> fine-tune -> decode -> score through Snakemake on a fixture
target."""
import functools
import http.server
import json
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional

import numpy as np
import pytest
import soundfile as sf
import yaml
from lhotse import SupervisionSet
from lhotse.recipes import prepare_librispeech
from lhotse.utils import fastcopy

from local.corpora import RECIPES
from local.lhotse_manifests import NO_TEXT, OTHER_CHANNEL, UNUSED_AUDIO, check_known_parts, split_parts
from local.librispeech import KNOWN_PARTS, NO_AUDIO, NO_TRANSCRIPT
from local.yesno import PARTS as YESNO_PARTS
from speechtune.config import load_config
from speechtune.data.kaldi_dir import import_kaldi_data_dir
from speechtune.data.tables import read_table
from speechtune.errors import ConfigError, StageError
from speechtune.provenance import StageRun
from tests.conftest import REPO_ROOT

SR = 16000
# part -> utterance id -> transcript, as LibriSpeech writes them (upper case, apostrophes).
LIBRI = {
    "train-other-500": {"1034-121119-0000": "THE MERCHANT'S DAUGHTER", "1034-121119-0001": "SAID NOTHING MORE",
                        "1034-121120-0000": "A ZORBLAXIAN SHIP", "2277-149896-0000": "HE WALKED HOME",
                        "2277-149896-0001": "IT WAS LATE", "2277-149896-0002": "THE DOOR WAS OPEN"},
    "dev-other": {"116-288045-0000": "AS I APPROACHED THE CITY", "116-288045-0001": "I HEARD BELLS"},
    "test-other": {"1688-142285-0000": "THERE'S IRON THEY SAY", "1688-142285-0001": "IN ALL OUR ROCKS",
                   "1998-15444-0000": "IF YOU ARE GENEROUS"},
}
MADE_UP_WORD = "ZORBLAXIAN"  # not in CMUdict: the lang stage maps it to <UNK>
SPLIT_PARTS = {"train": ["train-other-500"], "dev": ["dev-other"], "test": ["test-other"]}
ALL = {"minutes": 100.0}


def seconds_of(utt: str) -> float:
    """A duration per utterance, different for each (1.2-2.0 s: long enough for its words)."""
    return 1.2 + (sum(map(ord, utt)) % 9) / 10


def tone(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    audio = 0.3 * np.sin(2 * np.pi * (150 + 10 * (seed % 20)) * t) + 0.01 * rng.standard_normal(t.size)
    return audio.astype(np.float32)


def espeak(text: str, path: Path) -> None:
    """``text`` said by espeak-ng, as 16 kHz FLAC (LibriSpeech's format)."""
    subprocess.run(f"espeak-ng -v en-us --stdout {text.lower()!r} | sox -t wav - -r {SR} -b 16 {path}",
                   shell=True, check=True, capture_output=True)


def write_librispeech(root: Path, parts: Mapping[str, Mapping[str, str]], speech: bool = False) -> Path:
    """A LibriSpeech/ tree: per part, ``<speaker>/<chapter>/<speaker>-<chapter>.trans.txt``
    and one FLAC per line (tones, or espeak-ng's speech)."""
    for part, texts in parts.items():
        chapters: Dict[Path, List[str]] = {}
        for i, (utt, text) in enumerate(sorted(texts.items())):
            speaker, chapter, _ = utt.split("-")
            chapter_dir = root / part / speaker / chapter
            chapter_dir.mkdir(parents=True, exist_ok=True)
            chapters.setdefault(chapter_dir / f"{speaker}-{chapter}.trans.txt", []).append(f"{utt} {text}")
            if speech:
                espeak(text, chapter_dir / f"{utt}.flac")
            else:
                sf.write(str(chapter_dir / f"{utt}.flac"), tone(seconds_of(utt), SR, i), SR, subtype="PCM_16")
        for trans, lines in chapters.items():
            trans.write_text("\n".join(lines) + "\n")
    return root


def yesno_names() -> List[str]:
    return [f"{i:08b}" for i in range(0, 240, 4)]  # 60 distinct 8-digit names


def write_yesno(root: Path, seconds: float = 1.0) -> Path:
    """waves_yesno/: 60 8 kHz WAVs named by their words (1 = yes, 0 = no)."""
    root.mkdir(parents=True)
    for i, bits in enumerate(yesno_names()):
        sf.write(str(root / f"{'_'.join(bits)}.wav"), tone(seconds, 8000, i), 8000, subtype="PCM_16")
    return root


def corpus_config(recipe: str, corpus_dir: Path, parts: Mapping[str, List[str]],
                  minutes: Optional[Mapping[str, float]] = None, **more) -> dict:
    """A ``corpus.<domain>`` section as the stage gets it (the lhotse-based keys only matter)."""
    return {"recipe": recipe, "corpus_dir": str(corpus_dir), "parts": dict(parts),
            "splits": {split: {"minutes": (minutes or {}).get(split, 100.0)} for split in parts}, **more}


def write(recipe_config: dict, out: Path, seed: int = 1234) -> dict:
    """Run the config's recipe into ``out``; its provenance.json."""
    run = StageRun("corpus", recipe_config, seed)
    RECIPES.get(recipe_config["recipe"])("target", recipe_config, out, 1, run)
    return json.loads((out / "provenance.json").read_text())


@pytest.fixture(scope="module")
def libri(tmp_path_factory) -> Path:
    return write_librispeech(tmp_path_factory.mktemp("corpus") / "LibriSpeech", LIBRI)


# ---------------------------------------------------------------------------------------------
# LibriSpeech


def test_librispeech_recipe_writes_each_split_from_its_parts(libri: Path, tmp_path: Path) -> None:
    provenance = write(corpus_config("librispeech", libri, SPLIT_PARTS), tmp_path / "corpus")
    for split, (part,) in SPLIT_PARTS.items():
        data_dir = tmp_path / "corpus" / split
        assert read_table(data_dir / "text") == LIBRI[part]
        assert read_table(data_dir / "utt2spk") == {utt: utt.split("-")[0] for utt in LIBRI[part]}
        # The FLAC files themselves, 16 kHz already: no copy, no pipe.
        wav_scp = read_table(data_dir / "wav.scp")
        assert wav_scp == {utt: str(libri / part / utt.split("-")[0] / utt.split("-")[1] / f"{utt}.flac")
                           for utt in LIBRI[part]}
        assert not (data_dir / "segments").exists() and not (tmp_path / "corpus" / "wav").exists()
        expected = sum(seconds_of(utt) for utt in LIBRI[part])
        assert provenance["splits"][split]["seconds"] == pytest.approx(expected, abs=1e-3)
        assert provenance["splits"][split]["utterances"] == len(LIBRI[part])
    assert provenance["corpus"] == "librispeech" and provenance["skipped"] == {}

    # prepare reads the FLAC paths; its cuts keep the ids, texts (normalized) and durations.
    prepare = load_config([REPO_ROOT / "config" / "config.yaml"])["prepare"]
    cuts = import_kaldi_data_dir(tmp_path / "corpus" / "test", tmp_path / "manifests", "target_test", prepare,
                                 StageRun("prepare", prepare, 1))
    assert {c.supervisions[0].id: c.supervisions[0].text for c in cuts} == LIBRI["test-other"]
    assert {c.id: c.duration for c in cuts} == pytest.approx({u: seconds_of(u) for u in LIBRI["test-other"]}, abs=1e-3)
    assert np.abs(cuts[0].load_audio()).max() > 0.1


def test_librispeech_orphans_are_skipped_and_counted(tmp_path: Path) -> None:
    root = write_librispeech(tmp_path / "LibriSpeech", {"dev-other": LIBRI["dev-other"]})
    chapter = root / "dev-other" / "116" / "288045"
    (chapter / "116-288045-0001.flac").unlink()                       # a transcript line, no audio
    sf.write(str(chapter / "116-288045-0009.flac"), tone(1.0, SR, 3), SR)  # audio, no transcript line
    provenance = write(corpus_config("librispeech", root, {"train": ["dev-other"]}), tmp_path / "corpus")
    assert read_table(tmp_path / "corpus" / "train" / "text") == {"116-288045-0000": "AS I APPROACHED THE CITY"}
    assert provenance["skipped"] == {NO_AUDIO: 1, NO_TRANSCRIPT: 1}


def test_librispeech_bad_input_names_the_path_and_the_fix(libri: Path, tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    with pytest.raises(StageError, match=rf"{libri / 'dev-clean'} is missing.*holds dev-other, test-other, "
                                         r"train-other-500.*download: true.*openslr.org/12"):
        write(corpus_config("librispeech", libri, {"train": ["dev-clean"]}), out)
    with pytest.raises(StageError, match=rf"corpus_dir {tmp_path / 'nowhere'} is not a directory.*download: true"):
        write(corpus_config("librispeech", tmp_path / "nowhere", {"train": ["dev-other"]}), out)
    with pytest.raises(ConfigError, match="dev-clean-2 is no librispeech part"):
        write(corpus_config("librispeech", libri, {"train": ["dev-clean-2"]}), out)
    with pytest.raises(ConfigError, match=r"parts names the splits \['train'\].*asks for \['test', 'train'\]"):
        write({**corpus_config("librispeech", libri, {"train": ["dev-other"]}),
               "splits": {"train": ALL, "test": ALL, "test_unseen": None}}, out)
    with pytest.raises(ConfigError, match="corpus.target.corpus_dir is not set"):
        write({**corpus_config("librispeech", libri, {"train": ["dev-other"]}), "corpus_dir": None}, out)

    broken = write_librispeech(tmp_path / "broken" / "LibriSpeech", {"dev-other": LIBRI["dev-other"]})
    trans = broken / "dev-other" / "116" / "288045" / "116-288045.trans.txt"
    trans.write_text(trans.read_text() + "116-288045-0000 AS I APPROACHED THE TOWN\n")
    with pytest.raises(StageError, match=rf"{trans}:3: utterance '116-288045-0000' already has a transcript"):
        write(corpus_config("librispeech", broken, {"train": ["dev-other"]}), out)
    trans.write_text("116-288045-0000\n")
    with pytest.raises(StageError, match=rf"{trans}:1: expected"):
        write(corpus_config("librispeech", broken, {"train": ["dev-other"]}), out)
    assert not out.exists()  # nothing half-written


def test_minutes_cap_a_split_and_splits_share_a_part_without_overlap(libri: Path, tmp_path: Path) -> None:
    parts = {"train": ["train-other-500"], "dev": ["train-other-500"], "test": ["test-other"]}
    minutes = {"train": 100.0, "dev": 0.04, "test": 0.03}  # dev: 2.4 s, test: 1.8 s
    provenance = write(corpus_config("librispeech", libri, parts, minutes), tmp_path / "a")
    texts = {split: read_table(tmp_path / "a" / split / "text") for split in parts}
    assert set(texts["dev"]).isdisjoint(texts["train"])
    assert set(texts["dev"]) | set(texts["train"]) == set(LIBRI["train-other-500"])  # train takes the rest
    for split in ("dev", "test"):  # utterances until the cap is reached: over it by less than one
        seconds = [seconds_of(u) for u in texts[split]]
        assert sum(seconds) - max(seconds) < minutes[split] * 60 <= sum(seconds)
        assert provenance["splits"][split]["parts"] == parts[split]
    assert len(texts["test"]) < len(LIBRI["test-other"])
    # The draw is the seed's: the same seed draws the same, whichever order the parts come in.
    write(corpus_config("librispeech", libri, dict(reversed(list(parts.items()))), minutes), tmp_path / "b")
    assert {s: read_table(tmp_path / "b" / s / "text") for s in parts} == texts
    other = [write(corpus_config("librispeech", libri, parts, minutes), tmp_path / f"s{seed}", seed=seed)
             for seed in range(6)]
    assert len({json.dumps(p["splits"]["test"]["seconds"]) for p in other}) > 1


@pytest.mark.parametrize("preset", ["librispeech", "mini_librispeech", "yesno"])
def test_presets_give_every_split_parts_the_corpus_has(preset: str, tmp_path: Path) -> None:
    config = load_config([REPO_ROOT / "config" / "config.yaml", REPO_ROOT / "config" / f"{preset}.yaml"])
    real = {domain: section for domain, section in config["corpus"].items() if section["recipe"] != "embedded"}
    assert "target" in real and all(not section["download"] for section in real.values())
    for domain, section in real.items():
        known = KNOWN_PARTS.get(section["recipe"], YESNO_PARTS)
        check_known_parts(domain, section["recipe"], split_parts(domain, section), known)
    # The schema checks the new keys: a part list must name something, download is a boolean.
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"corpus": {"target": {"parts": {"train": []}, "download": "yes"}}}))
    with pytest.raises(ConfigError, match=r"corpus.target.download.*corpus.target.parts.train|"
                                          r"corpus.target.parts.train.*corpus.target.download"):
        load_config([REPO_ROOT / "config" / "config.yaml", REPO_ROOT / "config" / f"{preset}.yaml", bad])


# ---------------------------------------------------------------------------------------------
# yesno


def test_yesno_recipe_resamples_the_8khz_wavs_and_keeps_lhotse_halves(tmp_path: Path) -> None:
    root = write_yesno(tmp_path / "waves_yesno")
    parts = {"train": ["train"], "dev": ["train"], "test": ["test"]}
    provenance = write(corpus_config("yesno", root, parts, {"dev": 0.05}), tmp_path / "corpus")
    names = sorted("_".join(bits) for bits in yesno_names())
    texts = {split: read_table(tmp_path / "corpus" / split / "text") for split in parts}
    assert sorted(texts["test"]) == names[1::2]                          # lhotse's odd half
    assert sorted([*texts["train"], *texts["dev"]]) == names[::2]        # the even half, shared out
    assert len(texts["dev"]) == 3
    assert texts["test"]["0_0_0_0_0_1_0_0"] == "NO NO NO NO NO YES NO NO"
    assert set(read_table(tmp_path / "corpus" / "dev" / "utt2spk").values()) == {"yesno"}
    for utt, path in read_table(tmp_path / "corpus" / "test" / "wav.scp").items():
        assert path == str(tmp_path / "corpus" / "wav" / "test" / f"{utt}.wav")  # final place, as Kaldi reads it
        info = sf.info(path)
        assert (info.samplerate, info.channels) == (SR, 1) and info.duration == pytest.approx(1.0, abs=1e-3)
    assert provenance["splits"]["test"]["resampled_copies"] == 30 and "sox" in provenance["tools"]
    # The copy is the same sound: its 16 kHz samples, decimated, are the 8 kHz original.
    original, _ = sf.read(str(root / "0_0_0_0_0_1_0_0.wav"))
    copy, _ = sf.read(str(tmp_path / "corpus" / "wav" / "test" / "0_0_0_0_0_1_0_0.wav"))
    assert np.corrcoef(original[100:-100], copy[::2][100:-100])[0, 1] > 0.95


def test_yesno_needs_its_60_named_wavs(tmp_path: Path) -> None:
    root = write_yesno(tmp_path / "waves_yesno", seconds=0.2)
    config = corpus_config("yesno", root, {"train": ["train"], "test": ["test"]})
    next(root.glob("*.wav")).unlink()
    with pytest.raises(StageError, match=rf"{root} holds 59 yesno WAVs, lhotse's recipe needs all 60.*openslr.org/1"):
        write(config, tmp_path / "corpus")
    sf.write(str(root / "hello.wav"), tone(0.2, 8000, 1), 8000)
    with pytest.raises(StageError, match="hello.wav is not named like yesno's"):
        write(config, tmp_path / "corpus")
    with pytest.raises(ConfigError, match="dev is no yesno part"):
        write(corpus_config("yesno", root, {"train": ["dev"]}), tmp_path / "corpus")


# ---------------------------------------------------------------------------------------------
# A directory of lhotse manifests


def test_manifest_dir_as_lhotse_writes_it(libri: Path, tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    prepare_librispeech(libri, dataset_parts=["dev-other", "test-other"], output_dir=manifests)
    # One more part by hand: a supervision that is a segment of its recording, one without
    # text, one on channel 1, and a recording no supervision uses.
    sups = SupervisionSet.from_file(manifests / "librispeech_supervisions_test-other.jsonl.gz")
    first = sups[0]
    segments = [fastcopy(first, id="seg-a", start=0.1, duration=0.5, text="IN PART"),
                fastcopy(first, id="seg-b", start=0.7, duration=0.4, text=""),
                fastcopy(first, id="seg-c", start=0.7, duration=0.4, channel=1)]
    SupervisionSet.from_segments(segments).to_file(manifests / "supervisions_extra.jsonl.gz")
    (manifests / "recordings_extra.jsonl.gz").write_bytes(
        (manifests / "librispeech_recordings_test-other.jsonl.gz").read_bytes())

    parts = {"train": ["extra"], "dev": ["dev-other"], "test": ["test-other"]}
    provenance = write(corpus_config("lhotse_manifests", manifests, parts), tmp_path / "corpus")
    assert read_table(tmp_path / "corpus" / "test" / "text") == LIBRI["test-other"]
    assert read_table(tmp_path / "corpus" / "dev" / "text") == LIBRI["dev-other"]
    train = tmp_path / "corpus" / "train"
    assert read_table(train / "text") == {"seg-a": "IN PART"}
    assert read_table(train / "segments") == {"seg-a": f"{first.recording_id} 0.100 0.600"}
    assert provenance["skipped"] == {NO_TEXT: 1, OTHER_CHANNEL: 1, UNUSED_AUDIO: len(LIBRI["test-other"]) - 1}
    prepare = load_config([REPO_ROOT / "config" / "config.yaml"])["prepare"]
    cuts = import_kaldi_data_dir(train, tmp_path / "m", "target_train", prepare, StageRun("prepare", prepare, 1))
    assert [(c.supervisions[0].id, c.start, c.duration) for c in cuts] == [("seg-a", 0.1, 0.5)]

    with pytest.raises(StageError, match=r"expected one \[<prefix>_\]recordings_dev-clean.jsonl.gz.*found none"):
        write(corpus_config("lhotse_manifests", manifests, {"train": ["dev-clean"]}), tmp_path / "c")
    with pytest.raises(StageError, match="utterance id '1688-142285-0000' is in parts test-other and extra2"):
        (manifests / "recordings_extra2.jsonl.gz").write_bytes((manifests / "recordings_extra.jsonl.gz").read_bytes())
        (manifests / "supervisions_extra2.jsonl.gz").write_bytes(
            (manifests / "librispeech_supervisions_test-other.jsonl.gz").read_bytes())
        write(corpus_config("lhotse_manifests", manifests, {"train": ["test-other", "extra2"]}), tmp_path / "c")


# ---------------------------------------------------------------------------------------------
# Downloads, from a server on 127.0.0.1


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[dict]:
    """An OpenSLR-like mirror on 127.0.0.1: ``/31/dev-clean-2.tar.gz`` (LibriSpeech's layout
    under ``LibriSpeech/``) and ``/1/waves_yesno.tar.gz``; yields its URL and the paths asked for."""
    www, build = tmp_path / "www", tmp_path / "build"
    write_librispeech(build / "LibriSpeech", {"dev-clean-2": LIBRI["dev-other"]})
    write_yesno(build / "waves_yesno", seconds=0.2)
    for archive, member in (("31/dev-clean-2.tar.gz", "LibriSpeech"), ("1/waves_yesno.tar.gz", "waves_yesno")):
        (www / archive).parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(www / archive, "w:gz") as tar:
            tar.add(build / member, arcname=member)
    asked: List[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            asked.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "asked": asked}
    server.shutdown()
    server.server_close()


def test_download_true_fetches_with_lhotse_from_the_mirror(mirror: dict, tmp_path: Path) -> None:
    root = tmp_path / "data" / "LibriSpeech"
    config = corpus_config("mini_librispeech", root, {"train": ["dev-clean-2"]}, download=True,
                           download_url=mirror["url"])
    write(config, tmp_path / "corpus")
    assert read_table(tmp_path / "corpus" / "train" / "text") == LIBRI["dev-other"]
    assert (root / "dev-clean-2" / "116" / "288045" / "116-288045-0000.flac").is_file()
    write(config, tmp_path / "again")  # there now: not fetched twice
    yesno = tmp_path / "data" / "waves_yesno"
    write(corpus_config("yesno", yesno, {"train": ["train"], "test": ["test"]}, download=True,
                        download_url=mirror["url"] + "/"), tmp_path / "yesno")
    assert len(read_table(tmp_path / "yesno" / "test" / "text")) == 30
    assert sorted(line for line in mirror["asked"] if line.endswith(".tar.gz")) == \
        ["/1/waves_yesno.tar.gz", "/31/dev-clean-2.tar.gz"]


def test_a_failed_download_names_the_url_and_the_fix(mirror: dict, tmp_path: Path) -> None:
    root = tmp_path / "LibriSpeech"
    with pytest.raises(StageError, match=rf"downloading {mirror['url']}/31/train-clean-5.tar.gz failed.*HTTP Error 404"
                                         r".*set download: false"):
        write(corpus_config("mini_librispeech", root, {"train": ["train-clean-5"]}, download=True,
                            download_url=mirror["url"]), tmp_path / "corpus")
    with pytest.raises(ConfigError, match=r"corpus_dir must end in /LibriSpeech"):
        write(corpus_config("mini_librispeech", tmp_path / "libri", {"train": ["dev-clean-2"]}, download=True,
                            download_url=mirror["url"]), tmp_path / "corpus")
    assert not any(line.endswith("dev-clean-2.tar.gz") for line in mirror["asked"])


# ---------------------------------------------------------------------------------------------
# The chain, through Snakemake


def test_chain_on_a_librispeech_fixture_target_writes_a_wer(tmp_path: Path) -> None:
    """prepare -> features -> lang -> fine-tune -> decode -> score with the target domain a
    LibriSpeech fixture (espeak-ng's speech in LibriSpeech's layout); the source stays the tiny
    preset's synthesized one. One epoch each, plain fine-tuning only."""
    root = write_librispeech(tmp_path / "LibriSpeech", LIBRI, speech=True)
    override = {
        "corpus": {"target": {"recipe": "librispeech", "corpus_dir": str(root), "parts": SPLIT_PARTS,
                              "splits": {"train": ALL, "dev": ALL, "test": ALL, "test_unseen": None}}},
        "finetune_variants": {"finetuned_mmi": None, "finetuned_l2sp": None, "finetuned_rehearsal": None},
        "adapt_variants": {"adapted": None},
        "learning_curve": {"systems": ["finetuned"]},
        "pretrain": {"epochs": 1},
        "finetune": {"epochs": 1},
    }
    (tmp_path / "librispeech_fixture.yaml").write_text(yaml.safe_dump(override))
    wer = "exp/finetuned/decode/target_test/hlg/wer.txt"
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO_ROOT / "Snakefile"), "--cores", "2", wer,
         "-d", str(tmp_path / "run"), "--configfile", str(REPO_ROOT / "config" / "tiny.yaml"),
         str(tmp_path / "librispeech_fixture.yaml")],
        capture_output=True, text=True)
    run = tmp_path / "run"
    failed = [f"{log}:\n{log.read_text()[-1500:]}" for log in sorted(run.glob("logs/**/*.log"))
              if "Error" in log.read_text()]
    assert result.returncode == 0, (result.stdout + result.stderr)[-2500:] + "\n".join(failed)
    assert (run / wer).read_text().startswith("%WER ")
    refs = read_table(run / "exp/finetuned/decode/target_test/hlg/ref.txt")
    assert refs == LIBRI["test-other"]
    # The lang stage met a word CMUdict lacks: <UNK>, listed in oov.txt.
    assert MADE_UP_WORD in read_table(run / "data/lang_phone_target/oov.txt")
