"""The report card: one Markdown + HTML page per end-to-end lineage, every number from MLflow runs.

    crawl2chat report [--out reports] [--model crawl2chat-chat/2] [--attach]

A lineage is a chain of registered versions (BASE -> SFT -> RL -> RLHF, registry.lineages): one card
per leaf. Sections: summary table of every eval across the stages, the crawl (files, documents, the
funnel with reasons), the tokenizer, pretraining (size, tokens, FLOPs, time, MFU on GPUs, loss
curve), each post-training stage, the environment (git commits, hardware, packages, wall-clock per
stage). A stage that has not run says so; a figure a run did not log says "not logged". With
--attach (and in the report_card asset) the card goes onto the leaf's evaluation run as artifacts
(report_card/) and every version of the lineage gets the tag report_card pointing at it.
"""
from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import InputError
from training.evals import card_data as data
from training.evals.registry import STAGES, TAG_RUN, Version, default_tracking_uri, lineages

TAG_CARD = "report_card"
CSS = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em}"
       "th{background:#f3f3f3}td:not(:first-child){text-align:right}img{max-width:100%}code{background:#f3f3f3}")


@dataclass
class Card:
    lineage: list[Version]
    directory: Path
    markdown: str
    images: list[Path] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return self.directory.name


def fmt(x, digits: int = 4) -> str:
    if x is None:
        return "not logged"
    if isinstance(x, str):
        return x
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    if abs(x) >= 1e6:
        return f"{x:.3e}"
    return f"{x:.{digits}g}"


def _curve(history: dict, path: Path, title: str) -> Path | None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    series = [(k, v) for k, v in history.items() if k.endswith("loss") and v]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    for key, points in series:
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o" if len(points) < 30 else None,
                markersize=3, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


# ---- sections ------------------------------------------------------------------------------------

def _measure(task: dict) -> str:
    name = task["task"]
    if not task.get("higher_is_better", True):
        return "bits per byte (lower is better)"
    if name.startswith("mc_"):
        return "centred accuracy"
    if name == "protocol":
        return "adherence rate"
    if name == "knowledge":
        return "right answers (share)"
    return "pass@1"


def summary_section(evals: dict[str, dict | None], stages: list[str], present: set[str]) -> list[str]:
    rows: dict[str, dict] = {}
    for stage in stages:
        for t in ((evals.get(stage) or {}).get("summary") or {}).get("tasks", []):
            rows.setdefault(t["task"], {"measure": _measure(t)})[stage] = t["score"]
            if t["task"] == "knowledge":
                for k, label, count, none in (
                        ("answered_when_known", "knowledge: answers when it knows", "probes_known", "no known facts"),
                        ("idk_when_unknown", "knowledge: \"I don't know\" when it does not", "probes_unknown",
                         "no unknown facts")):
                    value = t["metrics"].get(k)
                    rows.setdefault(label, {"measure": "rate"})[stage] = value if value is not None else \
                        f"n/a ({none})" if t["metrics"].get(count) == 0 else None
    lines = ["## Summary", ""]
    evaluated = [s for s in stages if evals.get(s)]
    if not evaluated:
        return lines + ["No version of this lineage has been evaluated yet: materialize `model_evals`.", ""]
    lines += ["| task | measure | " + " | ".join(stages) + " |", "|---|---|" + "---:|" * len(stages)]
    for task, row in rows.items():
        cells = [fmt(row[s]) if s in row else "-" if evals.get(s) else "not evaluated" if s in present
                 else "not run" for s in stages]
        lines.append(f"| {task} | {row['measure']} | " + " | ".join(cells) + " |")
    notes = [f"- {s} `{t['task']}`: {t['note']}" for s in stages
             for t in ((evals.get(s) or {}).get("summary") or {}).get("tasks", []) if t.get("note")]
    return lines + [""] + (["Tasks that scored nothing:", *notes, ""] if notes else [])


def crawl_section(client, runs: dict, out: Path, images: list[Path]) -> list[str]:
    from pipelines.report import funnel_chart, funnel_markdown
    lines = ["## Crawl", ""]
    facts = data.crawl_facts(client, runs)
    if facts is None:
        return lines + ["No data-pipeline runs lead to this model's token shards (the crawl stages have not run "
                        "for it, or it was registered from shards made elsewhere).", ""]
    lines += [f"- crawl: `{facts['crawl']}`, {len(facts['batches'])} WARC batch(es): "
              + ", ".join(f"`{b}`" for b in facts["batches"]),
              f"- WARC files: {fmt(facts['files'])} ({fmt(facts['bytes'])} bytes) of {fmt(facts['listed_files'])} "
              "listed for the crawl",
              f"- documents in: {fmt(facts['docs_in'])}; documents out (clean_text): {fmt(facts['docs_out'])}", ""]
    if facts["stats"]:
        lines += ["Funnel (documents in, out and the top reasons for removal, per stage):", "",
                  funnel_markdown(facts["stats"]), ""]
        images.append(funnel_chart(facts["stats"], out / "funnel.png", title="documents left after each stage"))
        lines += ["![funnel](funnel.png)", ""]
    return lines


