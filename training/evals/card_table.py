"""The report card's one table of a lineage tree, and the same facts as JSON.

Every registered version of the tree is a column (BASE -> SFT -> RL and RLHF side by side; a stage
with no version shows "not run"), every task a row; a cell is the score, its 95% interval and n
(training/evals/intervals.py), flagged when the version is worse than its parent beyond the
intervals. Failed versions (blocking check or training run failed) are marked in the header. The
reward models of the tree get their own table: held-out accuracy against the length-only baselines
on the same pairs (a reward model that only learnt "longer is worse" would match one of them).

    card_json(...)    {"versions": [{ref, stage, parent, failed, eval_run_id, training}], "tasks":
                      {task: {measure, higher_is_better, versions: {ref: {score, n, interval, regressed}}}},
                      "reward_models": [...], "decontamination": {...}}   (`crawl2chat report --json`)
"""
from __future__ import annotations

from training.evals.intervals import regressed, wilson
from training.evals.registry import STAGES, Version


def measure(task: dict) -> str:
    name = task["task"]
    if not task.get("higher_is_better", True):
        return "bits per byte (lower is better)"
    if name.startswith("mc_") or name in ("arc_easy", "arc_challenge", "hellaswag", "mmlu"):
        return "centred accuracy"
    if name == "core_benchmarks":
        return "mean centred score (CORE-style)"
    if name == "protocol":
        return "adherence rate"
    if name == "knowledge":
        return "right answers (share)"
    return "pass@1"


def _fmt(x) -> str:
    from training.evals.report import fmt
    return fmt(x)


def task_rows(versions: list[Version], parents: dict, evals: dict) -> dict[str, dict]:
    """{task: {"measure", "higher_is_better", "versions": {ref: {score, n, interval, method, regressed}}}}."""
    rows: dict[str, dict] = {}
    for v in versions:
        for t in ((evals.get(v.ref) or {}).get("summary") or {}).get("tasks", []):
            row = rows.setdefault(t["task"], {"measure": measure(t), "higher_is_better": t.get("higher_is_better", True),
                                              "versions": {}})
            row["versions"][v.ref] = {"score": t["score"], "n": t["n"], "interval": t.get("interval"),
                                      "interval_method": t.get("interval_method") or None, "note": t.get("note") or None}
            if t["task"] == "knowledge":
                for k, label in (("answered_when_known", "knowledge: answers when it knows"),
                                 ("idk_when_unknown", "knowledge: \"I don't know\" when it does not")):
                    value = t["metrics"].get(k)
                    rows.setdefault(label, {"measure": "rate", "higher_is_better": True, "versions": {}})["versions"][
                        v.ref] = {"score": value, "n": None, "interval": None, "interval_method": None, "note": None}
            if t["task"] == "identity":   # the name bare and under held-out system prompts (generative.py)
                for key, label in (("without_system", "identity: no system prompt"),
                                   ("with_system", "identity: under a held-out system prompt")):
                    rate, n = t["metrics"].get(f"{key}_rate"), t["metrics"].get(f"{key}_items")
                    if rate is not None and n:
                        rows.setdefault(label, {"measure": "pass@1", "higher_is_better": True, "versions": {}})[
                            "versions"][v.ref] = {"score": rate, "n": n, "interval": list(wilson(rate * n, n)),
                                                  "interval_method": "wilson", "note": None}
    for row in rows.values():
        for ref, cell in row["versions"].items():
            parent = row["versions"].get(parents.get(ref) or "")
            cell["regressed"] = bool(parent) and regressed(cell, parent, row["higher_is_better"])
    return rows


def header(v: Version, failed: dict) -> str:
    why = failed.get(v.ref)
    return f"{v.stage} `{v.ref}`" + (f" FAILED ({why})" if why else "")


def summary_section(versions: list[Version], parents: dict, evals: dict, failed: dict) -> list[str]:
    lines = ["## Summary", "",
             "Every registered version of this lineage tree, one column each; a cell is the score, its 95% interval "
             "(Wilson for rates, bootstrap over items for means) and n. **worse** marks a version worse than its "
             "parent beyond both intervals. A FAILED version is shown but is not a candidate.", ""]
    if not any(evals.get(v.ref) for v in versions):
        return lines + ["No version of this lineage has been evaluated yet: materialize `model_evals`.", ""]
    present = {v.stage for v in versions}
    cols = [(header(v, failed), v) for v in versions] + [(f"{s}: not run", None) for s, *_ in STAGES if s not in present]
    lines += ["| task | measure | " + " | ".join(c for c, _ in cols) + " |", "|---|---|" + "---:|" * len(cols)]
    for task, row in task_rows(versions, parents, evals).items():
        cells = []
        for _, v in cols:
            cell = row["versions"].get(v.ref) if v else None
            if v is None:
                cells.append("not run")
            elif cell is None:
                cells.append("-" if evals.get(v.ref) else "not evaluated")
            elif cell["score"] is None:
                cells.append("none")
            else:
                text = _fmt(cell["score"])
                if cell["interval"]:
                    text += f" [{cell['interval'][0]:.3g}, {cell['interval'][1]:.3g}]"
                if cell["n"] is not None:
                    text += f" n={cell['n']}"
                cells.append(text + (" **worse**" if cell["regressed"] else ""))
        lines.append(f"| {task} | {row['measure']} | " + " | ".join(cells) + " |")
    notes = [f"- `{v.ref}` `{t['task']}`: {t['note']}" for v in versions
             for t in ((evals.get(v.ref) or {}).get("summary") or {}).get("tasks", []) if t.get("note")]
    return lines + [""] + (["Tasks that scored nothing:", *notes, ""] if notes else [])


