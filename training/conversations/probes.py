"""Knowledge probes and "I don't know" conversations: Llama 3's recipe on our own clean text.

1. Snippets: sentences of clean_text with a year, a number or a named phrase (two to four
   capitalised words) after at least four words. The phrase is the answer; the question is the sentence with a blank
       Fill in the blank with a year. A page on example.org says: "The bridge was finished in ____."
   (rule based: the answer is known exactly, one blank per sentence, and the answer must not
   appear a second time in the sentence).
2. Sample the model k times (distinct seeds, temperature ~0.7) WITHOUT the document: a base model
   is prompted with the sentence up to the blank, as text to continue ("completion"); a chat model
   with the question as a user turn ("chat").
3. Judge each sample: `rule_judge` (numbers: the first number of the sample equals the answer;
   names: the normalized answer occurs in the normalized sample) or any callable(probe, sample)
   -> bool, e.g. a model judge at scale.
4. Classify: right in at least `knows_at` of the samples -> "knows"; in at most `unknown_at` ->
   "does_not_know"; otherwise "mixed" (no conversation: the model is unsure either way).
5. Conversations: "knows" -> the question and its answer; "does_not_know" -> an answer that says it
   does not know (several phrasings), and a second variant that calls the `search` tool with the
   blank sentence and answers from what the search REALLY returned (the same SearchIndex the chat
   uses), or says the results do not show it.
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import asdict, dataclass
from typing import Callable, Iterable
from urllib.parse import urlparse

import pyarrow as pa

from pipelines.document import Document
from training.conversations.dataset import content_id

KINDS = {"year": "year", "number": "number", "name": "name"}
QUESTIONS = ['Fill in the blank with a {what}. A page on {domain} says: "{cloze}"',
             'A page on {domain} says: "{cloze}" Which {what} goes in the blank?',
             'Complete this sentence from {domain} with the right {what}: "{cloze}"',
             'What {what} is missing here? "{cloze}" (from a page on {domain})',
             'Do you know which {what} fills the gap? "{cloze}" It is from {domain}.']
MIN_PREFIX_WORDS = 4
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_YEAR = re.compile(r"(?<![\w.,$])(1[5-9]\d\d|20\d\d)(?![\w]|[.,]\d)")
_NUMBER = re.compile(r"(?<![\w.,$-])(\d{1,3}(?:,\d{3})+|\d{2,}(?:\.\d+)?)(?![\w%]|[.,]\d)")
# two to four capitalised words ("Margaret Ellison", "Python Software Foundation"): a single
# capitalised word mid-sentence is as often a term or an identifier (True, Codec) as a name
_NAME = re.compile(r"(?<![\w'-])([A-Z][a-z]+(?:\s+(?:of\s+|de\s+)?[A-Z][a-z]+){1,3})(?![\w'-])")
_NOT_NAMES = {"The", "This", "That", "These", "Those", "There", "Then", "When", "What", "Which", "While",
              "If", "It", "In", "On", "At", "For", "And", "But", "Or", "An", "As", "By", "To", "We", "You",
              "They", "He", "She", "His", "Her", "Its", "Our", "Their", "Some", "Many", "Most", "All",
              "Each", "Every", "See", "Note", "However", "Also", "For example", "Monday", "Tuesday",
              "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "Return", "True", "False", "None"}
PROBE_SCHEMA = pa.schema([
    ("id", pa.string()), ("doc_id", pa.string()), ("url", pa.string()), ("domain", pa.string()),
    ("sentence", pa.string()), ("kind", pa.string()), ("answer", pa.string()), ("prefix", pa.string()),
    ("question", pa.string()), ("prompt_mode", pa.string()), ("samples", pa.list_(pa.string())),
    ("judgments", pa.list_(pa.bool_())), ("right", pa.int64()), ("outcome", pa.string())])

Judge = Callable[["Probe", str], bool]


@dataclass
class Probe:
    id: str
    doc_id: str
    url: str
    domain: str
    sentence: str
    kind: str          # year | number | name
    answer: str
    prefix: str        # the sentence up to the blank: what a base model continues
    question: str      # the sentence with a blank: what a user asks


# ---- 1. snippets ------------------------------------------------------------------------------

def _domain(url: str | None) -> str:
    host = (urlparse(url).hostname or "") if url else ""
    return host.removeprefix("www.") or "the web"


def _candidates(sentence: str):
    """(kind, start, end) of answer spans, most specific kind first."""
    for m in _YEAR.finditer(sentence):
        yield "year", m.start(1), m.end(1)
    for m in _NUMBER.finditer(sentence):
        if not _YEAR.fullmatch(m[1]):
            yield "number", m.start(1), m.end(1)
    for m in _NAME.finditer(sentence):
        if m[1] not in _NOT_NAMES and m[1].split()[0] not in _NOT_NAMES:
            yield "name", m.start(1), m.end(1)


def sentence_probe(sentence: str, doc_id: str, url: str | None) -> Probe | None:
    """The first usable blank of a sentence (None if it has none)."""
    words = sentence.split()
    if not 8 <= len(words) <= 45 or len(sentence) > 320 or not sentence.endswith((".", "!", "?")):
        return None
    for kind, start, end in _candidates(sentence):
        answer, prefix = sentence[start:end], sentence[:start].rstrip()
        if len(prefix.split()) < MIN_PREFIX_WORDS or sentence.count(answer) != 1:
            continue
        domain = _domain(url)
        cloze = sentence[:start] + "____" + sentence[end:]
        pid = "probe-" + hashlib.sha256(f"{doc_id}\x00{sentence}\x00{answer}".encode()).hexdigest()[:16]
        # one wording per probe, picked by its id: the model learns "I don't know" for the content,
        # not for one template (the demo's probes all had the first wording)
        template = QUESTIONS[int(pid[-8:], 16) % len(QUESTIONS)]
        question = template.format(what=KINDS[kind], domain=domain, cloze=cloze)
        return Probe(pid, doc_id, url or "", domain, sentence, kind, answer, prefix, question)
    return None


def find_probes(documents: Iterable[Document], max_probes: int = 200, max_docs: int = 2000,
                per_doc: int = 2, seed: int = 0) -> list[Probe]:
    """Probes from the first `max_docs` documents (at most `per_doc` each), then a stable sample of
    `max_probes` of them (by a hash of seed and probe id, so the same corpus gives the same probes)."""
    found: dict[str, Probe] = {}
    for i, doc in enumerate(documents):
        if i >= max_docs:
            break
        taken = 0
        for sentence in _SENTENCE_END.split(" ".join((doc.text or "").split())):
            p = sentence_probe(sentence, doc.id, doc.metadata.get("url"))
            if p is not None and p.id not in found:
                found[p.id] = p
                taken += 1
                if taken >= per_doc:
                    break
    order = sorted(found.values(), key=lambda p: hashlib.sha256(f"{seed}:{p.id}".encode()).digest())
    return order[:max_probes]


# ---- 2-4. sample, judge, classify -------------------------------------------------------------

def normalize_answer(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return " ".join(w for w in words if w not in ("a", "an", "the"))


def _number(text: str) -> float | None:
    m = re.search(r"-?\d[\d,]*(?:\.\d+)?", text)
    if not m:
        return None
    try:
        return float(m[0].replace(",", ""))
    except ValueError:
        return None


def rule_judge(probe: Probe, sample: str) -> bool:
    """Years and numbers: the first number in the sample equals the answer (1,850 = 1850.0).
    Names: the normalized answer occurs as whole words in the normalized sample."""
    if probe.kind in ("year", "number"):
        got, want = _number(sample), _number(probe.answer)
        return got is not None and got == want
    want = normalize_answer(probe.answer)
    return bool(want) and f" {want} " in f" {normalize_answer(sample)} "


def classify(judgments: list[bool], knows_at: float = 1.0, unknown_at: float = 0.0) -> str:
    share = sum(judgments) / len(judgments)
    if share >= knows_at:
        return "knows"
    if share <= unknown_at:
        return "does_not_know"
    return "mixed"


def _seed(seed: int, probe_id: str, j: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{probe_id}:{j}".encode()).digest()[:4], "big") >> 1


def probe_prompt(tokenizer, probe: Probe, mode: str) -> list[int]:
    if mode == "completion":
        return [tokenizer.bos_id, *tokenizer.encode(probe.prefix)]
    if mode == "chat":
        from training.conversations.render import render_for_completion
        return render_for_completion(tokenizer, [{"role": "user", "content": probe.question}])
    raise ValueError(f"prompt mode must be 'completion' or 'chat', not {mode!r}")


def sample_answers(engine, probes: list[Probe], samples: int = 4, temperature: float = 0.7,
                   top_k: int | None = 50, max_tokens: int = 12, mode: str = "completion",
                   seed: int = 0, batch_rows: int = 64) -> list[list[str]]:
    """k answers per probe from the engine, each row its own seed (a hash of seed, probe and j, so
    an answer does not depend on which other probes share its batch)."""
    from training.conversations.render import parse_assistant
    from training.engine.engine import SamplingParams
    tok = engine.tokenizer
    block = engine.model.config.block_size
    rows = [(i, j) for i in range(len(probes)) for j in range(samples)]
    prompts = {i: probe_prompt(tok, p, mode)[-(block - max_tokens - 1):] for i, p in enumerate(probes)}
    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_k=top_k)
    out: list[list[str]] = [[] for _ in probes]
    for start in range(0, len(rows), batch_rows):
        chunk = rows[start:start + batch_rows]
        done = engine.generate([prompts[i] for i, _ in chunk], params,
                               seeds=[_seed(seed, probes[i].id, j) for i, j in chunk])
        for (i, _), c in zip(chunk, done):
            parts = parse_assistant(tok, c.tokens, c.sampled)
            out[i].append("".join(p["text"] for p in parts if p["type"] == "text"))
    return out


def run_probes(engine, probes: list[Probe], cfg, judge: Judge = rule_judge) -> list[dict]:
    """Outcome rows (PROBE_SCHEMA) for `probes` under the probes config `cfg`."""
    answers = sample_answers(engine, probes, cfg.samples, cfg.temperature, cfg.top_k, cfg.max_tokens,
                             cfg.prompt, cfg.seed, cfg.batch_rows)
    rows = []
    for p, got in zip(probes, answers):
        judgments = [bool(judge(p, a)) for a in got]
        rows.append({**asdict(p), "prompt_mode": cfg.prompt, "samples": got, "judgments": judgments,
                     "right": sum(judgments), "outcome": classify(judgments, cfg.knows_at, cfg.unknown_at)})
    return rows


def outcome_rates(rows: list[dict]) -> dict:
    n = len(rows)
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("knows", "does_not_know", "mixed")}
    return {"probes": n, **counts, **{f"{k}_rate": (v / n if n else 0.0) for k, v in counts.items()}}


# ---- 5. conversations -------------------------------------------------------------------------

KNOWN_ANSWERS = ["{answer}.", "It's {answer}.", "The missing {what} is {answer}.",
                 'The blank is {answer}: "{sentence}"']
IDK_ANSWERS = ["I don't know. I can't recall that page well enough to give the {what} reliably.",
               "I'm not sure, and I'd rather not guess: I don't remember which {what} goes there.",
               "I don't know which {what} that page gives. If you share the text, I can fill it in.",
               "I don't know; I can't recall the {what} on that page reliably.",
               "Sorry, I don't know that one. I could search my training corpus for the page if you like."]
SEARCH_INTROS = ["I don't remember that, so let me search for the page.",
                 "I'm not sure. Let me look it up in my search index.",
                 "I don't know it offhand; I'll search for it."]
_HIT = re.compile(r"^\[\d+\] (\S*)$")


def search_query(probe_row: dict) -> str:
    """The blank sentence without the blank: the words the page holds around the answer."""
    text = " ".join(probe_row["sentence"].replace(probe_row["answer"], " ", 1).split())
    return re.sub(r"\s+([,.;:!?])", r"\1", text)


def answer_from_results(probe_row: dict, results: str) -> str:
    """The closing sentence, from what the search returned: the answer with the URL whose snippet
    holds it, or that the results do not show it."""
    what = KINDS[probe_row["kind"]]
    url, blocks = None, []
    for line in results.splitlines():
        m = _HIT.match(line)
        if m:
            url = m[1]
            blocks.append([url, ""])
        elif blocks:
            blocks[-1][1] += " " + line
    probe = Probe(**{k: probe_row[k] for k in Probe.__dataclass_fields__})
    for url, snippet in blocks:
        if probe_row["answer"] in snippet or (probe.kind == "name" and rule_judge(probe, snippet)):
            return f"According to {url}, the {what} is {probe_row['answer']}."
    return f"The search results do not show the {what}, so I don't know it."


def probe_conversations(rows: list[dict], search: Callable[[str], str] | None = None,
                        seed: int = 0) -> tuple[list[dict], dict]:
    """Dataset rows from probe outcomes, and counts per source. `search` is the search tool
    (query -> text); None leaves out the search variant."""
    rng = random.Random(f"probes:{seed}")
    out, counts = [], {"probe_known": 0, "probe_idk": 0, "probe_idk_search": 0, "mixed_skipped": 0}

    def add(source: str, messages: list[dict]):
        out.append({"id": content_id(source, messages), "source": source, "messages": messages})
        counts[source] += 1

    for r in rows:
        what = KINDS[r["kind"]]
        user = {"role": "user", "content": r["question"]}
        if r["outcome"] == "knows":
            text = rng.choice(KNOWN_ANSWERS).format(answer=r["answer"], what=what, sentence=r["sentence"])
            add("probe_known", [user, {"role": "assistant", "content": text}])
        elif r["outcome"] == "does_not_know":
            add("probe_idk", [user, {"role": "assistant", "content": rng.choice(IDK_ANSWERS).format(what=what)}])
            if search is not None:
                query = search_query(r)
                results = search(query)
                add("probe_idk_search", [user, {"role": "assistant", "content": [
                    {"type": "text", "text": rng.choice(SEARCH_INTROS)},
                    {"type": "tool_call", "name": "search", "arguments": query},
                    {"type": "tool_output", "text": results},
                    {"type": "text", "text": answer_from_results(r, results)}]}])
        else:
            counts["mixed_skipped"] += 1
    return out, counts
