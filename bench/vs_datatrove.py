"""datatrove as the oracle: FineWeb's own steps (datatrove 0.2.0) and ours on the same WARC files.
Prints one JSON object.

    .venv/bin/python bench/vs_datatrove.py [--pages 2000] [--seed 0] [--files 2] [--warcs F ...]
                                           [--realweb [DIR]] [--modes trafilatura resiliparse] [--out FILE]

`--realweb` runs on real pages: all 1,310 of ../shared/realweb wrapped into one WARC in a temporary
folder (bench/realweb_warc.py). The last line printed is one JSON object with the headline figures:
speedup_trafilatura, speedup_resiliparse (our docs per CPU-second over datatrove's), agreement
(keep/drop agreement on the documents both sides extract, trafilatura mode) and per-mode details.

datatrove runs in its own virtualenv (default bench/.venv-datatrove, created on first use with
pip; git-ignored) pinned to the FineWeb-era release 0.2.0, as FineWeb's script chains it
(bench/datatrove_fineweb.py, which runs there):

    WarcReader -> URLFilter -> Trafilatura(favour_precision) -> LanguageFilter -> GopherRepetition
      -> GopherQuality -> C4Quality(filter_no_terminal_punct=False) -> FineWebQuality

Ours is `pipelines.process.build_batch_stages` with the default config (fineweb_v1), once per
extraction backend. Each side runs in a fresh process of its own (trafilatura's `deduplicate`
cache is process state), one core, and reports its CPU time; docs/s/core is WARC response records
per CPU second of the pipeline loop (block lists and models are loaded before the clock starts).

Same inputs on both sides, so that a difference is a difference of the code:
- the same trafilatura, lxml, lxml_html_clean, justext and nltk versions as our .venv (pinned in
  the datatrove venv from our installed versions);
- the same block lists: the union of datatrove's bundled UT1 `adult` list and word lists with
  ours (given to datatrove as its `extra_*` arguments, to ours as a UT1-layout `blocklist_dir`);
- the same language model file: our bundled lid.176.ftz placed where datatrove caches its
  download (FineWeb used lid.176.bin; nothing can be downloaded here);
- NLTK's punkt data cannot be downloaded either: the venv gets the minimal `punkt_tab/english`
  files NLTK needs (four empty tables = an untrained Punkt model, the model our tokenizer
  reproduces; FineWeb's pretrained English model also knew ~150 abbreviations such as "Dr.");
- datatrove's extraction timeout is wall-clock in a thread (0.1 s in FineWeb): on a shared machine
  that drops pages at random, so it gets `--datatrove-timeout` (default 60 s) and ours runs inline
  with no timeout. Timeouts are a load question, not a decision of the filters.

A second comparison isolates the filters: `--stress N` texts are made from our extracted pages by
1-3 edits each that push a rule to its threshold or into a corner of its semantics (abbreviations
and initials before brackets, bullets, end ellipses, hashes, duplicate and short lines, blank lines,
\r / \u2028 / \x1c line breaks, trailing spaces, truncation, C4 line rules, symbol runs, curly
quotes and dashes, few sentences, foreign sentences); both sides run language .. fineweb_quality on
exactly the same texts (`stress_filters` in the output).

Output: per mode, every document's two decisions (`kept` or `stage/reason`), keep/drop agreement
over all records and over the documents both sides extract (`agreement_both_extracted`: where
reading or extraction failed on one side there is nothing to compare the filters on), a confusion
table (datatrove's stage -> our stage -> count), and every disagreement with its computed cause
(`disagreement_cause`): which side dropped it, at which stage, with which reason, and what differed
upstream. Datatrove's reader gives no reason when it skips a record, so its checks (payload type,
libmagic, UTF-8 then cchardet) are replayed on every record (`reader_skip_reason`) and the replay is
checked against what the reader really yielded (`reader_replay_mismatch`, expected empty). Causes
fall into categories: `reader`, `url_filter`, `decoding` (the two readers decoded different HTML),
`extraction_failure`, `extractor_backend` (resiliparse's text or emptiness: not a filter
disagreement), `extraction_differs` (trafilatura's text differs on the same HTML) and `filter` (the
same text, a filter decides differently). `disagreement_causes` counts them. docs/s/core of both sides
with the ratios. `--per-document` adds every document's pair of decisions. Takes about 5 minutes for
2,000 generated pages on a free core; --realweb about 4 minutes of CPU (the first run also creates
the venv: about a minute).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REALWEB = ROOT.parent / "shared" / "realweb"
DEFAULT_VENV = ROOT / "bench" / ".venv-datatrove"
# Pinned here: FineWeb's datatrove and what its steps import. fasttext-wheel is the fastText build
# datatrove names; its predict() needs numpy < 2.
DATATROVE_PINS = ["datatrove[processing]==0.2.0", "fasttext-wheel==0.9.2", "numpy<2", "warcio", "faust-cchardet",
                  "python-magic", "tldextract", "fasteners", "aiohttp"]
# Pinned to the versions in our .venv, so that extraction and tokenization are the same code.
SAME_AS_OURS = ["trafilatura", "lxml", "lxml_html_clean", "justext", "courlan", "htmldate", "nltk"]
STAGES = ["warc_reader", "url_filter", "extraction", "language", "gopher_repetition", "gopher_quality",
          "c4_quality", "fineweb_quality", "kept"]
LID_URL = "https://dl.fbaipublicfiles.com/fasttext/supervised-models/lid.176.bin"
LID_CACHE = ("filters", "language_filter")  # datatrove's cached_asset_path_or_download namespace/subfolder

# Documented differences of datatrove 0.2.0's URL filter (its bugs), keyed by the computed
# (first stage that differs, datatrove's decision there, ours): an explanation added to a cause
# that is computed anyway, never a substitute for it.
URL_FILTER_NOTES = {
    ("passed", "url"):
        "datatrove 0.2.0 looks the raw URL (with its scheme) up in UT1's scheme-less `urls` list, so its "
        "`url` rule never fires; ours normalizes the URL the way UT1 writes it (url_filter.py)",
    ("passed", "hard_blacklisted"):
        "datatrove 0.2.0 compares URL tokens case-sensitively with its lowercase word lists "
        "(`/Hentai/` passes); ours lowercases them (url_filter.py)",
    ("passed", "soft_blacklisted"):
        "datatrove 0.2.0 compares URL tokens case-sensitively with its lowercase word lists; ours "
        "lowercases them (url_filter.py)",
}


# ---------------------------------------------------------------- the datatrove virtualenv

def _our_versions() -> dict[str, str]:
    out = {}
    for name in SAME_AS_OURS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def ensure_venv(venv: Path) -> Path:
    """The datatrove virtualenv's python, created and pip-installed when missing or stale."""
    pins = DATATROVE_PINS + [f"{k}=={v}" for k, v in sorted(_our_versions().items())]
    stamp = venv / ".pins"
    python = venv / "bin" / "python"
    if not (stamp.is_file() and stamp.read_text() == "\n".join(pins) and python.exists()):
        print(f"vs_datatrove: creating {venv} ({', '.join(pins)})", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
                       check=True)
        stamp.write_text("\n".join(pins))
    from pipelines.quality.punkt import write_untrained_punkt_tab
    write_untrained_punkt_tab(venv / "nltk_data")
    _place_lid_model(python, datatrove_env(venv))
    return python