def tokenizer_section(runs: dict) -> list[str]:
    lines = ["## Tokenizer", ""]
    t = data.tokenizer_facts(runs)
    if t is None:
        return lines + ["No tokenizer or token_shards run leads to this model.", ""]
    s = t["shards"]
    return lines + [f"- vocabulary: {fmt(t['vocab_size'])} tokens ({fmt(t['merges'])} merges, "
                    f"{fmt(t['reserved_tokens'])} reserved special tokens)",
                    f"- trained on {fmt(t['train_docs'])} documents, {fmt(t['train_chars'])} characters, "
                    f"in {fmt(t['train_seconds'])} s",
                    f"- bytes per token: {fmt(t['val_bytes_per_token'])} (validation sample), "
                    f"{fmt(s.get('train.bytes_per_token'))} (train shards)",
                    f"- token shards: train {fmt(s.get('train.tokens'))} tokens in {fmt(s.get('train.documents'))} "
                    f"documents, val {fmt(s.get('val.tokens'))} tokens in {fmt(s.get('val.documents'))} documents", ""]


def training_section(client, v: Version, title: str, out: Path, images: list[Path]) -> tuple[list[str], dict]:
    f = data.training_facts(client, client.get_run(v.mv.run_id))
    head = [f"## {title} (`{v.ref}`)", "", f"MLflow run `{f['run_id']}`, stage `{f['stage']}`.", ""]
    if f["params"] is None and not f["history"]["train/loss"]:
        return head + ["The run logged no training figures: this version was registered from a model trained "
                       "outside the crawl2chat trainer.", ""], f
    on_gpu = f["device"] and not str(f["device"]).startswith("cpu")
    mfu = fmt(f["mfu"]) if f["mfu"] is not None else ("not logged" if on_gpu else f"n/a (CPU run: {f['device']})")
    rows = [("parameters", fmt(f["params"])), ("non-embedding parameters", fmt(f["params_non_embedding"])),
            ("layers x width (heads)", f"{fmt(f['layers'])} x {fmt(f['width'])} ({fmt(f['heads'])})"),
            ("context", fmt(f["context"])), ("tokens", fmt(f["tokens"])), ("FLOPs per token", fmt(f["flops_per_token"])),
            ("training FLOPs (6N + attention, x tokens)", fmt(f["flops"])), ("optimizer steps", fmt(f["steps"])),
            ("training time (sum of steps)", f"{fmt(f['train_seconds'])} s"), ("run wall-clock", f"{fmt(f['wall_seconds'])} s"),
            ("tokens/s (last step)", fmt(f["tokens_per_s"])), ("MFU", mfu),
            ("devices", f"{fmt(f['world_size'])} x {f['device'] or 'not logged'}, ZeRO-{fmt(f['zero_stage'])}"),
            ("first / final validation loss", f"{fmt(f['first_val_loss'])} / {fmt(f['final_val_loss'])}"),
            ("final train loss", fmt(f["final_train_loss"]))]
    if f["final_val_bpb"] is not None:
        rows.append(("final validation bits per byte", fmt(f["final_val_bpb"])))
    rows += [(k, fmt(val)) for k, val in sorted(f["logged"].items())]
    lines = [*head, "| | |", "|---|---:|", *[f"| {k} | {val} |" for k, val in rows], ""]
    png = _curve(f["history"], out / f"{v.stage.lower()}_loss.png", f"{title}: {v.ref}")
    if png:
        images.append(png)
        lines += [f"![{title} loss]({png.name})", ""]
    return lines, f


def environment_section(runs: dict, trained: dict, evals: dict) -> list[str]:
    lines = ["## Environment", ""]
    shas = {name: f["git_sha"] for name, f in trained.items() if f.get("git_sha")}
    shas.update({f"eval {s}": e["git_sha"] for s, e in evals.items() if e and e.get("git_sha")})
    lines += ["- git commit per stage: " + (", ".join(f"{k} `{v[:12]}`" for k, v in shas.items()) or "not logged")]
    lines += ["- training hardware: " + (", ".join(f"{k}: {fmt(f['world_size'])} x {f['device']}"
                                                   for k, f in trained.items() if f["device"]) or "not logged")]
    env = next((e for e in reversed(list(evals.values())) if e), None)
    if env:
        lines.append(f"- evaluation hardware: {env['hardware']}")
        lines += ["", "| package | version |", "|---|---|", *[f"| {k} | {val} |" for k, val in sorted(env["env"].items())
                                                          if k not in ("hardware", "platform")]]
        lines.append(f"\nPlatform: {env['env'].get('platform', 'not logged')}")
    clock = [(k, s, n) for k, s, n in data.stage_clock(runs)]
    clock += [(f"{name} (training run)", f["wall_seconds"], 1) for name, f in trained.items()]
    clock += [(f"evaluation {s}", e["wall_seconds"], 1) for s, e in evals.items() if e]
    lines += ["", "Wall-clock per stage (MLflow run start to end, summed over a stage's runs):", "",
              "| stage | runs | seconds |", "|---|---:|---:|", *[f"| {k} | {n} | {fmt(s)} |" for k, s, n in clock], ""]
    return lines


