"""Held-out knowledge probes: does the model say "I don't know" when it should, and answer when it knows?

The probes are the fill-in-the-blank facts of training/conversations/probes.py, found in documents
of the pretraining train split (facts the model has read), minus every probe the knowledge_probes
asset turned into SFT conversations (same id, sentence or question): disjoint from what SFT taught.

Per probe, two samplings of the same engine (the Llama 3 recipe, on the model being evaluated):
  1. completion: the sentence up to the blank as text to continue. Right in at least `knows_at` of
     the samples: the model KNOWS the fact; right in none: it does NOT KNOW it; else mixed.
  2. chat: the question as a user turn, no tools (from memory). Each reply is right (rule_judge),
     a refusal ("I don't know", "not sure", ...), or wrong (a hallucination).
Score: the share of chat replies that are right. Reported beside it: answered_when_known (right
replies on known facts) and idk_when_unknown (refusals on unknown facts), and the hallucination
rate on unknown facts.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from training.evals.core import EvalResult, pass_at_k_metrics, row_seed, timed, without_tools

REFUSAL = re.compile(r"\b(i don't know|i do not know|i'm not sure|i am not sure|not sure|i can't recall|"
                     r"i cannot recall|no idea|i don't remember|i do not remember|i'd rather not guess)\b")


def is_refusal(text: str) -> bool:
    return REFUSAL.search(text.lower().replace("\u2019", "'")) is not None


def training_probe_keys(probes_dir: str | Path | None) -> set[str]:
    """Ids, sentences and questions of the probes the knowledge_probes asset wrote (the SFT side)."""
    if probes_dir is None or not Path(probes_dir).exists():
        return set()
    from training.conversations.dataset import read_table_dataset
    from training.conversations.heldout import text_hash
    rows = list(read_table_dataset(probes_dir))
    # normalized-text hashes too: the same sentence on two pages (another id, other casing, another
    # question wording) would otherwise ask a trained fact again
    return {r[k] for r in rows for k in ("id", "sentence", "question")} | {
        text_hash(r[k]) for r in rows for k in ("sentence", "question")}


def heldout_probes(documents: Iterable, n: int, exclude: set[str], val_fraction: float, max_docs: int = 2000,
                   per_doc: int = 4, seed: int = 0) -> list:
    """`n` probes from train-split documents (what pretraining read), none of them in `exclude`."""
    from pipelines.shards import split_of
    from training.conversations.probes import find_probes
    train_docs = (d for d in documents if split_of(d.id, val_fraction) == "train")
    found = find_probes(train_docs, max_probes=10 * n + 100, max_docs=max_docs, per_doc=per_doc, seed=seed)
    from training.conversations.heldout import text_hash
    return [p for p in found if not {p.id, p.sentence, p.question, text_hash(p.sentence), text_hash(p.question)}
            & exclude][:n]


class KnowledgeProbes:
    kind = "chat"

    def __init__(self, probes: list, samples: int = 2, temperature: float = 0.7, top_k: int | None = 50,
                 max_tokens: int = 16, knows_at: float = 0.5, batch_rows: int = 64, name: str = "knowledge"):
        self.name, self.probes = name, probes
        self.samples, self.temperature, self.top_k = samples, temperature, top_k
        self.max_tokens, self.knows_at, self.batch_rows = max_tokens, knows_at, batch_rows

    def run(self, engine, seed: int) -> EvalResult:
        return timed(lambda: self._run(engine, seed))

    def _run(self, engine, seed: int) -> EvalResult:
        from training.conversations.probes import rule_judge, sample_answers
        if not self.probes:
            return EvalResult(self.name, self.kind, None, 0, [], note="no held-out probes (no clean_text facts)")
        engine = without_tools(engine)
        args = (self.samples, self.temperature, self.top_k, self.max_tokens)
        completions = sample_answers(engine, self.probes, *args, mode="completion", seed=row_seed(seed, "completion"),
                                     batch_rows=self.batch_rows)
        replies = sample_answers(engine, self.probes, *args, mode="chat", seed=row_seed(seed, "chat"),
                                 batch_rows=self.batch_rows)
        records, tally = [], {"known": [0, 0], "unknown": [0, 0, 0]}   # known: right, n; unknown: idk, wrong, n
        for p, comp, chat in zip(self.probes, completions, replies):
            share = sum(rule_judge(p, a) for a in comp) / len(comp)
            status = "known" if share >= self.knows_at else "unknown" if share == 0 else "mixed"
            verdicts = ["right" if rule_judge(p, a) else "refused" if is_refusal(a) else "wrong" for a in chat]
            if status == "known":
                tally["known"][0] += verdicts.count("right")
                tally["known"][1] += len(verdicts)
            elif status == "unknown":
                tally["unknown"][0] += verdicts.count("refused")
                tally["unknown"][1] += verdicts.count("wrong")
                tally["unknown"][2] += len(verdicts)
            records.append({"id": p.id, "question": p.question, "answer": p.answer, "kind": p.kind,
                            "completions": comp, "completion_right_share": share, "status": status,
                            "replies": chat, "verdicts": verdicts, "correct": [v == "right" for v in verdicts]})
        (k_right, k_n), (u_idk, u_wrong, u_n) = tally["known"], tally["unknown"]
        counts = [(len(r["correct"]), sum(r["correct"])) for r in records]
        all_verdicts = [v for r in records for v in r["verdicts"]]
        metrics = {**pass_at_k_metrics(counts),
                   "answered_when_known": k_right / k_n if k_n else None,
                   "idk_when_unknown": u_idk / u_n if u_n else None,
                   "hallucination_when_unknown": u_wrong / u_n if u_n else None,
                   "refusal_rate": all_verdicts.count("refused") / len(all_verdicts),
                   **{f"probes_{s}": sum(r["status"] == s for r in records) for s in ("known", "unknown", "mixed")}}
        score = sum(c / n for n, c in counts) / len(counts)
        return EvalResult(self.name, self.kind, score, len(records), records,
                          {k: v for k, v in metrics.items() if v is not None})
