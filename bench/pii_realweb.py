"""Real web text for the PII benchmark: the pages of ../shared/realweb, extracted as the pipeline
extracts them (pipelines.extraction.trafilatura_extractor with the fineweb_v1 settings), and the
labelled set of every candidate that our scrubber or presidio's default analyzer flags on them
(tests/data/pii_realweb_labelled.jsonl).

    .venv/bin/python bench/pii_realweb.py candidates [--out FILE]   # candidates not yet labelled

The labelled set, one JSON object a line: `page` (the realweb page id: source repository and path),
`type`, `text` (the candidate as flagged), `context` (80 characters each side; `offset` is where the
candidate starts in it), `pii` and `reason`, and `flagged_by` at labelling time (`ours_v0`: the scrubber
before the context checks of issue 26, `ours`: after, `presidio`: its default recognizers). `pii` is
true when the string is what the type names, as the text uses it: a phone or fax number (public
helplines too: the scrubber replaces every one, as FineWeb does every e-mail), an e-mail address, a
public IP, an IBAN; a fragment of a real phone number counts as that phone. Each was decided by
reading its context, not by any detector.

Extraction of all 1,310 pages takes a few CPU minutes, so the texts are cached (keyed by the
trafilatura version and the page hashes) under $XDG_CACHE_HOME/crawl2chat (default ~/.cache); the
cache is a derived copy of realweb for this machine only, never part of the project.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))   # realweb_warc: the realweb reader

REALWEB = ROOT.parent / "shared" / "realweb"
LABELLED = ROOT / "tests" / "data" / "pii_realweb_labelled.jsonl"
TYPES = ("PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "EMAIL_ADDRESS", "IP_ADDRESS")
CONTEXT = 80  # characters kept on each side of a labelled candidate


def realweb_pages(root: Path = REALWEB):
    """(page id, sha1, html) for every page, in file order (non-UTF-8 pages decoded by their charset);
    the one realweb reader, bench/realweb_warc.py's."""
    from realweb_warc import realweb_pages as records
    try:
        for r, _raw in records(root):
            yield r["id"], r["sha1"], r["html"]
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None


def _cache_path(root: Path) -> Path:
    import trafilatura
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "crawl2chat"
    index = (root / "pages_index.tsv").read_bytes() if (root / "pages_index.tsv").exists() else b""
    key = hashlib.sha1(index + trafilatura.__version__.encode()).hexdigest()[:12]
    return base / f"realweb_text_{key}.jsonl.gz"


def realweb_texts(root: Path = REALWEB, use_cache: bool = True) -> dict[str, str]:
    """page id -> extracted text (pages trafilatura returns nothing for are left out)."""
    cache = _cache_path(root)
    if use_cache and cache.exists():
        with gzip.open(cache, "rt", encoding="utf-8") as fh:
            return {r["id"]: r["text"] for r in map(json.loads, fh)}
    from pipelines.extraction import trafilatura_extractor
    extract = trafilatura_extractor(favor_precision=True, include_comments=False, deduplicate=True)
    texts = {}
    for page_id, _sha1, html in realweb_pages(root):
        try:
            text = extract(html)
        except Exception:  # trafilatura raises on a few broken pages; the pipeline drops them as 'error'
            text = None
        if text:
            texts[page_id] = text
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as fh:
            for page_id, text in texts.items():
                fh.write(json.dumps({"id": page_id, "text": text}, ensure_ascii=False) + "\n")
        tmp.rename(cache)
    return texts


def load_labelled(path: Path = LABELLED) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def context_of(text: str, start: int, end: int, width: int = CONTEXT) -> tuple[str, int]:
    """(the candidate with `width` characters each side, the candidate's offset in it)."""
    lo = max(0, start - width)
    return text[lo:min(len(text), end + width)], start - lo


def flagged(texts: dict[str, str], analyzers: dict) -> list[dict]:
    """Every result of the scrubbed types, by any analyzer: one row per (page, span, type)."""
    rows: dict[tuple, dict] = {}
    for page_id, text in texts.items():
        for name, analyze in analyzers.items():
            for s, e, t in analyze(text):
                if t not in TYPES:
                    continue
                row = rows.setdefault((page_id, s, e, t), {"page": page_id, "start": s, "end": e, "type": t,
                                                           "text": text[s:e], "by": []})
                row["by"].append(name)
    return sorted(rows.values(), key=lambda r: (r["page"], r["start"], r["type"]))


