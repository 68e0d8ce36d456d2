"""The listening test: one self-contained HTML page that raters open in a browser, and the mean
opinion scores (MOS) computed from the files it saves. Scores come from people only: nothing
here predicts or fills in a rating::

    sentences = {"s01": Sentence("Turn on the kitchen lights.", {"finetuned": audio_1, "scratch": audio_2,
                                                                  "reference": audio_3})}
    write_listening_page(sentences, Path("exp/tts/listening.html"), pairs=[("finetuned", "scratch")])
    # each rater opens the page, rates, presses "Save ratings": ratings-<rater>.json
    summary = mos_summary(sorted(Path("ratings").glob("*.json")))
    summary["systems"]["finetuned"]    # {"mos": 3.9, "ci95": [3.6, 4.2], "ratings": 40}

    speechtune mos ratings/*.json --out exp/tts/mos.json    # the same, as a table

The page (audio as WAV data URIs, inline style and script, nothing fetched): per sentence its
text and every system's sample under an anonymous name ("Sample 1", "Sample 2", ... in an order
shuffled per sentence with a fixed seed, so that neither names nor positions hint at the
system), each with a 1-5 rating (ITU-T P.800's absolute category rating: 1 bad, 2 poor, 3 fair,
4 good, 5 excellent), then the A/B preferences asked for the sentence (``pairs``: which of two
samples sounds more natural, or no preference; the two in shuffled order). The key from sample
ids to systems is in the page's JSON (``<script id="listening-data">``) and is copied into every
rating file, where the scorer reads it.

A rating file (what "Save ratings" downloads; :func:`rating_file` is the format's one
definition, and the page's script builds the same object)::

    {"format": "speechtune-listening/1",
     "page": "3f9c2a1b7d4e5f60",                     # which page: a hash of its sentences and key
     "rater": "anna",
     "key": {"s01-1": "scratch", "s01-2": "finetuned", ...},     # sample id -> system
     "scores": {"s01-1": 3, "s01-2": 4, ...},                    # sample id -> 1..5, rated ones only
     "preferences": [{"first": "s01-2", "second": "s01-1", "choice": "first"}, ...]}
                                                     # choice: "first", "second" or "none"

:func:`mos_summary` gives, per system, the MOS with a 95% t-interval over its ratings (ITU-T
P.800.2's interval; it treats ratings as independent, so with few raters or sentences it is
narrower than a resampling of raters would give) and, per pair of systems, the share of
judgments preferring each with 95% Wilson intervals.
"""
import argparse
import base64
import hashlib
import html
import io
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from speechtune.errors import StageError
from speechtune.provenance import atomic_file
from speechtune.tts.features import SAMPLE_RATE

FORMAT = "speechtune-listening/1"
SCORES = (1, 2, 3, 4, 5)
SCORE_LABELS = {1: "bad", 2: "poor", 3: "fair", 4: "good", 5: "excellent"}
CHOICES = ("first", "second", "none")
LEVEL = 0.95
# Sentence ids go into HTML attributes and the rating files' sample ids as they are.
SENTENCE_ID = re.compile(r"[A-Za-z0-9_.-]+")
RESAVE = "save it again from the listening page (its JSON is written by the page's Save button)"


@dataclass(frozen=True)
class Sentence:
    """One test sentence: its text and each system's audio of it (16 kHz float samples)."""

    text: str
    audio: Mapping[str, np.ndarray]


def rating_file(page: str, rater: str, key: Mapping[str, str], scores: Mapping[str, int],
                preferences: Sequence[Tuple[str, str, str]]) -> Dict[str, Any]:
    """A rating file's content (see the module docstring): ``preferences`` as (first sample,
    second sample, choice) triples. The page's ``ratingFile()`` builds the same fields."""
    return {"format": FORMAT, "page": page, "rater": rater, "key": dict(key), "scores": dict(scores),
            "preferences": [{"first": first, "second": second, "choice": choice}
                            for first, second, choice in preferences]}


def _wav_data_uri(samples: np.ndarray, sample_rate: int) -> str:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(np.asarray(samples, dtype=np.float32), -1, 1), sample_rate,
                    format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


