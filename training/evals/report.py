"""The report card: one Markdown + HTML + JSON page per lineage tree, every number from MLflow runs.

    crawl2chat report [--out reports] [--model crawl2chat-chat/2] [--attach] [--json]

A lineage tree is a base version and every version trained from it (registry.trees): SFT, RL and
RLHF side by side, one card per tree. Sections: one summary table of every eval across every
version, with n, 95% intervals and regression flags (card_table.py), the reward models against
their length-only baselines, the crawl (files, documents, the funnel with reasons), the tokenizer,
pretraining and each post-training version (size, tokens, FLOPs, time, MFU on GPUs, loss curve),
compute per stage, the environment (git commits, hardware, packages, wall-clock per stage). A stage
that has not run says so; a figure a run did not log says "not logged"; a failed version is marked
FAILED. With --attach (and in the report_card asset) the card goes onto the deepest evaluated
version's evaluation run as artifacts (report_card/) and every version gets the tag report_card.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import InputError
from training.evals import card_data as data
from training.evals.registry import STAGES, TAG_RUN, Version, default_tracking_uri, trees, version_link

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
    parents: dict = field(default_factory=dict)   # ref -> parent ref (None for the root)
    data: dict = field(default_factory=dict)      # the card's facts (report.json, `crawl2chat report --json`)

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
    # RL's policy-gradient "loss" hovers near zero whatever the policy learns: its reward is the curve
    rewards = [(k, v) for k, v in history.items() if k.endswith("reward") and v]
    series = rewards or [(k, v) for k, v in history.items() if k.endswith("loss") and v]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    for key, points in series:
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o" if len(points) < 30 else None,
                markersize=3, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("reward" if rewards else "loss (nats/token)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


# ---- sections ------------------------------------------------------------------------------------

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


def training_section(client, v: Version, title: str, out: Path, images: list[Path], failed: str | None = None,
                     png: str | None = None) -> tuple[list[str], dict]:
    f = data.training_facts(client, client.get_run(v.mv.run_id))
    head = [f"## {title} (`{v.ref}`)" + (f" FAILED: {failed}" if failed else ""), "",
            f"MLflow run `{f['run_id']}`, stage `{f['stage']}`.", ""]
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
    png = _curve(f["history"], out / (png or f"{v.stage.lower()}_loss.png"), f"{title}: {v.ref}")
    if png:
        images.append(png)
        lines += [f"![{title} loss]({png.name})", ""]
    return lines, f


def environment_section(runs: dict, trained: dict, evals: dict) -> list[str]:
    lines = ["## Environment", ""]
    shas = {name: f["git_sha"] for name, f in trained.items() if f.get("git_sha")}
    shas.update({f"eval {ref}": e["git_sha"] for ref, e in evals.items() if e and e.get("git_sha")})
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
    clock += [(f"evaluation {ref}", e["wall_seconds"], 1) for ref, e in evals.items() if e]
    lines += ["", "Wall-clock per stage (MLflow run start to end, summed over a stage's runs):", "",
              "| stage | runs | seconds |", "|---|---:|---:|", *[f"| {k} | {n} | {fmt(s)} |" for k, s, n in clock], ""]
    return lines


# ---- the card --------------------------------------------------------------------------------

def build_card(client, versions: list[Version], parents: dict[str, str | None], out_root: str | Path) -> Card:
    """The card of one lineage tree: every version of it (registry.trees), parents by ref."""
    from training.evals import card_table as table
    slug = "_".join(f"{v.name}-v{v.mv.version}" for v in versions)
    out = Path(out_root) / slug
    out.mkdir(parents=True, exist_ok=True)
    images: list[Path] = []
    base = next((v for v in versions if v.stage == "BASE"), None)
    runs = data.data_runs(client, client.get_run(base.mv.run_id)) if base else {}
    evals = {v.ref: data.eval_facts(client, v) for v in versions}
    failed = {v.ref: why for v in versions if (why := data.failed(client, v))}
    rms = data.reward_models(client, {v.ref for v in versions if v.stage == "SFT"})
    links = {v.ref: version_link(client.tracking_uri, v.name, v.mv.version) for v in versions}
    tree = ", ".join(f"{v.stage} [`{v.ref}`]({links[v.ref]})" + (f" (from `{parents[v.ref]}`)" if parents.get(v.ref)
                                                                  else "") for v in versions)
    leaf = versions[-1]
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# crawl2chat report card: {versions[0].ref} and its descendants", "",
             f"Lineage tree: {tree}. Generated {now} from the MLflow runs at `{client.tracking_uri}`.", ""]
    lines += table.summary_section(versions, parents, evals, failed)
    lines += table.reward_section(rms)
    contamination = table.decontamination(versions, evals)
    lines += table.decontamination_section(contamination)
    lines += crawl_section(client, runs, out, images)
    lines += tokenizer_section(runs)
    trained: dict[str, dict] = {}
    titles = {"BASE": "Pretraining", "SFT": "SFT", "RL": "RL", "RLHF": "RLHF"}
    for stage, name, _ in STAGES:
        mine = [v for v in versions if v.stage == stage]
        for i, v in enumerate(mine):
            section, facts = training_section(client, v, titles[stage], out, images, failed.get(v.ref),
                                              f"{stage.lower()}{f'_v{v.mv.version}' if i else ''}_loss.png")
            lines += section
            trained[v.ref] = facts
        if not mine:
            lines += [f"## {titles[stage]}", "", f"Has not run for this lineage: no {name} version descends from it.", ""]
    lines += table.compute_section(trained)
    lines += environment_section(runs, trained, evals)
    markdown = "\n".join(lines)
    card = Card(versions, out, markdown, images, parents)
    card.data = table.card_json(versions, parents, evals, failed, trained, rms, contamination, links)
    (out / "report.md").write_text(markdown)
    (out / "report.html").write_text(to_html(markdown, f"crawl2chat report card: {leaf.ref}"))
    (out / "report.json").write_text(json.dumps(card.data, indent=1, default=str))
    return card


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
    for v in card.lineage:
        current = client.get_model_version(v.name, v.mv.version).description or ""
        if not current or current.startswith("Report card"):   # never overwrite what a person wrote
            client.update_model_version(v.name, v.mv.version, description=f"Report card: {where} (evaluation run "
                                        f"{rid})\n\n" + lineage_links(client, v, card.parents.get(v.ref)))
    return rid


def lineage_links(client, v: Version, parent: str | None) -> str:
    """Markdown for a version's MLflow description: its parent version, training run, the runs that
    wrote its input datasets, and the Dagster run, each a link (the configured MLflow UI)."""
    import os
    from training.evals.registry import run_link, version_link
    uri = client.tracking_uri
    run = client.get_run(v.mv.run_id)
    lines = ["Lineage:"]
    if parent:
        name, number = parent.split("/")
        lines.append(f"- parent version: [{parent}]({version_link(uri, name, number)})")
    lines.append(f"- training run: [{run.info.run_name or run.info.run_id}]({run_link(uri, run)})")
    exps = data._experiments(client)
    for d in run.inputs.dataset_inputs:
        producer = data.producer(client, exps, run, d.dataset.name)
        if producer is not None:
            lines.append(f"- data run `{d.dataset.name}`: [{producer.info.run_name or producer.info.run_id}]"
                         f"({run_link(uri, producer)})")
    dagster = run.data.tags.get("dagster.run_id")
    if dagster:
        ui = os.environ.get("CRAWL2CHAT_DAGSTER_UI") or f"http://127.0.0.1:{os.environ.get('DAGSTER_PORT', '3000')}"
        lines.append(f"- Dagster run: [{dagster[:8]}]({ui.rstrip('/')}/runs/{dagster})")
    return "\n".join(lines)


def build_cards(client, out_root: str | Path, model: str | None = None) -> list[Card]:
    found = trees(client)
    if model:
        found = [t for t in found if any(v.ref == model for v in t[0])]
        if not found:
            raise InputError(f"{model}: no registered version of that name (NAME/VERSION, e.g. crawl2chat-base/1)")
    return [build_card(client, versions, parents, out_root) for versions, parents in found]


# ---- crawl2chat report ---------------------------------------------------------------------------

def add_arguments(p) -> None:
    p.add_argument("--out", default="reports", help="directory for the cards (one folder per lineage)")
    p.add_argument("--model", help="only the lineage(s) holding this version, NAME/VERSION")
    p.add_argument("--tracking-uri", default=None, help="MLflow (default: MLFLOW_TRACKING_URI or dagster_home/mlflow.db)")
    p.add_argument("--attach", action="store_true", help="also log each card onto its evaluation run and tag the versions")
    p.add_argument("--json", action="store_true", help="print the cards' facts as JSON (versions with their parents; "
                                                       "per task and version: score, n, 95%% interval) instead of paths")


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
        if not args.json:
            print(f"{card.directory / 'report.md'}  {card.directory / 'report.html'}"
                  + (f"  (attached to eval run {where})" if where else ""))
    if args.json:
        print(json.dumps([{**c.data, "card": str(c.directory / "report.html")} for c in cards], indent=1, default=str))
    return 0
