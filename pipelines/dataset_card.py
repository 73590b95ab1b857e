"""The dataset card (README.md) of an exported crawl: the YAML header that `datasets` and the Hub
read (configs with their data files, license, dataset_info with features and split sizes, written
by datasets' and huggingface_hub's own card classes), then what a person wants to know: which
crawl, which stages with which config, how many documents were kept and removed and why, and the
MLflow runs that produced them."""
from __future__ import annotations

import time

# How each column is derived (stage that sets it); FineWeb's own meaning where it has the column.
COLUMN_NOTES = {
    "text": "main text of the page (trafilatura or resiliparse extraction), after the language and "
            "quality filters, MinHash near-dedup and PII scrubbing",
    "id": "WARC-Record-ID of the response record",
    "dump": "Common Crawl crawl name",
    "url": "WARC-Target-URI of the record",
    "date": "WARC-Date of the record",
    "file_path": "the WARC file the record was read from, as the processing machine saw it (a lake "
                 "path, not FineWeb's s3:// path)",
    "language": "top fastText lid.176 label",
    "language_score": "its fastText probability",
    "token_count": "FineWeb's GPT-2 token count; crawl2chat does not run GPT-2's tokenizer",
    "minhash_cluster_id": "MinHash near-duplicate cluster the document survived from (not in FineWeb)",
    "minhash_cluster_size": "size of that cluster (not in FineWeb)",
    "warc_record_offset": "byte offset of the record in its WARC file (not in FineWeb)",
    "stage": "the stage that removed the document",
    "reason": "why that stage removed it",
}


LAYOUTS = {"lake": "the lake's crawl folder", "process": "the `crawl2chat process` output"}


def _yaml_header(summaries: dict, license: str, pretty_name: str, languages: list[str]) -> str:
    from datasets import DatasetInfo, Features, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.splits import SplitDict
    from huggingface_hub import DatasetCardData

    from pipelines.dataset_export import CONFIGS
    card = DatasetCardData(
        license=license, pretty_name=pretty_name, language=languages or None,
        task_categories=["text-generation"],
        configs=[{"config_name": name, "data_files": [{"split": "train", "path": f"{CONFIGS[name]}/train-*.parquet"}],
                  **({"default": True} if name == "default" else {})} for name in summaries])
    infos = {}
    for name, s in summaries.items():
        splits = SplitDict()
        splits.add(SplitInfo(name="train", num_bytes=s.num_bytes, num_examples=s.rows))
        infos[name] = DatasetInfo(features=Features.from_arrow_schema(s.schema), splits=splits, config_name=name)
    DatasetInfosDict(infos).to_dataset_card_data(card)
    return card.to_yaml()


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def render_card(src, summaries: dict, facts: dict, license: str) -> str:
    from pipelines.dataset_export import FINEWEB_SCHEMA
    from pipelines.io import _writer_version
    from pipelines.report import funnel_markdown
    kept, removed = summaries["default"], summaries["removed"]
    dumps = ", ".join(sorted(kept.dumps)) or src.label
    languages = sorted(kept.languages)
    by_stage = {stage: [] for stage in facts["stats"]}  # pipeline order where the run recorded it
    for (stage, reason), n in removed.counts.most_common():
        by_stage.setdefault(stage, []).append((reason, n))
    columns = [[c, "yes" if c in kept.schema.names else "**absent**", COLUMN_NOTES.get(c, "")]
               for c in FINEWEB_SCHEMA]
    columns += [[c, "extra", COLUMN_NOTES.get(c, "")] for c in kept.schema.names if c not in FINEWEB_SCHEMA]
    parts = [
        f"# {dumps}: crawl2chat clean text",
        f"The text of Common Crawl {dumps} that crawl2chat kept, in FineWeb's schema, and every "
        f"document it removed with the stage and reason. Source: {LAYOUTS[src.layout]} `{src.base.resolve()}`; "
        f"exported by {_writer_version()} on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "```python\nfrom datasets import load_dataset\n"
        "kept = load_dataset(\"DIR\")                # config default: the clean text\n"
        "removed = load_dataset(\"DIR\", \"removed\")  # every removed document, with stage and reason\n```",
        "## Counts",
        _table(["config", "documents", "shards", "what"],
               [["default", kept.rows, len(kept.shards), "kept: the clean text"],
                ["removed", removed.rows, len(removed.shards), "removed, with stage and reason"]]),
        "Removed documents by stage and reason:",
        _table(["stage", "reason", "documents"],
               [[stage, reason, n] for stage, rs in by_stage.items() for reason, n in rs]) if removed.rows
        else "(none)",
        "## Columns",
        "FineWeb's columns in FineWeb's order, then crawl2chat's own. The `removed` config has the "
        "same columns as far as the removing stage had set them, plus `stage` and `reason`.",
        _table(["column", "present", "how it is derived"], columns),
        "## Stages and config",
        f"Config digest: `{facts['config_digest'] or 'not recorded'}` ({facts['config_note']}).",
    ]
    if facts["stats"]:
        parts += ["Funnel (documents in and out of each stage, as the run recorded it):", funnel_markdown(facts["stats"])]
    parts += ["## Lineage", f"{facts['lineage_note']}."]
    if facts["runs"]:
        parts.append(_table(["asset", "partition", "MLflow run id", "git sha"],
                            [[r["asset"], r["partition"] or "-", f"`{r['run_id']}`", r["git_sha"][:12] or "-"]
                             for r in facts["runs"]]))
    parts += ["## License",
              f"`{license}`. The text comes from Common Crawl; its "
              "[terms of use](https://commoncrawl.org/terms-of-use) apply as well."]
    header = _yaml_header(summaries, license, f"{dumps} (crawl2chat)", languages)
    return f"---\n{header}\n---\n\n" + "\n\n".join(parts) + "\n"