STYLE = """
body { font-family: sans-serif; max-width: 60em; margin: 1em auto; padding: 0 1em; color: #222; }
section { border-top: 1px solid #ccc; padding: 0.5em 0; }
.sample { margin: 0.4em 0; } .sample audio { vertical-align: middle; margin-right: 1em; }
label { margin-right: 0.8em; white-space: nowrap; } p.note { color: #555; font-size: 0.9em; }
"""

# Field names as rating_file writes them (tests/test_tts_evaluation.py checks they agree).
SCRIPT = """
const DATA = JSON.parse(document.getElementById("listening-data").textContent);
function ratingFile(rater) {
  const scores = {};
  for (const input of document.querySelectorAll("input.score:checked")) {
    scores[input.dataset.sample] = Number(input.value);
  }
  const preferences = [];
  for (const input of document.querySelectorAll("input.preference:checked")) {
    preferences.push({first: input.dataset.first, second: input.dataset.second, choice: input.value});
  }
  return {format: DATA.format, page: DATA.page, rater: rater, key: DATA.key, scores: scores, preferences: preferences};
}
function save() {
  const rater = document.getElementById("rater").value.trim();
  if (!rater) { alert("Please enter your name first."); return; }
  const file = ratingFile(rater);
  const unrated = Object.keys(DATA.key).length - Object.keys(file.scores).length;
  if (unrated > 0 && !confirm(unrated + " samples are not rated yet. Save anyway?")) { return; }
  const blob = new Blob([JSON.stringify(file, null, 1)], {type: "application/json"});
  const link = document.getElementById("download");
  link.href = URL.createObjectURL(blob);
  link.download = "ratings-" + rater.replace(/[^A-Za-z0-9_-]+/g, "_") + ".json";
  link.textContent = "download " + link.download + " again";
  link.click();
}
"""


def write_listening_page(sentences: Mapping[str, Sentence], out_html: Path,
                         pairs: Sequence[Tuple[str, str]] = (), seed: int = 0,
                         title: str = "Listening test", sample_rate: int = SAMPLE_RATE) -> Dict[str, str]:
    """Write the page (see the module docstring) for ``sentences`` ({id: Sentence}) to
    ``out_html``, with an A/B question for each of ``pairs`` that the sentence has both systems
    of; returns the key (sample id -> system). The same input and seed give the same page."""
    rng = random.Random(seed)
    key: Dict[str, str] = {}
    sections = []
    for sentence_id, sentence in sentences.items():
        systems = sorted(sentence.audio)
        rng.shuffle(systems)
        if not SENTENCE_ID.fullmatch(sentence_id):
            raise ValueError(f"sentence id {sentence_id!r}: use letters, digits, '_', '.' and '-' (a Kaldi id)")
        sample_of = {system: f"{sentence_id}-{number}" for number, system in enumerate(systems, 1)}
        key.update({sample: system for system, sample in sample_of.items()})
        rows = [f"<h3>{html.escape(sentence.text)}</h3>"]
        for number, system in enumerate(systems, 1):
            sample = sample_of[system]
            buttons = "".join(
                f'<label><input type="radio" class="score" name="score-{sample}" value="{score}" '
                f'data-sample="{sample}"> {score} {SCORE_LABELS[score]}</label>' for score in SCORES)
            rows.append(f'<div class="sample">Sample {number} '
                        f'<audio controls preload="none" src="{_wav_data_uri(sentence.audio[system], sample_rate)}">'
                        f"</audio>{buttons}</div>")
        for index, pair in enumerate(p for p in pairs if set(p) <= set(sample_of)):
            first, second = rng.sample([sample_of[system] for system in pair], 2)
            name = f"preference-{sentence_id}-{index}"
            labels = {"first": f"Sample {first.rsplit('-', 1)[1]}", "second": f"Sample {second.rsplit('-', 1)[1]}",
                      "none": "no preference"}
            buttons = "".join(
                f'<label><input type="radio" class="preference" name="{name}" value="{choice}" '
                f'data-first="{first}" data-second="{second}"> {labels[choice]}</label>' for choice in CHOICES)
            rows.append(f"<p>Which sounds more natural? {buttons}</p>")
        sections.append(f'<section data-sentence="{sentence_id}">' + "\n".join(rows) + "</section>")
    page_id = hashlib.sha256(json.dumps([key, {s: v.text for s, v in sentences.items()}], sort_keys=True)
                             .encode("utf-8")).hexdigest()[:16]
    # "</" would end the script element early; JSON reads "<\/" as "</".
    data = json.dumps({"format": FORMAT, "page": page_id, "key": key}).replace("</", "<\\/")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Listen to each sample (headphones, a quiet room) and rate how natural it sounds, from 1 (bad)
