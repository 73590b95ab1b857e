"""Standard benchmarks from local files: small files in the exact layouts (Hugging Face Parquet snapshots,
lm-evaluation-harness / original JSONL), an always-right scripted model scores 1.0 and a model with
no preference scores chance; HumanEval's tests run in the real python sandbox; a missing file is one
line naming where to put it."""
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine_fixtures import script_table, table_model, tiny_tok, tiny_tokenizer_dir  # noqa: F401  (fixtures)
from pipelines.errors import InputError
from test_evals import scripted, uniform, unique_tokens
from training.engine.engine import Engine
from training.evals.benchmarks import aggregate, build_benchmarks, find_files, load, missing_line
from training.evals.core import Sampling
from training.evals.suite import SuiteConfig, SuiteInputs, build_suite, run_suite

pytestmark = pytest.mark.usefixtures("one_torch_thread")
GOLD = " blue"
OTHERS = [" green", " red", " white"]


def _choices(k: int) -> tuple[list[str], int]:
    """Four choices with GOLD at position k % 4 (so the label mapping is exercised)."""
    gold = k % 4
    rest = iter(OTHERS)
    return [GOLD if i == gold else next(rest) for i in range(4)], gold


def _parquet(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture
def bench_dir(tmp_path):
    root = tmp_path / "benchmarks"
    arc = []
    for k in range(6):
        texts, gold = _choices(k)
        labels = ["A", "B", "C", "D"] if k % 2 else ["1", "2", "3", "4"]   # ARC uses both
        arc.append({"id": f"Mercury_{k}", "question": f"Which colour is item {k}?",
                    "choices": {"text": [t.strip() for t in texts], "label": labels}, "answerKey": labels[gold]})
    _parquet(root / "ARC-Easy" / "test-00000-of-00001.parquet", arc)                   # HF snapshot layout
    _parquet(root / "ARC-Easy" / "train-00000-of-00001.parquet", arc[:1])               # not the split scored
    (root / "arc_challenge.jsonl").write_text("\n".join(json.dumps(r) for r in arc) + "\n")
    hs = []
    for k in range(6):
        texts, gold = _choices(k)
        hs.append({"ind": k, "activity_label": "Painting", "ctx_a": f"A man [title] paints item {k}.",
                   "ctx_b": "the colour is", "ctx": "", "endings": [t.strip() for t in texts],
                   "source_id": "x", "split": "val", "split_type": "indomain", "label": str(gold)})
    (root / "hellaswag").mkdir()
    (root / "hellaswag" / "hellaswag_val.jsonl").write_text("\n".join(json.dumps(r) for r in hs) + "\n")
    _parquet(root / "all" / "test-00000-of-00001.parquet",
             [{"question": f"What is item {k}?", "subject": "high_school_physics",
               "choices": ["red", "blue", "green", "white"], "answer": 1} for k in range(6)])
    _parquet(root / "main" / "test-00000-of-00001.parquet",
             [{"question": f"Tom has {40 + k} apples and eats {k - 2}. How many are left?",
               "answer": f"{40 + k} - {k - 2} = 42\n#### 42"} for k in range(3, 6)])
    with gzip.open(root / "humaneval.jsonl.gz", "wt") as f:   # the original HumanEval.jsonl.gz
        for k in range(3):
            f.write(json.dumps({"task_id": f"HumanEval/{k}", "entry_point": f"answer_{k}",
                                "prompt": f"def answer_{k}(x):\n    \"\"\"Return the answer.\"\"\"\n",
                                "canonical_solution": "    return 42\n",
                                "test": f"def check(candidate):\n    assert candidate({k}) == 42\n"}) + "\n")
    return root


def _knows(tok, context: str, gold: str) -> Engine:
    """A model that, after the context's last token, says `gold`."""
    return Engine(table_model(tok, script_table([tok.encode(context)[-1], *tok.encode(gold)])), tok, tools={})


@pytest.mark.parametrize("name,gold", [("arc_easy", GOLD), ("arc_challenge", GOLD), ("hellaswag", GOLD),
                                       ("mmlu", " B")])
def test_multiple_choice_benchmarks_scripted_and_uniform(tiny_tok, bench_dir, name, gold):
    [task], notes = build_benchmarks(bench_dir, [name], "base", None, Sampling())
    assert not notes and len(task.items) == 6
    ends = {tiny_tok.encode(it.context)[-1] for it in task.items}
    assert len(ends) == 1, "every context must end in the same token for a table model"
    right = task.run(_knows(tiny_tok, task.items[0].context, gold), 0)
    assert right.score == 1.0 and right.metrics["accuracy"] == 1.0
    chance = task.run(uniform(tiny_tok), 0)
    assert chance.score == pytest.approx(0.0, abs=1e-12) and chance.metrics["accuracy"] == pytest.approx(0.25)


def test_prompts_are_the_harness_s(bench_dir):
    arc = load("arc_easy", find_files(bench_dir, "arc_easy"))
    assert arc[1].context == "Question: Which colour is item 1?\nAnswer:" and arc[1].choices[arc[1].gold] == GOLD
    hs = load("hellaswag", find_files(bench_dir, "hellaswag"))
    assert hs[0].context == "Painting: A man. paints item 0. The colour is"   # " [title]" -> ". ", ctx_b capitalised
    mmlu = load("mmlu", find_files(bench_dir, "mmlu"))
    assert mmlu[0].context.startswith("The following are multiple choice questions (with answers) about high "
                                      "school physics.\n\nWhat is item 0?\nA. red\nB. blue")
    assert mmlu[0].context.endswith("\nD. white\nAnswer:") and mmlu[0].choices == [" A", " B", " C", " D"]


def test_gsm8k_by_final_number(tiny_tok, bench_dir):
    [task], _ = build_benchmarks(bench_dir, ["gsm8k"], "chat", None, Sampling(2, 0.7, max_tokens=12))
    assert [it.expected for it in task.items] == ["42"] * 3
    assert task.run(scripted(tiny_tok, "The answer is 42."), 0).score == 1.0
    assert task.run(scripted(tiny_tok, "The answer is 41."), 0).score == 0.0
    assert task.run(uniform(tiny_tok), 0).score == 0.0   # chance on a free-form number


def test_humaneval_runs_the_tests_in_the_sandbox(tiny_tok, bench_dir):
    [task], _ = build_benchmarks(bench_dir, ["humaneval"], "chat", None, Sampling(1, 0.0, max_tokens=16))
    assert unique_tokens(tiny_tok, "    return 42")
    right = task.run(scripted(tiny_tok, "    return 42"), 0)
    assert right.score == 1.0, right.records
    wrong = task.run(scripted(tiny_tok, "    return 41"), 0)
    assert wrong.score == 0.0 and "AssertionError" in wrong.records[0]["extracted"][0]
    assert task.run(uniform(tiny_tok), 0).score == 0.0


def test_suite_runs_them_with_a_core_aggregate_and_names_missing_files(tiny_tok, bench_dir, tmp_path):
    cfg = SuiteConfig(mc_items=0, benchmarks_dir=str(bench_dir), benchmarks=["arc_easy", "mmlu"])
    tasks, notes = build_suite(cfg, SuiteInputs(), "base")
    assert [t.name for t in tasks] == ["arc_easy", "mmlu"] and not [n for n in notes if "arc" in n]
    results = run_suite(uniform(tiny_tok), tasks, 0)
    core = results[-1]
    assert core.task == "core_benchmarks" and core.n == 2 and core.score == pytest.approx(0.0, abs=1e-12)
    assert aggregate([]) is None
    empty = tmp_path / "none"
    empty.mkdir()
    tasks, notes = build_benchmarks(empty, ["mmlu", "humaneval"], "chat", None, Sampling())
    assert tasks == [] and notes == [missing_line(empty, "mmlu"), missing_line(empty, "humaneval")]
    assert notes[0] == (f"mmlu: no file at {empty}/mmlu.jsonl, .parquet or {empty}/mmlu/: put the test split of "
                        "cais/mmlu (config all) there (JSONL or Parquet, as the Hugging Face dataset or "
                        "lm-evaluation-harness has it)")
    with pytest.raises(InputError, match="unknown mmlu_pro"):
        build_benchmarks(empty, ["mmlu_pro"], "chat", None, Sampling())


def test_a_bad_row_is_one_line(tmp_path):
    (tmp_path / "arc_easy.jsonl").write_text(json.dumps({"question": "q", "choices": {"text": ["a", "b"],
                                                                                        "label": ["A", "B"]},
                                                         "answerKey": "E"}) + "\n")
    with pytest.raises(InputError, match=r"arc_easy.jsonl:1: choices/answerKey: answerKey 'E'"):
        load("arc_easy", find_files(tmp_path, "arc_easy"))