def anchor(texts: dict[str, str], row: dict, after: int = 0) -> tuple[int, int] | None:
    """The labelled candidate's span in this extraction of its page, found by its context (so
    the set survives small changes of the extracted text) at or after `after` (a page can repeat
    a paragraph: each copy is its own row); None if the context is gone."""
    text = texts.get(row["page"])
    if text is None:
        return None
    pos = text.find(row["context"], after)
    if pos < 0:
        return None
    start = pos + row["offset"]
    return start, start + len(row["text"])


def anchored(texts: dict[str, str], labelled: list[dict]) -> dict[str, list]:
    """page id -> [(span, row)] for every labelled row whose context is found."""
    by_page: dict[str, list] = {}
    next_from: dict[tuple, int] = {}
    for row in labelled:
        key = (row["page"], row["context"])
        span = anchor(texts, row, next_from.get(key, 0))
        if span is not None:
            next_from[key] = span[0] - row["offset"] + 1
            by_page.setdefault(row["page"], []).append((span, row))
    return by_page


def evaluate(texts: dict[str, str], labelled: list[dict], analyze) -> dict:
    """Precision and recall per type of `analyze` on the pages, judged by the labelled set.

    A result is a true positive when it overlaps a candidate of its type labelled PII, a false
    positive when it overlaps one labelled not PII or none at all (an unlabelled result is
    counted against precision and listed, to be labelled). Recall: the share of candidates
    labelled PII whose every letter and digit lies in a result of their type (pooled recall:
    PII that neither side flags is not in the set)."""
    by_page = anchored(texts, labelled)
    stats = {t: {"tp": 0, "fp": 0, "unlabelled": 0, "pii": 0, "found": 0, "fp_examples": [], "missed": []}
             for t in TYPES}
    for page_id, text in texts.items():
        rows = by_page.get(page_id, [])
        results = [r for r in analyze(text) if r[2] in TYPES]
        for s, e, t in results:
            hits = [row for (ls, le), row in rows if row["type"] == t and ls < e and s < le]
            st = stats[t]
            if any(row["pii"] for row in hits):
                st["tp"] += 1
                continue
            st["fp"] += 1
            st["unlabelled"] += not hits
            if len(st["fp_examples"]) < 10:
                st["fp_examples"].append(text[max(0, s - 30):e + 30].replace("\n", " "))
        for (ls, le), row in rows:
            if not row["pii"]:
                continue
            st = stats[row["type"]]
            st["pii"] += 1
            covered = [(s, e) for s, e, t in results if t == row["type"] and s < le and ls < e]
            if all(any(s <= i < e for s, e in covered) for i in range(ls, le) if text[i].isalnum()):
                st["found"] += 1
            elif len(st["missed"]) < 10:
                st["missed"].append(row["text"])
    out = {}
    for t, st in stats.items():
        flagged_n = st["tp"] + st["fp"]
        out[t] = {"precision": round(st["tp"] / flagged_n, 4) if flagged_n else None,
                  "recall": round(st["found"] / st["pii"], 4) if st["pii"] else None,
                  "flagged": flagged_n, "false_positives": st["fp"], "unlabelled": st["unlabelled"],
                  "labelled_pii": st["pii"], "fp_examples": st["fp_examples"], "missed": st["missed"]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["candidates"])
    parser.add_argument("--out", default="-")
    args = parser.parse_args()
    from pii_recall import ours_analyzer, presidio_default_analyzer
    texts = realweb_texts()
    labelled = {(r["page"], r["text"], r["type"]) for r in load_labelled()} if LABELLED.exists() else set()
    # presidio without its NLP engine: the same spans (it only re-scores them), minutes faster
    rows = flagged(texts, {"ours": ours_analyzer(), "presidio": presidio_default_analyzer(with_nlp=False)})
    out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")
    for row in rows:
        if (row["page"], row["text"], row["type"]) in labelled:
            continue
        row["context"], row["offset"] = context_of(texts[row["page"]], row["start"], row["end"])
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
