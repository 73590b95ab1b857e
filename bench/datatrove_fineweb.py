"""The datatrove side of bench/vs_datatrove.py: FineWeb's steps in datatrove 0.2.0, every decision
recorded. Runs inside the datatrove virtualenv (stdlib + datatrove only; nothing of pipelines/):

    bench/.venv-datatrove/bin/python bench/datatrove_fineweb.py SPEC.json OUT.json

SPEC: {"warcs": [...], "dump": ..., "extra": {our block lists}, "timeout": s} or, for the filters
alone, {"texts": JSONL of {id, url, text}, ...}. OUT: {"decisions": {id: [stage, reason]},
"texts": {id: extracted text}, "lang": {id: [lang, score]}, "universe": {id: url}, "records",
"cpu_s", "wall_s", "versions"}. The clock covers the pipeline loop only: block lists, the
language model, NLTK and trafilatura are loaded before it starts.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
import time
from pathlib import Path

# a page that every stage keeps, so that each loads what it loads lazily before the clock starts
WARM_HTML = "<html><head><title>Warm up</title></head><body><article>" + "".join(f"<p>{p}</p>" for p in [
    "The river that runs through the old town has been the centre of trade for more than three centuries.",
    "Merchants brought salt, wool and timber to the harbour, and the market square grew around the bridge.",
    "In the nineteenth century the railway arrived, and with it a new station that changed the whole district.",
    "Today the warehouses along the water have become flats, studios and a museum of local history.",
    "Visitors who walk the length of the quay can still see the iron rings where the boats were tied.",
    "A small library on the hill keeps maps and letters that tell how families lived and worked here.",
    "Every summer a festival fills the streets with music, food stalls and boat races on the river.",
    "The council has promised to protect the forest to the north, which is home to deer and rare birds."]) + \
    "</article></body></html>"

def reader_skip_reason(record) -> tuple[str | None, str | None]:
    """(why datatrove 0.2.0's WarcReader skips this response record or None, charset it decodes with).
    The checks of its `process_record` (datatrove/pipeline/readers/warc.py), replayed in order so
    that a skip gets its computed reason; the caller checks the replay against the real reader."""
    import cchardet
    import magic
    mime_type = record.rec_headers.get("WARC-Identified-Payload-Type", None)
    if mime_type is not None and mime_type != "text/html":
        return f"WARC-Identified-Payload-Type is {mime_type}", None
    content = record.content_stream().read()
    if mime_type is None:
        mime_type = magic.from_buffer(content, mime=True)
        if mime_type != "text/html":
            return f"no WARC-Identified-Payload-Type and libmagic says {mime_type}", None
    try:
        content.decode("UTF-8")
        return None, "UTF-8"
    except UnicodeDecodeError:
        guess = cchardet.detect(content)["encoding"]
        if not guess or guess == "UTF-8":
            return f"not valid UTF-8 and cchardet guesses {guess or 'nothing'}", None
        try:
            content.decode(guess)
            return None, guess
        except LookupError:
            return f"cchardet guesses {guess}, a codec Python does not know", None
        except UnicodeDecodeError:
            return f"not valid UTF-8 nor valid {guess} (cchardet's guess)", None


def datatrove_worker(spec: dict) -> dict:
    """Runs inside the datatrove venv: FineWeb's steps, every decision recorded. No pipelines import."""
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter, LanguageFilter, URLFilter)
    from datatrove.pipeline.readers import WarcReader
    from loguru import logger
    from warcio.archiveiterator import ArchiveIterator

    decisions: dict[str, list] = {}
    texts: dict[str, str] = {}
    lang: dict[str, list] = {}
    current: list = [None]

    class Recorder:
        """An exclusion_writer: BaseFilter.run hands it every document it drops."""

        def __init__(self, stage):
            self.stage = stage

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, doc, rank=0):
            reason = doc.metadata.get("filter_reason")
            if self.stage == "language":
                lang[doc.id] = [doc.metadata.get("language"), float(doc.metadata.get("language_score", 0))]
                reason = "wrong_language" if doc.metadata.get("language") != "en" else "low_score"
            decisions[doc.id] = [self.stage, reason or "dropped"]

    extract_reason: dict[str, str] = {}

    def log_sink(message):
        if current[0] is not None:
            text = message.record["message"]
            extract_reason[current[0]] = "timeout" if "Timeout" in text else "error"

    logger.remove()
    logger.add(log_sink, level="WARNING")

    url_filter = URLFilter(extra_domains=spec["extra"]["domains"], extra_urls=spec["extra"]["urls"],
                           banned_words=spec["extra"]["hard"], banned_subwords=spec["extra"]["subwords"],
                           soft_banned_words=spec["extra"]["soft"], exclusion_writer=Recorder("url_filter"))
    steps = [("url_filter", url_filter),
             ("extraction", Trafilatura(favour_precision=True, timeout=spec["timeout"])),
             ("language", LanguageFilter(exclusion_writer=Recorder("language"))),
             ("gopher_repetition", GopherRepetitionFilter(exclusion_writer=Recorder("gopher_repetition"))),
             ("gopher_quality", GopherQualityFilter(exclusion_writer=Recorder("gopher_quality"))),
             ("c4_quality", C4QualityFilter(filter_no_terminal_punct=False, exclusion_writer=Recorder("c4_quality"))),
             ("fineweb_quality", FineWebQualityFilter(exclusion_writer=Recorder("fineweb_quality")))]
    # TLDExtract() tries to download the public suffix list first, then falls back to the snapshot
    # it ships; go to the snapshot directly (same list, no network attempt and its error log)
    from tldextract import TLDExtract
    url_filter.tldextractor = TLDExtract(suffix_list_urls=())
    # load what datatrove loads lazily on its first document, before the clock starts
    url_filter.download_data()
    _ = steps[2][1].model
    from nltk.tokenize import sent_tokenize, word_tokenize
    word_tokenize("Warm up. The tokenizer.")
    sent_tokenize("Warm up. The tokenizer.")
    steps[1][1].extract(WARM_HTML)  # imports trafilatura

    universe, skip_reason, charset = {}, {}, {}
    for path in spec["warcs"]:
        try:
            with open(path, "rb") as f:
                for record in ArchiveIterator(f):
                    if record.rec_type == "response":
                        rid = record.rec_headers.get_header("WARC-Record-ID")
                        universe[rid] = record.rec_headers.get_header("WARC-Target-URI")
                        skip_reason[rid], charset[rid] = reader_skip_reason(record)
        except Exception as e:  # a damaged file: what was read so far counts
            print(f"datatrove worker: warcio stopped in {path}: {e}", file=sys.stderr)

    def read_all():
        folder = os.path.commonpath([os.path.dirname(p) for p in spec["warcs"]])
        reader = WarcReader(folder, default_metadata={"dump": spec["dump"]})
        for path in spec["warcs"]:
            try:
                yield from reader.read_file(os.path.relpath(path, folder))
            except Exception as e:
                print(f"datatrove worker: WarcReader stopped in {path}: {e}", file=sys.stderr)

    html: dict[str, str] = {}  # the decoded HTML, digested after the clock stops (hashing is not the pipeline's)

    def entering(stream, stage):
        for doc in stream:
            if stage == "extraction":
                current[0] = doc.id
                html[doc.id] = doc.text
            decisions[doc.id] = [stage, "passed"]  # replaced when the step drops it
            yield doc

    def after_extraction(stream):
        for doc in stream:
            texts[doc.id] = doc.text
            yield doc

    def after_language(stream):
        for doc in stream:
            lang[doc.id] = [doc.metadata.get("language"), float(doc.metadata.get("language_score", 0))]
            yield doc

    if spec.get("texts"):  # filters only, on given texts (the stress test)
        from datatrove.data import Document
        items = [json.loads(line) for line in open(spec["texts"], encoding="utf-8")]
        universe = {d["id"]: d["url"] for d in items}
        stream = iter([Document(text=d["text"], id=d["id"], metadata={"url": d["url"]}) for d in items])
        steps = steps[2:]
    else:
        stream = read_all()
    for stage, step in steps:
        stream = step.run(entering(stream, stage))
        if stage == "extraction":
            stream = after_extraction(stream)
        if stage == "language":
            stream = after_language(stream)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    kept = [doc.id for doc in stream]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    html_sha1 = {k: hashlib.sha1(v.encode("utf-8", "surrogatepass")).hexdigest() for k, v in html.items()}
    for doc_id, (stage, reason) in decisions.items():
        if stage == "extraction" and reason == "passed" and doc_id not in texts:
            decisions[doc_id] = ["extraction", extract_reason.get(doc_id, "empty")]
    for doc_id in kept:
        decisions[doc_id] = ["kept", None]
    replay_mismatch = []
    for doc_id in universe:
        read = doc_id in decisions
        if read == (skip_reason.get(doc_id) is not None):  # the replay must agree with the real reader
            replay_mismatch.append(doc_id)
        decisions.setdefault(doc_id, ["warc_reader", skip_reason.get(doc_id) or "skipped (reason not replayed)"])
    return {"decisions": decisions, "texts": texts, "lang": lang, "universe": universe, "html_sha1": html_sha1,
            "charset": {k: v for k, v in charset.items() if v}, "reader_replay_mismatch": replay_mismatch,
            "records": len(universe), "cpu_s": cpu, "wall_s": wall,
            "versions": {k: importlib.metadata.version(k) for k in ("datatrove", "trafilatura", "nltk", "numpy")}}


if __name__ == "__main__":
    spec_file, out_file = sys.argv[1:]
    Path(out_file).write_text(json.dumps(datatrove_worker(json.loads(Path(spec_file).read_text()))))