def _place_lid_model(python: Path, env: dict) -> None:
    """Our lid.176.ftz where datatrove's LanguageFilter looks for its downloaded lid.176.bin
    (datatrove computes the path: huggingface_hub's assets cache + the URL made a file name; its
    `.completed` marker says the download is done), so it never downloads."""
    from pipelines.lid import bundled_model_path
    where = subprocess.run([str(python), "-c", (
        "import os; from datatrove.io import strip_protocol; from huggingface_hub import cached_assets_path; "
        f"d = cached_assets_path(library_name='datatrove', namespace={LID_CACHE[0]!r}, subfolder={LID_CACHE[1]!r}); "
        f"print(os.path.join(d, strip_protocol({LID_URL!r}).replace('/', '_')))")],
        capture_output=True, text=True, check=True, env=env)
    target = Path(where.stdout.strip())
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundled_model_path(), target)
    Path(f"{target}.completed").touch()


def datatrove_env(venv: Path) -> dict:
    env = dict(os.environ, NLTK_DATA=str(venv / "nltk_data"), HF_ASSETS_CACHE=str(venv / "hf-assets"),
               HF_HUB_OFFLINE="1", TLDEXTRACT_CACHE=str(venv / "tldextract"), PYTHONHASHSEED="0")
    env.pop("PYTHONPATH", None)
    return env