def compute_section(trained: dict[str, dict]) -> list[str]:
    """Compute, time, throughput and MFU per trained version (what its run logged)."""
    lines = ["## Compute per stage", "", "| version | stage | tokens | FLOPs | training s | wall s | tokens/s | MFU |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for ref, f in trained.items():
        on_cpu = str(f.get("device") or "").startswith("cpu")
        mfu = _fmt(f["mfu"]) if f.get("mfu") is not None else "n/a (CPU)" if on_cpu else "not logged"
        lines.append(f"| `{ref}` | {f['stage']} | {_fmt(f['tokens'])} | {_fmt(f['flops'])} | {_fmt(f['train_seconds'])} "
                     f"| {_fmt(f['wall_seconds'])} | {_fmt(f['tokens_per_s'])} | {mfu} |")
    return lines + [""]


def reward_section(rms: list[dict]) -> list[str]:
    lines = ["## Reward model", ""]
    if not rms:
        return lines + ["No reward model (crawl2chat-rm) was trained from a chat version of this lineage.", ""]
    lines += ["Held-out pairwise accuracy (chosen scored above rejected) beside what length alone gets on the same "
              "pairs: a reward model no better than a length baseline has learnt length.", "",
              "| reward model | trained from | held-out accuracy | 95% interval | n pairs | shorter wins | longer wins |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for r in rms:
        lb = r["length_baseline"] or {}
        ci = f"[{r['interval'][0]:.3g}, {r['interval'][1]:.3g}]" if r["interval"] else "-"
        name = f"`{r['ref']}`" + (f" FAILED ({r['failed']})" if r["failed"] else "")
        lines.append(f"| {name} | `{r['parent']}` | {_fmt(r['accuracy'])} | {ci} | {_fmt(r['n'])} | "
                     f"{_fmt(lb.get('shorter_wins', 'pairs not found'))} | {_fmt(lb.get('longer_wins', 'pairs not found'))} |")
    return lines + [""]


def decontamination(versions: list[Version], evals: dict) -> dict[str, dict]:
    """{task: {"checked", "short", "pretraining", "sft", "excluded", "version"}} from the deepest evaluated
    version that checked the task (a chat version also checks against the SFT data)."""
    out: dict[str, dict] = {}
    for v in versions:
        for t in ((evals.get(v.ref) or {}).get("summary") or {}).get("tasks", []):
            m = t.get("metrics") or {}
            if "decontam_checked" in m:
                out[t["task"]] = {"items": t["n"], "checked": m["decontam_checked"], "short": m.get("decontam_short"),
                                  "pretraining": m.get("contaminated_pretraining"), "sft": m.get("contaminated_sft"),
                                  "excluded": m.get("decontam_excluded"), "version": v.ref}
    return out


def decontamination_section(rows: dict[str, dict]) -> list[str]:
    lines = ["## Decontamination", ""]
    if not rows:
        return lines + ["No evaluation checked its items against the training data (eval config "
                        "`decontamination: off`, or evaluated before the check existed).", ""]
    lines += ["Eval items sharing a 13-gram (GPT-3's test; `decontamination_ngram`) with the pretraining corpus "
              "(clean_text's train split) or the SFT data, hashed as the dedup stage hashes text. Knowledge probes "
              "come from the pretraining corpus by design and are checked against the SFT data only.", "",
              "| task | items scored | checked | too short to check | in pretraining | in SFT data | left out | "
              "checked for |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for task, r in rows.items():
        flag = " **contaminated**" if (r["pretraining"] or 0) + (r["sft"] or 0) and not r["excluded"] else ""
        lines.append(f"| {task}{flag} | {_fmt(r['items'])} | {_fmt(r['checked'])} | {_fmt(r['short'])} | "
                     f"{_fmt(r['pretraining'] if r['pretraining'] is not None else 'no corpus')} | "
                     f"{_fmt(r['sft'] if r['sft'] is not None else 'no SFT data')} | {_fmt(r['excluded'])} | "
                     f"`{r['version']}` |")
    return lines + [""]


def card_json(versions: list[Version], parents: dict, evals: dict, failed: dict, trained: dict, rms: list[dict],
              decontamination: dict | None = None, links: dict | None = None) -> dict:
    keep = ("tokens", "flops", "train_seconds", "wall_seconds", "tokens_per_s", "mfu", "device", "world_size")
    return {"root": versions[0].ref if versions else None,
            "versions": [{"ref": v.ref, "stage": v.stage, "name": v.name, "version": int(v.mv.version),
                          "parent": parents.get(v.ref), "failed": failed.get(v.ref),
                          "eval_run_id": (evals.get(v.ref) or {}).get("run_id"),
                          "training_run_id": v.mv.run_id, "mlflow": (links or {}).get(v.ref),
                          "training": {k: trained.get(v.ref, {}).get(k) for k in keep}} for v in versions],
            "tasks": task_rows(versions, parents, evals),
            "reward_models": rms,
            "decontamination": decontamination or {}}
