"""Decontamination against our own crawl: does an eval item's text appear in what the model trained on?

    report = find_contamination(tasks, {"pretraining": texts(), "sft": texts()}, n=13)
    report["arithmetic"] = {"items": 8, "checked": 8, "short": 0, "pretraining": ["id", ...], "sft": []}

An item is contaminated by a corpus when one of its word n-grams (13 as in GPT-3, "Language Models
are Few-Shot Learners", appendix C; configurable) occurs in one of the corpus's documents. Words and
n-gram hashes are the data stages' own (pipelines/minhash.py: FineWeb normalization, the 64-bit
shingle hash), so "the same text" means here what it means to near-dedup. An item shorter than n
words is checked at its own length when it has at least `min_words` (8, GPT-3's floor): the whole
item must occur in the corpus; shorter items are counted as `short` and not checked.

The item hashes (a few thousand) are the set; each corpus document is hashed once per length and
looked up with numpy (np.isin), so the corpus is streamed, never held.

What is checked against what: the pretraining corpus is clean_text's *train* split (the token
shards' source; the val split is where the held-out multiple choice comes from on purpose); the
SFT corpus is the lineage's SFT mixture train split. Knowledge probes are facts of the pretraining
corpus by design (does the model know what it read?), so they are checked against the SFT data only.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from pipelines.minhash import MinHasher

NGRAM = 13
MIN_WORDS = 8
PRETRAINING_BY_DESIGN = ("knowledge",)   # tasks whose items come from the pretraining corpus on purpose


def item_texts(task) -> list[tuple[str, str]]:
    """(item id, text as a model meets it) of a task's items: question and answer, context and gold
    continuation, prompt; [] for tasks with no items to check (bits per byte)."""
    from training.conversations.heldout import content_text
    if hasattr(task, "items") and task.items and hasattr(task.items[0], "question"):
        return [(i.id, f"{i.question} {i.expected}") for i in task.items]
    if hasattr(task, "items") and task.items and hasattr(task.items[0], "choices"):
        return [(i.id, f"{i.context}{i.choices[i.gold]}") for i in task.items]
    if hasattr(task, "prompts"):
        return [(f"prompt-{k}", content_text(p[-1]["content"])) for k, p in enumerate(task.prompts)]
    if hasattr(task, "probes"):
        return [(p.id, p.question) for p in task.probes]
    return []


class _Fold(MinHasher):
    """MinHasher's n-gram fold over word hashes computed once per document (normalizing and hashing
    the words is most of the cost; each n-gram length only folds)."""

    def word_hashes(self, hashes: np.ndarray) -> np.ndarray:
        return hashes


class NgramIndex:
    """The n-gram hashes of a set of texts, and which texts a corpus document hits."""

    def __init__(self, texts: dict[str, str], n: int = NGRAM, min_words: int = MIN_WORDS):
        self.n, self.hashers, self.owner = n, {}, {}
        self._words = MinHasher()
        self.short: list[str] = []
        for key, text in texts.items():
            words = self._words.word_hashes(text)
            length = min(n, len(words))
            if length < min_words:
                self.short.append(key)
                continue
            for h in self._hasher(length).shingle_hashes(words).tolist():
                self.owner.setdefault((length, h), set()).add(key)
        self.by_length = {length: np.array(sorted({h for (ln, h) in self.owner if ln == length}), dtype=np.uint64)
                          for length in self.hashers}

    def _hasher(self, length: int) -> MinHasher:
        if length not in self.hashers:
            self.hashers[length] = _Fold(shingle_words=length)
        return self.hashers[length]

    def hits(self, document: str) -> set[str]:
        found: set[str] = set()
        words = self._words.word_hashes(document)
        for length, keys in self.by_length.items():
            if not len(keys) or not len(words):
                continue
            doc = self.hashers[length].shingle_hashes(words)
            for h in doc[np.isin(doc, keys)].tolist():
                found |= self.owner[(length, h)]
        return found


def find_contamination(tasks: list, corpora: dict[str, Iterable[str]], n: int = NGRAM,
                       min_words: int = MIN_WORDS) -> dict[str, dict]:
    """{task name: {"items", "checked", "short", "ngram", <corpus name>: [contaminated item ids]}}."""
    texts, index_of = {}, {}
    for task in tasks:
        for item_id, text in item_texts(task):
            key = f"{task.name}\x00{item_id}"
            texts[key], index_of[key] = text, (task.name, item_id)
    index = NgramIndex(texts, n, min_words)
    out = {t.name: {"items": len(item_texts(t)), "checked": 0, "short": 0, "ngram": n} for t in tasks if item_texts(t)}
    for key in texts:
        out[index_of[key][0]]["checked"] += key not in index.short
        out[index_of[key][0]]["short"] += key in index.short
    for corpus, documents in corpora.items():
        hit: set[str] = set()
        for doc in documents:
            hit |= index.hits(doc)
        for name in out:
            out[name][corpus] = sorted(index_of[k][1] for k in hit if index_of[k][0] == name
                                       and not (corpus == "pretraining" and name in PRETRAINING_BY_DESIGN))
    return out


def apply(tasks: list, report: dict[str, dict], exclude: bool) -> list[str]:
    """Put each task's figures on it (`task.contamination`, logged with its result) and, with
    `exclude`, leave its contaminated items out. Returns notes."""
    notes = []
    for task in tasks:
        r = report.get(task.name)
        if r is None:
            continue
        bad = {i for k, ids in r.items() if isinstance(ids, list) for i in ids}
        task.contamination = {"decontam_checked": r["checked"], "decontam_short": r["short"],
                              **{f"contaminated_{k}": len(v) for k, v in r.items() if isinstance(v, list)},
                              "decontam_excluded": len(bad) if exclude else 0}
        if not bad:
            continue
        where = ", ".join(f"{len(v)} in {k}" for k, v in r.items() if isinstance(v, list) and v)
        if exclude:
            for attr in ("items", "prompts", "probes"):
                rows = getattr(task, attr, None)
                if rows:
                    ids = [i for i, _ in item_texts(task)]
                    setattr(task, attr, [row for row, i in zip(rows, ids) if i not in bad])
                    break
        notes.append(f"{task.name}: {len(bad)} of {r['items']} items share a {r['ngram']}-gram with the training data "
                     f"({where}){': left out' if exclude else ': flagged, kept'}")
    return notes


_CACHE: dict = {}   # (corpora key, n, min_words, items) -> report: the chat versions of one lineage share it


def cached_contamination(tasks: list, corpora: dict[str, tuple[tuple, callable]], n: int = NGRAM,
                         min_words: int = MIN_WORDS) -> dict[str, dict]:
    """find_contamination with corpora given as {name: (key, () -> documents)}: a suite built again
    for another version of the lineage (same corpora, same items) does not scan the corpus again."""
    import hashlib
    items = hashlib.sha256(repr([(t.name, item_texts(t)) for t in tasks]).encode()).hexdigest()
    key = (tuple((name, k) for name, (k, _) in sorted(corpora.items())), n, min_words, items)
    if key not in _CACHE:
        _CACHE.clear()   # one lineage at a time: the cache holds one report
        _CACHE[key] = find_contamination(tasks, {name: make() for name, (_, make) in corpora.items()}, n, min_words)
    return _CACHE[key]