# ---------------------------------------------------------------- shared block lists

def _datatrove_assets(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "from datatrove.utils._import_utils import ASSETS_PATH; "
                                             "print(ASSETS_PATH)"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def build_blocklists(assets: Path, out: Path) -> dict:
    """The union of datatrove's lists and ours: a UT1-layout folder for our URLFilter, and the
    lists of ours that datatrove gets as extra_* arguments. Returns those lists."""
    from pipelines.url_filter import DEFAULT_BLOCKLIST_DIR, WORD_FILES, read_list
    ours = {"domains": read_list(DEFAULT_BLOCKLIST_DIR / "adult" / "domains"),
            "urls": read_list(DEFAULT_BLOCKLIST_DIR / "adult" / "urls"),
            **{k: read_list(DEFAULT_BLOCKLIST_DIR / "words" / f) for k, f in WORD_FILES.items()}}
    with tarfile.open(assets / "url_filterblacklists.tar.gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        ut1 = {k: tar.extractfile(members[f"adult/{k}"]).read().decode("utf-8", "replace").splitlines()
               for k in ("domains", "urls")}
    theirs_words = {"hard": "banned_words.txt", "soft": "soft_banned_words.txt", "subwords": "banned_subwords.txt"}
    (out / "adult").mkdir(parents=True, exist_ok=True)
    (out / "words").mkdir(parents=True, exist_ok=True)
    for k in ("domains", "urls"):
        (out / "adult" / k).write_text("\n".join(ut1[k] + ours[k]) + "\n")
    for k, f in WORD_FILES.items():
        theirs = (assets / theirs_words[k]).read_text().splitlines()
        (out / "words" / f).write_text("\n".join(theirs + ours[k]) + "\n")
    return ours


# ---------------------------------------------------------------- workers (one process per side)

def ours_worker(spec: dict) -> dict:
    """Runs in our .venv: build_batch_stages with extraction inline, every decision recorded."""
    sys.path.insert(0, str(ROOT))
    from pipelines.config import load_config
    from pipelines.process import build_batch_stages
    from pipelines.runner import Stage, run_stages

    decisions: dict[str, list] = {}
    texts: dict[str, str] = {}
    html: dict[str, str] = {}  # the decoded HTML, digested after the clock stops (as datatrove's side)
    lang: dict[str, list] = {}

    class RecordText(Stage):
        name = "_record_extracted"

        def process(self, docs, ctx):
            for doc in docs:
                texts[doc.id] = doc.text
                yield doc

    class RecordHtml(Stage):
        """The decoded HTML's digest, to tell a decoding difference from an extraction one."""
        name = "_record_html"

        def process(self, docs, ctx):
            for doc in docs:
                html[doc.id] = doc.text
                yield doc

    def sink(doc, stage, reason):
        decisions[doc.id] = [stage, reason]
        if stage == "language":
            lang[doc.id] = [doc.metadata.get("language"), doc.metadata.get("language_score")]

    cfg = load_config(spec.get("config"), {"extraction": {"backend": spec["mode"], "workers": 0},
                                           "url_filter": {"blocklist_dir": spec["blocklists"]}})
    source = iter(())
    if spec.get("texts"):  # filters only, on given texts (the stress test)
        from pipelines.document import Document
        from pipelines.process import filter_stages
        items = [json.loads(line) for line in open(spec["texts"], encoding="utf-8")]
        source = iter([Document(d["text"], d["id"], {"url": d["url"]}) for d in items])
        stages = filter_stages(cfg)
    else:
        stages = build_batch_stages(cfg, spec["warcs"], spec["dump"])
        at = [s.name for s in stages].index("extraction")
        stages[at:at + 1] = [RecordHtml(), stages[at], RecordText()]
    # warm up what loads lazily (the LID model, trafilatura/resiliparse imports) off the clock
    from datatrove_fineweb import WARM_HTML
    from pipelines.document import Document
    list(run_stages(iter([Document(WARM_HTML, "warm-up", {"url": "http://warm.example/"})]),
                    [s for s in stages if not s.is_source])[0])
    texts.clear()
    html.clear()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    docs, stats = run_stages(source, stages, sink)
    kept = []
    for doc in docs:
        kept.append(doc.id)
        lang[doc.id] = [doc.metadata.get("language"), doc.metadata.get("language_score")]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    html_sha1 = {k: hashlib.sha1(v.encode("utf-8", "surrogatepass")).hexdigest() for k, v in html.items()}
    for doc_id in kept:
        decisions[doc_id] = ["kept", None]
    records = stats["warc_reader"].docs_in if "warc_reader" in stats else stats["language"].docs_in
    return {"decisions": decisions, "texts": texts, "lang": lang, "records": records, "html_sha1": html_sha1,
            "cpu_s": cpu, "wall_s": wall, "stats": stats.as_dict()}


def run_worker(python: Path, side: str, spec: dict, workdir: Path, env: dict | None = None) -> dict:
    """One side in a fresh process: datatrove_fineweb.py in the datatrove venv, or ours_worker here."""
    spec_path = workdir / f"spec-{side}-{spec.get('mode', 'trafilatura')}.json"
    out_path = spec_path.with_suffix(".out.json")
    spec_path.write_text(json.dumps(spec))
    if side == "datatrove":
        cmd = [str(python), str(Path(__file__).with_name("datatrove_fineweb.py")), str(spec_path), str(out_path)]
    else:
        cmd = [str(python), str(Path(__file__).resolve()), "--worker", str(spec_path), str(out_path)]
    # one core each: the side's process (and anything it starts) is pinned to one CPU
    core = min(os.sched_getaffinity(0))
    subprocess.run(cmd, check=True, env=env, preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    return json.loads(out_path.read_text())


# ---------------------------------------------------------------- stress texts

STRESS_EDITS = {
    "abbreviations": lambda t, r: t.replace(". ", r.choice([" (Ph.D.). ", " e.g. this. ", ". Dr. Smith said so. ",
                                                             " in the U.S. ", " (approx.) ", ". J. Doe agreed. "]), 3),
    "bullets": lambda t, r: t + "".join(f"\n{r.choice(['•', '-', ' -', '*'])} item {i}" for i in range(r.randint(1, 40))),
    "end_ellipsis": lambda t, r: "\n".join(line + (r.choice(["...", "…", " ...", "... "]) if r.random() < 0.35 else "")
                                           for line in t.split("\n")),
    "hashes": lambda t, r: t + " " + " ".join(f"#{w}" for w in t.split()[:r.randint(1, 60)]),
    "dup_lines": lambda t, r: t + "\n" + "\n".join(r.choice(t.split("\n")) for _ in range(r.randint(1, 12))),
    "short_lines": lambda t, r: t + "".join(f"\nMenu {i}" for i in range(r.randint(1, 60))),
    "blank_lines": lambda t, r: t.replace("\n", r.choice(["\n\n", "\n \n", "\r\n", "\n\n\n"])),
    "odd_line_breaks": lambda t, r: t.replace("\n", r.choice(["\u2028", "\r", "\x0c", "\x1c", "\x85"]), r.randint(1, 5)),
    "trailing_spaces": lambda t, r: "\n".join(line + " " * r.randint(0, 2) for line in t.split("\n")),
    "truncate": lambda t, r: " ".join(t.split(" ")[:r.randint(30, 90)]),
    "c4_lines": lambda t, r: t + "\n" + r.choice(["Enable JavaScript to view this page.", "Read our privacy policy here.",
                                                 "This site uses cookies to improve it.", "Lorem ipsum dolor sit amet.",
                                                 "var x = {a: 1};", "See note [1] and [edit] there.", "Ok then."]),
    "symbols": lambda t, r: t + "\n" + " ".join(r.choice(["|", "»", "→", "©", "★", "--", "…", "·", "2024", "$5"])
                                               for _ in range(r.randint(5, 80))),
    "quotes_dashes": lambda t, r: t.replace(" ", r.choice([" “", " ‘", " – ", " — ", " '", ' "']), r.randint(1, 30)),
    "few_sentences": lambda t, r: "\n".join(t.split("\n")[:r.randint(1, 6)]),
    "foreign_mix": lambda t, r: t + "\n" + r.choice([
        "Der Gemeinderat hat am Dienstag über die neue Bibliothek und den Haushalt beraten.",
        "Le conseil municipal s'est réuni mardi pour discuter de la nouvelle bibliothèque.",
        "El ayuntamiento se reunió el martes para hablar de la nueva biblioteca."]) * r.randint(1, 8),
}


def stress_texts(texts: list[str], n: int, seed: int = 0) -> list[dict]:
    """`n` documents made from real extracted texts by 1-3 edits each that push a rule towards
    its threshold or into a corner of its semantics (see STRESS_EDITS)."""
    import random
    rng = random.Random(f"stress-{seed}")
    names = sorted(STRESS_EDITS)
    out = []
    for i in range(n):
        text = rng.choice(texts)
        edits = rng.sample(names, rng.randint(1, 3))
        for name in edits:
            text = STRESS_EDITS[name](text, rng)
        out.append({"id": f"stress-{i:05d}", "url": f"http://stress.example/{i}/" + "+".join(edits), "text": text})
    return out


# ---------------------------------------------------------------- comparison

def _label(decision) -> str:
    stage, reason = decision
    return "kept" if stage == "kept" else f"{stage}/{reason}"


EXTRACTED = STAGES[STAGES.index("extraction") + 1:]  # a decision at one of these: the side extracted text
# extraction.prefilter_languages decides a language drop before trafilatura: a filter decision to
# compare, not a failure to extract (else its mistakes would hide outside the agreement figure)
DECIDED_AT_EXTRACTION = {"language_prefilter"}


def _extracted(decision) -> bool:
    return decision[0] in EXTRACTED or (decision[0] == "extraction" and decision[1] in DECIDED_AT_EXTRACTION)


def disagreement_cause(stage: str, dt_there: str, ours_there: str, doc_id: str, dt: dict, ours: dict,
                       mode: str) -> dict:
    """Why the two sides part at `stage`, computed from what each side recorded for this document:
    who dropped it, with which reason, and what differed upstream (decoded HTML, extracted text)."""
    dropped_by = "datatrove" if dt_there != "passed" else "ours"
    reason = dt_there if dropped_by == "datatrove" else ours_there
    html_a, html_b = dt.get("html_sha1", {}).get(doc_id), ours.get("html_sha1", {}).get(doc_id)
    text_a, text_b = dt["texts"].get(doc_id), ours["texts"].get(doc_id)
    out = {"dropped_by": dropped_by, "stage": stage, "reason": reason}
    if stage == "warc_reader":
        out["category"] = "reader"
        if dropped_by == "datatrove":  # computed by datatrove_fineweb.reader_skip_reason (its own checks replayed)
            out["why"] = f"datatrove's WarcReader skipped it: {reason}; ours read it"
        else:
            out["why"] = f"our reader dropped it ({reason}); datatrove's WarcReader read it"
        return out
    if stage == "url_filter":
        out["category"] = "url_filter"
        out["why"] = (f"{dropped_by} dropped the URL ({reason})"
                      + (f": {URL_FILTER_NOTES[(dt_there, ours_there)]}" if (dt_there, ours_there) in URL_FILTER_NOTES
                         else ""))
        return out
    decoded_same = None if html_a is None or html_b is None else html_a == html_b
    out["decoded_html_identical"] = decoded_same
    out["extracted_text_identical"] = None if text_a is None or text_b is None else text_a == text_b
    if decoded_same is False:
        out["category"] = "decoding"
        out["why"] = (f"the readers decoded the page to different HTML (charset: datatrove "
                      f"{dt.get('charset', {}).get(doc_id)}); "
                      f"{dropped_by} dropped it at {stage} ({reason})")
    elif stage == "extraction":
        if reason in DECIDED_AT_EXTRACTION:
            out["category"] = "language_prefilter"
            out["why"] = ("our language prefilter (resiliparse's text) rejected it; datatrove's language filter "
                          "on trafilatura's text passed it")
        elif mode != "trafilatura" and dropped_by == "ours":
            out["category"] = "extractor_backend"
            out["why"] = f"{mode} gave {reason} where datatrove's trafilatura extracted text: not a filter decision"
        else:
            out["category"] = "extraction_failure"
            out["why"] = f"{dropped_by}'s extraction gave {reason} on the same HTML"
    elif out["extracted_text_identical"]:
        out["category"] = "filter"
        out["why"] = f"same extracted text; {dropped_by} dropped it at {stage} ({reason}), the other side passed it"
    elif mode != "trafilatura":
        out["category"] = "extractor_backend"
        out["why"] = f"{mode}'s text differs from trafilatura's; {dropped_by} dropped it at {stage} ({reason})"
    else:
        out["category"] = "extraction_differs"
        out["why"] = (f"trafilatura gave different text on the same HTML (deduplicate's per-process cache "
                      f"saw different pages before); {dropped_by} dropped it at {stage} ({reason})")
    if stage == "language":
        out["lang"] = {"datatrove": dt["lang"].get(doc_id), "ours": ours["lang"].get(doc_id)}
    return out


def compare(dt: dict, ours: dict, urls: dict, mode: str = "trafilatura") -> dict:
    ids = sorted(set(dt["decisions"]) | set(ours["decisions"]))
    confusion: dict[str, dict[str, int]] = {}
    per_doc, disagreements = [], []
    keep_agree = same = both_extracted = both_agree = 0
    causes: dict[str, int] = {}
    for doc_id in ids:
        a = dt["decisions"].get(doc_id, ["warc_reader", "skipped"])
        b = ours["decisions"].get(doc_id, ["warc_reader", "skipped"])
        confusion.setdefault(a[0], {}).setdefault(b[0], 0)
        confusion[a[0]][b[0]] += 1
        agree = (a[0] == "kept") == (b[0] == "kept")
        keep_agree += agree
        same += _label(a) == _label(b)
        if _extracted(a) and _extracted(b):
            both_extracted += 1
            both_agree += agree
        per_doc.append({"id": doc_id, "datatrove": _label(a), "ours": _label(b)})
        if agree:
            continue
        # the first stage where the two differ: the earlier drop; the other side passed it
        stage = STAGES[min(STAGES.index(a[0]), STAGES.index(b[0]))]
        dt_there = a[1] if a[0] == stage else "passed"
        ours_there = b[1] if b[0] == stage else "passed"
        cause = disagreement_cause(stage, dt_there, ours_there, doc_id, dt, ours, mode)
        key = f"{cause['category']}: {cause['dropped_by']} dropped at {stage} ({cause['reason']})"
        causes[key] = causes.get(key, 0) + 1
        disagreements.append({"id": doc_id, "url": urls.get(doc_id), "datatrove": _label(a), "ours": _label(b),
                              "cause": cause})
    n = len(ids)
    return {"documents": n, "keep_drop_agreement": round(keep_agree / n, 5) if n else None,
            "same_stage_and_reason": round(same / n, 5) if n else None,
            "both_extracted": both_extracted,
            "agreement_both_extracted": round(both_agree / both_extracted, 5) if both_extracted else None,
            "disagreements_total": len(disagreements),
            "disagreement_causes": dict(sorted(causes.items(), key=lambda kv: -kv[1])),
            "confusion_by_stage": confusion, "disagreements": disagreements, "per_document": per_doc}


def speed(side: dict) -> dict:
    return {"records": side["records"], "cpu_s": round(side["cpu_s"], 2), "wall_s": round(side["wall_s"], 2),
            "docs_per_s_per_core": round(side["records"] / side["cpu_s"], 1) if side["cpu_s"] else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=2000, help="pages of the generated crawl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--files", type=int, default=2, help="WARC files of the generated crawl")
    parser.add_argument("--warcs", nargs="+", type=Path, help="WARC files to use instead of a generated crawl")
    parser.add_argument("--realweb", nargs="?", const=REALWEB, type=Path, metavar="DIR",
                        help="use every page of ../shared/realweb (or DIR), wrapped into one WARC in a temporary "
                             "folder, instead of a generated crawl; --stress defaults to 0 then")
    parser.add_argument("--dump", default="CC-MAIN-2099-01", help="crawl name stored as `dump`")
    parser.add_argument("--modes", nargs="+", default=["trafilatura", "resiliparse"],
                        choices=["trafilatura", "resiliparse"], help="our extraction backends to compare")
    parser.add_argument("--config", type=Path, help="a config YAML for our side (default: fineweb_v1), e.g. one "
                                                    "with extraction.fast: true to measure that opt-in")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="datatrove virtualenv (created if missing)")
    parser.add_argument("--datatrove-timeout", type=float, default=60.0,
                        help="datatrove's per-page extraction timeout, wall-clock seconds (FineWeb: 0.1)")
    parser.add_argument("--stress", type=int, default=None,
                        help="also run both sides' filters (language .. fineweb_quality) on this many texts made "
                             "from the extracted pages by edits that push rules to their thresholds (0: skip; "
                             "default 2000, 0 with --realweb)")
    parser.add_argument("--per-document", action="store_true", help="include every document's decisions")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.stress is None:
        args.stress = 0 if args.realweb else 2000

    sys.path.insert(0, str(ROOT))
    python = ensure_venv(args.venv)
    env = datatrove_env(args.venv)
    with tempfile.TemporaryDirectory(prefix="vs-datatrove-") as tmp:
        work = Path(tmp)
        if args.realweb:
            from realweb_warc import write_warc
            try:
                pages = write_warc(work / "realweb_pages.warc.gz", args.realweb)
            except FileNotFoundError as e:
                print(f"vs_datatrove: {e}", file=sys.stderr)
                return 2
            print(f"vs_datatrove: {pages} realweb pages in one WARC", file=sys.stderr)
            warcs = [str(work / "realweb_pages.warc.gz")]
        elif args.warcs:
            warcs = [str(p.resolve()) for p in args.warcs]
        else:
            from pipelines.samplecrawl import generate_crawl
            info = generate_crawl(work / "crawl", pages=args.pages, seed=args.seed, crawl=args.dump,
                                  files=args.files)
            warcs = [str(p) for p in info.warc_paths]
        extra = build_blocklists(_datatrove_assets(python), work / "blocklists")
        dt = run_worker(python, "datatrove", {"warcs": warcs, "dump": args.dump, "extra": extra,
                                              "timeout": args.datatrove_timeout}, work, env)
        result = {"input": {"warcs": len(warcs), "realweb": str(args.realweb) if args.realweb else None,
                            "our_config": str(args.config) if args.config else "fineweb_v1",
                            "generated_pages": None if args.warcs or args.realweb else args.pages,
                            "seed": args.seed, "response_records": dt["records"]},
                  "datatrove": {"versions": dt["versions"], "speed": speed(dt),
                                "reader_replay_mismatch": dt["reader_replay_mismatch"]}, "modes": {}}
        for mode in args.modes:
            ours = run_worker(Path(sys.executable), "ours", {"warcs": warcs, "dump": args.dump, "mode": mode,
                                                             "config": str(args.config) if args.config else None,
                                                             "blocklists": str(work / "blocklists")}, work)
            cmp = compare(dt, ours, dt["universe"], mode)
            if not args.per_document:
                cmp.pop("per_document")
            s = speed(ours)
            ratio = (s["docs_per_s_per_core"] / result["datatrove"]["speed"]["docs_per_s_per_core"]
                     if s["docs_per_s_per_core"] and result["datatrove"]["speed"]["docs_per_s_per_core"] else None)
            result["modes"][mode] = {"speed": s, "speedup_vs_datatrove": round(ratio, 2) if ratio else None, **cmp}
            if mode == "trafilatura" and args.stress:
                base = [t for t in ours["texts"].values() if t]
                items = stress_texts(base, args.stress, args.seed)
                texts_file = work / "stress.jsonl"
                texts_file.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in items))
                spec = {"warcs": [], "dump": args.dump, "texts": str(texts_file)}
                dt_s = run_worker(python, "datatrove", {**spec, "extra": extra, "timeout": args.datatrove_timeout},
                                  work, env)
                ours_s = run_worker(Path(sys.executable), "ours", {**spec, "mode": mode,
                                                                   "blocklists": str(work / "blocklists")}, work)
                cmp = compare(dt_s, ours_s, {d["id"]: d["url"] for d in items})
                if not args.per_document:
                    cmp.pop("per_document")
                result["stress_filters"] = {"texts": len(items), "edits": sorted(STRESS_EDITS), **cmp}
    result["summary"] = summary(result)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text)
    print(json.dumps(result["summary"]))  # the last line: the headline figures alone
    return 0


def summary(result: dict) -> dict:
    """speedup_<mode> (our docs per CPU-second over datatrove's), agreement (keep/drop, on the
    documents both sides extract, trafilatura mode; per mode under agreement_<mode>)."""
    out = {"records": result["input"]["response_records"],
           "datatrove_docs_per_cpu_s": result["datatrove"]["speed"]["docs_per_s_per_core"]}
    for mode, m in result["modes"].items():
        out[f"speedup_{mode}"] = m["speedup_vs_datatrove"]
        out[f"docs_per_cpu_s_{mode}"] = m["speed"]["docs_per_s_per_core"]
        out[f"agreement_{mode}"] = m["agreement_both_extracted"]
        out[f"both_extracted_{mode}"] = m["both_extracted"]
        out[f"disagreements_{mode}"] = m["disagreements_total"]
    out["agreement"] = out.get("agreement_trafilatura", next(
        (v for k, v in out.items() if k.startswith("agreement_")), None))
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        spec_file, out_file = sys.argv[2:]
        Path(out_file).write_text(json.dumps(ours_worker(json.loads(Path(spec_file).read_text()))))
        sys.exit(0)
    sys.exit(main())
