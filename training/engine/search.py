"""Full-text search over our own clean text: the model's "working memory" of the corpus it was
trained on (BM25 over SQLite FTS5).

    build_index(read_documents([crawl.clean]), "lake/search/<crawl>/index.sqlite")
    index = SearchIndex("lake/search/<crawl>/index.sqlite")
    index.search("whatwg url parser", k=3)   # [Hit(url, snippet, score, doc_id, title), ...]
    tool = search_tool(index)                # Tool: query text -> short text for the model

Why FTS5: it ships inside Python's sqlite3 (no dependency, no server), ranks with BM25 (`bm25()`)
and cuts highlighted windows (`snippet()`) in C, and the index is one file that any number of
processes can read at once. The index is built in a temporary sibling and renamed into place, so a
reader sees the old index or the new one, never half of one; readers open it read-only and
immutable (no locks taken), and a reader holding the old file keeps reading it after a swap.

Queries are user or model text, never FTS5 syntax: the text is cut into words and every word is
quoted, so quotes, AND/OR/NOT/NEAR, `*`, `^`, `:` and parentheses are plain text. A document matches
when it holds any of the words, ranked by BM25 over the whole phrase and each word; documents that
hold the exact phrase come first. (BM25 alone can rank a short page full of the query's common
words above a long page that holds the quoted sentence: length normalization dilutes the phrase.)
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from pipelines.document import Document
from pipelines.errors import InputError
from pipelines.io import tmp_sibling

SEARCH_DIR, INDEX_FILE = "search", "index.sqlite"   # <lake>/search/<crawl>/index.sqlite
SCHEMA_VERSION = "1"
# Porter stemming over unicode61 words ("parsers" finds "parser"); diacritics folded ("café" = "cafe").
TOKENIZER = "porter unicode61 remove_diacritics 2"
MAX_QUERY_WORDS = 32          # a 10 KB paste is still one bounded query
SNIPPET_TOKENS = 32           # FTS5's window, in its tokens (at most 64)
SNIPPET_CHARS = 300           # then cut to this many characters
TOOL_MAX_CHARS = 1200         # the search tool's whole answer, so a tool output never floods the context
_WORD = re.compile(r"[^\W_]+")  # letters and digits; FTS5's unicode61 also splits on '_'

Tool = Callable[[str], str]


@dataclass
class Hit:
    url: str
    snippet: str
    score: float              # BM25, higher is better (FTS5 reports it negated)
    doc_id: str
    title: str | None = None


def index_path(lake_root, crawl: str) -> Path:
    return Path(lake_root) / SEARCH_DIR / crawl / INDEX_FILE


def latest_index(lake_root) -> Path | None:
    """The most recently written search index under the lake, if any."""
    found = [p for p in (Path(lake_root) / SEARCH_DIR).glob(f"*/{INDEX_FILE}") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def fts_query(text: str) -> tuple[str, str | None] | None:
    """Any text -> safe FTS5 MATCH expressions (any word, exact phrase or None for one word);
    None when the text has no words (so no hits)."""
    words = _WORD.findall(text.lower())[:MAX_QUERY_WORDS]
    if not words:
        return None
    terms = [f'"{w}"' for w in dict.fromkeys(words)]  # quoted: keywords and operators are plain words
    phrase = '"' + " ".join(words) + '"' if len(words) > 1 else None
    return " OR ".join([phrase, *terms] if phrase else terms), phrase


def _title(doc: Document) -> str | None:
    title = doc.metadata.get("title")
    return str(title) if title else None


def build_index(documents: Iterable[Document], out, meta: dict | None = None, batch: int = 1000) -> dict:
    """Index (id, url, title, text) of every document with text, streaming, into `out` (atomic).
    Returns {"docs", "chars", "bytes", "seconds"}; `meta` is stored in the index's meta table."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(out)
    start, docs, chars = time.time(), 0, 0
    con = sqlite3.connect(tmp)
    try:
        # A private temporary file renamed into place when complete: no journal needed.
        con.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
        con.execute(f"CREATE VIRTUAL TABLE docs USING fts5(text, title, url UNINDEXED, doc_id UNINDEXED, "
                    f"tokenize='{TOKENIZER}')")
        con.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
        insert, rows = "INSERT INTO docs(text, title, url, doc_id) VALUES (?, ?, ?, ?)", []
        for doc in documents:
            if not doc.text:
                continue
            rows.append((doc.text, _title(doc), doc.metadata.get("url") or "", doc.id))
            docs, chars = docs + 1, chars + len(doc.text)
            if len(rows) >= batch:
                con.executemany(insert, rows)
                rows = []
        con.executemany(insert, rows)
        con.execute("INSERT INTO docs(docs) VALUES ('optimize')")  # merge segments: faster queries
        info = {**(meta or {}), "docs": docs, "chars": chars, "schema": SCHEMA_VERSION, "tokenizer": TOKENIZER}
        con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in info.items()])
        con.commit()
        con.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        con.close()   # a no-op when already closed
        tmp.unlink(missing_ok=True)
    return {"docs": docs, "chars": chars, "bytes": out.stat().st_size, "seconds": time.time() - start}