to 5 (excellent). Rate each sample on its own; the samples of a sentence come in a random order.</p>
<p><label>Your name: <input id="rater" type="text"></label></p>
{chr(10).join(sections)}
<p><button type="button" onclick="save()">Save ratings</button> <a id="download" href="#"></a></p>
<p class="note">Saving downloads a JSON file of your ratings: send it to whoever gave you this page.</p>
<script type="application/json" id="listening-data">{data}</script>
<script>{SCRIPT}</script>
</body></html>
"""
    with atomic_file(Path(out_html)) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return key


def _read_rating_file(path: Path) -> Dict[str, Any]:
    """A rating file, checked field by field; StageError naming the file and the fault otherwise."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StageError(f"{path} does not exist: name the rating files the listening page saved") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StageError(f"{path} is not JSON ({e}): {RESAVE}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise StageError(f"{path} is not a rating file of format {FORMAT}: {RESAVE}")
    fields = set(rating_file("", "", {}, {}, []))
    if set(record) != fields:
        raise StageError(f"{path} has fields {sorted(record)}, not {sorted(fields)}: {RESAVE}")
    key, scores, preferences = record["key"], record["scores"], record["preferences"]
    if not isinstance(key, dict) or not all(isinstance(v, str) for v in key.values()):
        raise StageError(f"{path}: its key must map sample ids to system names: {RESAVE}")
    if not isinstance(scores, dict) or not isinstance(preferences, list):
        raise StageError(f"{path}: scores must be an object and preferences a list: {RESAVE}")
    for sample, score in scores.items():
        if sample not in key:
            raise StageError(f"{path} rates sample {sample!r}, which its key lacks: {RESAVE}")
        if type(score) is not int or score not in SCORES:
            raise StageError(f"{path} gives sample {sample!r} the score {score!r}, not one of {SCORES}: {RESAVE}")
    for preference in preferences:
        if (not isinstance(preference, dict) or set(preference) != {"first", "second", "choice"}
                or preference["choice"] not in CHOICES
                or preference["first"] not in key or preference["second"] not in key):
            raise StageError(f"{path} has a malformed preference {preference!r} (first and second: sample ids "
                             f"of its key, choice one of {CHOICES}): {RESAVE}")
    return record


def _t_interval(scores: Sequence[int]) -> Optional[List[float]]:
    """The 95% t-interval of the mean of ``scores``; None for fewer than two."""
    from scipy import stats

    if len(scores) < 2:
        return None
    mean = float(np.mean(scores))
    half = float(stats.t.ppf(0.5 + LEVEL / 2, len(scores) - 1) * np.std(scores, ddof=1) / np.sqrt(len(scores)))
    return [mean - half, mean + half]


def _wilson(count: int, total: int) -> List[float]:
    """The 95% Wilson score interval of the proportion ``count / total``."""
    from scipy import stats

    interval = stats.binomtest(count, total).proportion_ci(confidence_level=LEVEL, method="wilson")
    return [float(interval.low), float(interval.high)]


