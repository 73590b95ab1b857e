"""Per-stage throughput on one core: docs/s and MB/s of every data stage, and of the whole
single-machine pipeline for each extraction backend. Prints one JSON object.

    python bench/stages.py [--pages 1000] [--trafilatura-docs 1000] [--skip-pipeline]

A generated crawl (pipelines.samplecrawl, seed 0) is read once; each stage then runs alone, in this
process, through pipelines.runner.run_stages on copies of the documents that reach it in the
pipeline (extraction gets the pages the URL filter keeps, language gets trafilatura's text, each
quality stage gets what the previous one kept, ...), so the drop counts are the real ones.
`docs_per_s` is the runner's wall-clock figure; `docs_per_cpu_s` divides by this process's CPU
time instead, which is steadier on a shared machine. Extraction runs inline (workers=0, no
timeout process). The pipeline rows run pipelines.process.process_warcs(workers=1) with inline
extraction; their docs/s counts WARC response records; `resiliparse_unbatched` runs it with the
runner's stage batches off (pipelines/runner.py, BATCH_DOCS). Takes 2-4 minutes on one core.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import load_config  # noqa: E402
from pipelines.document import Document  # noqa: E402
from pipelines.runner import run_stages  # noqa: E402


def _copies(docs):
    return [Document(d.text, d.id, dict(d.metadata)) for d in docs]


def _mb(docs) -> float:
    return sum(len(d.text.encode("utf-8", "surrogatepass")) for d in docs) / 1e6


def time_stage(stage, docs, warm=None):
    """Run `stage` alone over copies of `docs`; (its output, a JSON-able row)."""
    if warm is not None:
        warm()
    inp = _copies(docs)
    mb = _mb(inp)
    cpu0 = time.process_time()
    out_iter, stats = run_stages(iter(inp), [stage])
    out = list(out_iter)
    cpu = time.process_time() - cpu0
    s = stats[stage.name]
    row = {"docs_in": s.docs_in, "docs_out": s.docs_out, "dropped": dict(s.dropped.most_common()),
           "seconds": round(s.seconds, 3), "cpu_seconds": round(cpu, 3),
           "docs_per_s": round(s.docs_in / s.seconds, 1) if s.seconds else None,
           "docs_per_cpu_s": round(s.docs_in / cpu, 1) if cpu else None,
           "mb_per_s": round(mb / s.seconds, 3) if s.seconds else None,
           "avg_kb_in": round(mb * 1e3 / max(1, s.docs_in), 2)}
    return out, row


def _joined_to(docs, min_chars: int) -> list[Document]:
    """Consecutive documents joined (blank line between) until each text has min_chars."""
    out, parts = [], []
    for d in docs:
        parts.append(d.text)
        if sum(map(len, parts)) >= min_chars:
            out.append(Document("\n\n".join(parts), f"joined-{len(out)}", dict(d.metadata)))
            parts = []
    return out


def time_chain(cfg, docs) -> dict:
    from pipelines.quality import build_quality_stages
    inp = _copies(docs)
    mb = _mb(inp)
    cpu0, t0 = time.process_time(), time.perf_counter()
    out = list(run_stages(iter(inp), build_quality_stages(cfg))[0])
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"docs_in": len(inp), "docs_out": len(out), "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
            "docs_per_s": round(len(inp) / wall, 1), "docs_per_cpu_s": round(len(inp) / cpu, 1),
            "mb_per_s": round(mb / wall, 3), "avg_kb_in": round(mb * 1e3 / max(1, len(inp)), 2)}


def time_signatures(hasher, docs):
    mb = _mb(docs)
    t0, cpu0 = time.perf_counter(), time.process_time()
    for d in docs:
        hasher.signature(d.text)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"docs_in": len(docs), "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
            "docs_per_s": round(len(docs) / wall, 1), "docs_per_cpu_s": round(len(docs) / cpu, 1),
            "mb_per_s": round(mb / wall, 3)}


def response_records(stats) -> int:
    """Documents the WARC reader saw: kept + dropped (non_html, http_status, undecodable)."""
    reader = stats["warc_reader"]
    return reader.docs_out + reader.docs_removed


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--trafilatura-docs", type=int, default=1000,
                    help="extract only this many pages with trafilatura (the slow stage)")
    ap.add_argument("--skip-pipeline", action="store_true", help="skip the whole-pipeline rows")
    args = ap.parse_args(argv)

    from pipelines.extraction import Extraction
    from pipelines.lid import LanguageFilter
    from pipelines.minhash import MinHasher
    from pipelines.pii import PIIScrubber
    from pipelines.process import process_warcs
    from pipelines.quality import build_quality_stages
    from pipelines.samplecrawl import generate_crawl
    from pipelines.url_filter import URLFilter
    from pipelines.warc_reader import WarcReader

    cfg = load_config()
    result: dict = {"pages": args.pages, "stages": {}, "pipeline": {}}
    t0 = time.perf_counter()
    import pipelines.quality  # noqa: F401
    result["quality_import_seconds"] = round(time.perf_counter() - t0, 2)
    with tempfile.TemporaryDirectory() as tmp:
        info = generate_crawl(Path(tmp) / "crawl", pages=args.pages, seed=0, files=2)
        paths = list(info.warc_paths)
        stages = result["stages"]

        reader = WarcReader(paths, **cfg["warc_reader"])
        cpu0 = time.process_time()
        it, stats = run_stages(iter(()), [reader])
        html = list(it)
        s = stats["warc_reader"]
        stages["warc_reader"] = {"docs_out": s.docs_out, "dropped": dict(s.dropped), "seconds": round(s.seconds, 3),
                                 "cpu_seconds": round(time.process_time() - cpu0, 3),
                                 "docs_per_s": round(response_records(stats) / s.seconds, 1)}
        html, stages["url_filter"] = time_stage(URLFilter(**cfg["url_filter"]), html)

        extraction_cfg = dict(cfg["extraction"], workers=0)
        resil, stages["extraction_resiliparse"] = time_stage(
            Extraction(**dict(extraction_cfg, backend="resiliparse")), html)
        traf_stage = Extraction(**dict(extraction_cfg, backend="trafilatura"))
        traf_stage.extract_fn()  # import and warm up outside the timing
        text, stages["extraction_trafilatura"] = time_stage(traf_stage, html[:args.trafilatura_docs])
        del resil

        language = LanguageFilter(**cfg["language"])
        docs, stages["language"] = time_stage(language, text, warm=lambda: language.filter(Document("warm up", "w")))
        # (C4's sentence counter is our punkt port, loaded with pipelines.quality: nothing is
        # imported on first use any more, so quality_import_seconds is the whole cost)
        quality = build_quality_stages(cfg)
        chained_in = docs
        for stage in quality:
            docs, stages[stage.name] = time_stage(stage, docs)
        # the five together, as the pipeline runs them (one document through all five in turn), on
        # these documents and on ~3 KB texts (consecutive documents joined)
        stages["quality_all_five"] = time_chain(cfg, chained_in)
        stages["quality_all_five_3kb"] = time_chain(cfg, _joined_to(chained_in, 2500))

        hasher = MinHasher(**{k: cfg["minhash"][k] for k in ("num_perm", "bands", "rows", "shingle_words", "seed")})
        hasher.signature("warm up the hasher with a few words of text")
        stages["minhash_signature"] = time_signatures(hasher, docs)
        pii = PIIScrubber(**cfg["pii"])
        _, stages["pii"] = time_stage(pii, docs, warm=lambda: list(run_stages(iter([Document("a@b.com", "w")]),
                                                                                [pii])[0]))

        if not args.skip_pipeline:
            import pipelines.runner as runner
            # `resiliparse_unbatched`: one document through all stages at a time (runner.BATCH_DOCS = 1),
            # what the runner did before it ran each stage over a batch
            for name, backend, batch in (("resiliparse", "resiliparse", runner.BATCH_DOCS),
                                         ("resiliparse_unbatched", "resiliparse", 1),
                                         ("trafilatura", "trafilatura", runner.BATCH_DOCS)):
                run_cfg = copy.deepcopy(cfg)
                run_cfg["extraction"].update(backend=backend, workers=0)
                default_batch, runner.BATCH_DOCS = runner.BATCH_DOCS, batch
                try:
                    t0, cpu0 = time.perf_counter(), time.process_time()
                    stats = process_warcs(paths, Path(tmp) / f"out-{name}", run_cfg, workers=1)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                finally:
                    runner.BATCH_DOCS = default_batch
                records = response_records(stats)
                kept = stats["pii"].docs_out if "pii" in stats else None
                result["pipeline"][name] = {"response_records": records, "docs_kept": kept, "batch_docs": batch,
                                            "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                                            "docs_per_s": round(records / wall, 1),
                                            "docs_per_cpu_s": round(records / cpu, 1)}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