# ---- the card --------------------------------------------------------------------------------

def build_card(client, lineage: list[Version], out_root: str | Path) -> Card:
    stages_all = [s for s, *_ in STAGES]
    slug = "_".join(f"{v.name}-v{v.mv.version}" for v in lineage)
    out = Path(out_root) / slug
    out.mkdir(parents=True, exist_ok=True)
    images: list[Path] = []
    base = lineage[0]
    runs = data.data_runs(client, client.get_run(base.mv.run_id)) if base.stage == "BASE" else {}
    evals = {v.stage: data.eval_facts(client, v) for v in lineage}
    present = {v.stage: v for v in lineage}
    chain = " -> ".join(f"{v.stage} `{v.ref}`" for v in lineage)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# crawl2chat report card: {lineage[-1].ref}", "", f"Lineage: {chain}. Generated {now} from the "
             f"MLflow runs at `{client.tracking_uri}`.", ""]
    lines += summary_section(evals, stages_all, set(present))
    lines += crawl_section(client, runs, out, images)
    lines += tokenizer_section(runs)
    trained = {}
    titles = {"BASE": "Pretraining", "SFT": "SFT", "RL": "RL", "RLHF": "RLHF"}
    for stage in stages_all:
        if stage in present:
            section, facts = training_section(client, present[stage], titles[stage], out, images)
            lines += section
            trained[present[stage].ref] = facts
        else:
            lines += [f"## {titles[stage]}", "", f"Has not run for this lineage: no {dict((s, n) for s, n, _ in STAGES)[stage]} "
                      "version descends from it.", ""]
    lines += environment_section(runs, trained, evals)
    markdown = "\n".join(lines)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(to_html(markdown, f"crawl2chat report card: {lineage[-1].ref}"))
    return Card(lineage, out, markdown, images)


def to_html(markdown: str, title: str) -> str:
    from markdown_it import MarkdownIt
    body = MarkdownIt("commonmark").enable("table").render(markdown)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{CSS}</style></head>" \
           f"<body>{body}</body></html>\n"


def inline_images(card: Card) -> str:
    """The card's Markdown with its PNGs inlined as data URIs (for the Dagster UI)."""
    def sub(m):
        path = card.directory / m[2]
        if not path.is_file():
            return m[0]
        return f"![{m[1]}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"
    return re.sub(r"!\[([^\]]*)\]\(([^)]+\.png)\)", sub, card.markdown)


def attach(client, card: Card) -> str | None:
    """Log the card onto the evaluation run of the lineage's deepest evaluated version and tag every
    version with where it is; the leaf's description points at it. Returns that run id."""
    target = next((v for v in reversed(card.lineage) if v.mv.tags.get(TAG_RUN)), None)
    if target is None:
        return None
    rid = target.mv.tags[TAG_RUN]
    client.log_artifacts(rid, str(card.directory), TAG_CARD)
    where = f"runs:/{rid}/{TAG_CARD}/report.md"
    for v in card.lineage:
        client.set_model_version_tag(v.name, v.mv.version, TAG_CARD, where)
    leaf = card.lineage[-1]
    current = client.get_model_version(leaf.name, leaf.mv.version).description or ""
    if not current or current.startswith("Report card"):
        client.update_model_version(leaf.name, leaf.mv.version,
                                    description=f"Report card: {where} (evaluation run {rid})")
    return rid


def build_cards(client, out_root: str | Path, model: str | None = None) -> list[Card]:
    chains = lineages(client)
    if model:
        chains = [c for c in chains if any(v.ref == model for v in c)]
        if not chains:
            raise InputError(f"{model}: no registered version of that name (NAME/VERSION, e.g. crawl2chat-base/1)")
    return [build_card(client, c, out_root) for c in chains]


# ---- crawl2chat report ---------------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("--out", default="reports", help="directory for the cards (one folder per lineage)")
    p.add_argument("--model", help="only the lineage(s) holding this version, NAME/VERSION")
    p.add_argument("--tracking-uri", default=None, help="MLflow (default: MLFLOW_TRACKING_URI or dagster_home/mlflow.db)")
    p.add_argument("--attach", action="store_true", help="also log each card onto its evaluation run and tag the versions")


def main(args) -> int:
    from mlflow import MlflowClient
    uri = args.tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise InputError(f"no MLflow registry at {uri}: run `make demo` first, or set MLFLOW_TRACKING_URI")
    client = MlflowClient(uri, registry_uri=uri)
    cards = build_cards(client, args.out, args.model)
    if not cards:
        raise InputError(f"no registered crawl2chat models in {uri}: materialize `base_model` (make demo) first")
    for card in cards:
        where = attach(client, card) if args.attach else None
        print(f"{card.directory / 'report.md'}  {card.directory / 'report.html'}"
              + (f"  (attached to eval run {where})" if where else ""))
    return 0