class SearchIndex:
    """Read side of an index file; safe to share between threads (one read-only connection each)."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"no search index at {self.path}: materialize the `search_index` asset "
                             f"(or give --search-index a path to an index.sqlite)")
        self._local = threading.local()
        self.meta = self._read_meta()

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            # immutable: the file is never written after its rename, so readers take no locks at all.
            con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
            self._local.con = con
        return con

    def _read_meta(self) -> dict:
        try:
            return {k: json.loads(v) for k, v in self._con().execute("SELECT key, value FROM meta")}
        except sqlite3.DatabaseError as e:
            raise InputError(f"{self.path} is not a crawl2chat search index ({e}): "
                             f"re-materialize `search_index`") from None

    def phrase_count(self, text: str) -> int:
        """How many documents hold the words of `text` as one exact phrase (0 for fewer than 2 words)."""
        exprs = fts_query(text or "")
        if exprs is None or exprs[1] is None:
            return 0
        return self._con().execute("SELECT count(*) FROM docs WHERE docs MATCH ?", (exprs[1],)).fetchone()[0]

    @property
    def num_docs(self) -> int:
        return int(self.meta.get("docs", 0))

    def search(self, query: str, k: int = 3, snippet_chars: int = SNIPPET_CHARS) -> list[Hit]:
        """Top-k documents for any text: exact-phrase matches first, then by BM25; no words in
        the query -> no hits."""
        exprs = fts_query(query or "")
        if exprs is None or k <= 0:
            return []
        any_words, phrase = exprs
        exact_first = "rowid IN (SELECT rowid FROM docs WHERE docs MATCH ?) DESC, " if phrase else ""
        rows = self._con().execute(
            "SELECT doc_id, url, title, snippet(docs, 0, '', '', '…', ?), bm25(docs) FROM docs "
            f"WHERE docs MATCH ? ORDER BY {exact_first}rank LIMIT ?",
            (SNIPPET_TOKENS, any_words, *([phrase] if phrase else []), k)).fetchall()
        return [Hit(url=url, snippet=_shorten(" ".join(snip.split()), snippet_chars), score=-score,
                    doc_id=doc_id, title=title) for doc_id, url, title, snip, score in rows]


def phrase_probe(index: SearchIndex, documents: Iterable[Document], probes: int = 50, words: int = 12,
                 k: int = 3) -> dict:
    """Self-test of an index: for up to `probes` documents, search a `words`-word phrase from the
    middle of the text and count how often the document comes back first and within the top k.
    (A phrase two documents share may rank the other one first: hence both figures.) A phrase that
    more than k documents hold cannot pick its own out of the top k: such probes are counted as
    `ambiguous` and left out of both rates (the generated crawl repeats passages across pages; an
    index that cannot find phrases finds them in no document, so it still fails)."""
    tried = first = top = ambiguous = 0
    for doc in documents:
        if tried >= probes:
            break
        w = doc.text.split()
        if len(w) < words:
            continue
        start = (len(w) - words) // 2
        phrase = " ".join(w[start:start + words])
        if index.phrase_count(phrase) > k:
            ambiguous += 1
            continue
        ids = [h.doc_id for h in index.search(phrase, k)]
        tried, first, top = tried + 1, first + (ids[:1] == [doc.id]), top + (doc.id in ids)
    return {"probes": tried, "ambiguous": ambiguous, "first_rate": first / tried if tried else None,
            "top_k_rate": top / tried if tried else None, "k": k}


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def format_hits(hits: list[Hit], max_chars: int = TOOL_MAX_CHARS) -> str:
    """Hits as the short numbered text the model reads: url line, then its snippet."""
    if not hits:
        return "no results"
    text = "\n".join(f"[{i}] {h.url}\n{h.snippet}" for i, h in enumerate(hits, 1))
    return _shorten(text, max_chars)


def answer_budget(context_tokens: int) -> tuple[int, int]:
    """(hits, characters) of a search answer that fits a model's context. One window holds the
    question (~50 tokens for a fill-in-the-blank probe), the reply's opening, the query (the model
    copies the sentence: ~45), the answer and the closing sentence (~30); the answer gets a sixth of
    the window, at ~3.5 characters a token (the demo's 4k vocabulary; larger ones pack more):
    256 tokens -> one hit of 149 characters (~43 tokens), 1024 -> three hits in 597, 2048 -> 1,194.
    1,200 characters of three hits (~340 tokens) overflowed the tiny preset's 256-token window (the
    SFT conversations that searched were cut, a served search never ended its turn), and 256
    characters still left 9 of 640 gate replies unfinished at the gate's 176-token reply budget."""
    chars = min(TOOL_MAX_CHARS, context_tokens * 7 // 12)
    return (1 if chars < 400 else 3), chars


class SearchTool:
    """The `search` tool: the model's query text -> its top-k hits as text. Never raises.
    `fit_context` shrinks the answer to a model's window (the engine calls it with its model's)."""

    def __init__(self, index: SearchIndex | str | Path, k: int = 3, max_chars: int = TOOL_MAX_CHARS):
        self.index = index if isinstance(index, SearchIndex) else SearchIndex(index)
        self.k, self.max_chars = k, max_chars

    def fit_context(self, context_tokens: int) -> "SearchTool":
        k, chars = answer_budget(context_tokens)
        self.k, self.max_chars = min(self.k, k), min(self.max_chars, chars)
        return self

    def __call__(self, query: str) -> str:
        try:
            return format_hits(self.index.search(query, self.k), self.max_chars)
        except Exception as e:  # a tool answers with its error, the turn goes on
            return _shorten(f"search error: {type(e).__name__}: {e}", self.max_chars)


def search_tool(index: SearchIndex | str | Path, k: int = 3, max_chars: int = TOOL_MAX_CHARS) -> Tool:
    return SearchTool(index, k, max_chars)