def mos_summary(rating_files: Sequence[Path]) -> Dict[str, Any]:
    """MOS per system and A/B preference shares per pair of systems, from the rating files that
    listening pages saved (pages may differ: each file carries its own key)::

        {"raters": ["anna", "ben"],
         "systems": {"finetuned": {"mos": 3.9, "ci95": [3.6, 4.2], "ratings": 40}, ...},
         "preferences": {"finetuned vs scratch": {"a": "finetuned", "b": "scratch", "judgments": 20,
                         "a_share": 0.6, "a_ci95": [...], "b_share": 0.3, "b_ci95": [...], "none_share": 0.1}}}

    ``ci95`` is None for a system rated once. A pair is named in sorted order. The same rater's
    file for the same page twice is an error (their ratings would count twice).
    """
    if not rating_files:
        raise StageError("no rating files given: name the JSON files the listening page saved")
    scores: Dict[str, List[int]] = {}
    choices: Dict[Tuple[str, str], List[str]] = {}
    seen: Dict[Tuple[str, str], Path] = {}
    for path in rating_files:
        record = _read_rating_file(Path(path))
        who = (record["page"], record["rater"])
        if who in seen:
            raise StageError(f"{seen[who]} and {path} are both {record['rater']!r}'s ratings of page "
                             f"{record['page']}: keep one of them")
        seen[who] = Path(path)
        key = record["key"]
        for sample, score in record["scores"].items():
            scores.setdefault(key[sample], []).append(score)
        for preference in record["preferences"]:
            first, second = key[preference["first"]], key[preference["second"]]
            a, b = sorted((first, second))
            winner = {"first": first, "second": second, "none": "none"}[preference["choice"]]
            choices.setdefault((a, b), []).append("a" if winner == a else "b" if winner == b else "none")
    systems = {}
    for system, values in sorted(scores.items()):
        systems[system] = {"mos": float(np.mean(values)), "ci95": _t_interval(values), "ratings": len(values)}
    preferences = {}
    for (a, b), picks in sorted(choices.items()):
        n = len(picks)
        preferences[f"{a} vs {b}"] = {
            "a": a, "b": b, "judgments": n,
            "a_share": picks.count("a") / n, "a_ci95": _wilson(picks.count("a"), n),
            "b_share": picks.count("b") / n, "b_ci95": _wilson(picks.count("b"), n),
            "none_share": picks.count("none") / n,
        }
    return {"raters": sorted({rater for _, rater in seen}), "systems": systems, "preferences": preferences}


def _interval(interval: Optional[List[float]], fmt: str) -> str:
    return "-" if interval is None else f"[{interval[0]:{fmt}}, {interval[1]:{fmt}}]"


def format_mos_table(summary: Mapping[str, Any]) -> str:
    """:func:`mos_summary`'s result as the text table ``speechtune mos`` prints."""
    lines = [f"{len(summary['raters'])} raters: {', '.join(summary['raters'])}",
             f"{'system':<24} {'MOS':>5} {'95% CI (t)':>14} {'ratings':>8}"]
    lines += [f"{system:<24} {s['mos']:>5.2f} {_interval(s['ci95'], '.2f'):>14} {s['ratings']:>8}"
              for system, s in summary["systems"].items()]
    if summary["preferences"]:
        lines += ["", f"{'A vs B':<32} {'A preferred (95% CI, Wilson)':>30} {'B preferred':>22} {'none':>5} "
                      f"{'judgments':>9}"]
        lines += [f"{name:<32} {p['a_share']:>10.0%} {_interval(p['a_ci95'], '.0%'):>19} {p['b_share']:>8.0%} "
                  f"{_interval(p['b_ci95'], '.0%'):>13} {p['none_share']:>5.0%} {p['judgments']:>9}"
                  for name, p in summary["preferences"].items()]
    return "\n".join(lines)


def add_mos_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``speechtune mos`` arguments: rating files, ``--out``."""
    parser.add_argument("ratings", nargs="+", type=Path, metavar="RATINGS_JSON",
                        help="the files the listening page saved (one per rater)")
    parser.add_argument("--out", type=Path, metavar="JSON", help="also write the summary as JSON")


def run_mos(args: argparse.Namespace) -> None:
    """What ``speechtune mos`` does with :func:`add_mos_arguments`' arguments."""
    summary = mos_summary(args.ratings)
    print(format_mos_table(summary))
    if args.out is not None:
        with atomic_file(args.out) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
