"""The post-training data generators (training/conversations/): every conversation they write passes
validation, exact answers are re-checked by executing them (python tool calls re-run in the real
sandbox, arithmetic re-evaluated), held-out questions never reach training, the knowledge-probe
pipeline on a real engine yields "knows" and "does not know", the mixture is stable."""
import ast
import json
import operator
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine_fixtures import script_table, table_model, tiny_export, tiny_tok, tiny_tokenizer_dir  # noqa: F401
from pipelines.document import Document
from pipelines.errors import ConfigError, InputError
from training.conversations import identity as ident
from training.conversations.config import IdentityConfig, MixtureConfig, ProbesConfig, load_data_config
from training.conversations.dataset import (check_trainable, read_conversations, read_table_dataset,
                                            write_conversations)
from training.conversations.mixture import mix, split_of, write_mixture
from training.conversations.probes import (Probe, classify, find_probes, outcome_rates, probe_conversations,
                                           rule_judge, run_probes, search_query)
from training.conversations.reasoning import draw_problems, reasoning_conversations
from training.conversations.render import ConversationError
from training.conversations.user import user_conversations
from training.engine.python_tool import python_tool


def _texts(messages, role):
    out = []
    for m in messages:
        if m["role"] == role:
            c = m["content"]
            out.append(c if isinstance(c, str) else "".join(p.get("text", "") for p in c))
    return out


def _roundtrip(rows, tmp_path, name):
    stats = write_conversations(rows, tmp_path / name)
    back = list(read_conversations(tmp_path / name))
    assert stats["rows"] == len(rows) == len(back)
    assert [r["id"] for r in back] == [r["id"] for r in rows] and back[0]["messages"] == rows[0]["messages"]
    for r in back:
        check_trainable(r["messages"])
    return back


# ---- dataset -----------------------------------------------------------------------------------

def test_dataset_parts_roundtrip_and_a_bad_row_fails_the_write(tmp_path):
    rows = [{"id": f"c{i}", "source": "t", "messages": [{"role": "user", "content": f"q{i}"},
                                                         {"role": "assistant", "content": f"a{i}"}]}
            for i in range(5)]
    write_conversations(rows, tmp_path / "ds", rows_per_part=2)
    assert sorted(p.name for p in (tmp_path / "ds").glob("*.parquet")) == \
        ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [r["messages"][1]["content"] for r in read_conversations(tmp_path / "ds")] == [f"a{i}" for i in range(5)]
    bad = rows[:1] + [{"id": "c9", "source": "t", "messages": [{"role": "robot", "content": "x"}]}]
    with pytest.raises(ConversationError, match=r"t:c9\.messages\[0\]\.role"):
        write_conversations(bad, tmp_path / "ds")
    assert len(list(read_conversations(tmp_path / "ds"))) == 5   # the failed write left the old dataset
    with pytest.raises(InputError, match="no conversations dataset"):
        list(read_conversations(tmp_path / "missing"))


# ---- identity ----------------------------------------------------------------------------------

def test_identity_conversations_valid_deterministic_and_configured(tmp_path):
    who = ident.make_identity(IdentityConfig(name="Ada", creator="the lake team"), "CC-MAIN-2024-10")
    assert who.cutoff == "March 2024" and "CC-MAIN-2024-10" in who.trained_on
    rows = ident.identity_conversations(who, 300, seed=1)
    assert len(rows) == 300 and len({r["id"] for r in rows}) == 300
    assert rows == ident.identity_conversations(who, 300, seed=1)
    assert rows != ident.identity_conversations(who, 300, seed=2)
    _roundtrip(rows, tmp_path, "identity")
    answers = [a for r in rows for a in _texts(r["messages"], "assistant")]
    assert sum("Ada" in a for a in answers) > len(answers) / 3
    assert any("March 2024" in a for a in answers) and any("the lake team" in a for a in answers)
    assert not any("{" in a for a in answers)   # every template placeholder filled


def test_heldout_identity_paraphrases_never_in_training():
    ident.check_heldout_disjoint()
    who = ident.make_identity(IdentityConfig(), "CC-MAIN-2099-01")
    asked = [ident.normalize(q) for seed in range(3)
             for r in ident.identity_conversations(who, 400, seed=seed) for q in _texts(r["messages"], "user")]
    heldout = [ident.normalize(q) for qs in ident.identity_questions("heldout").values() for q in qs]
    assert heldout and not [h for h in heldout for q in asked if h in q]
    held_rows = ident.identity_conversations(who, 40, split="heldout")
    assert {ident.normalize(q) for r in held_rows for q in _texts(r["messages"], "user")} <= \
        set(heldout) | {ident.normalize(g) for g in ident.GREETINGS}


def test_identity_under_system_prompts_of_its_split():
    who = ident.make_identity(IdentityConfig(name="Ada"), "CC-MAIN-2024-10")
    rows = ident.identity_conversations(who, 300, seed=0)
    systems = [r["messages"][0]["content"] for r in rows if r["messages"][0]["role"] == "system"]
    assert 0.2 * len(rows) <= len(systems) <= 0.4 * len(rows)
    assert set(systems) <= set(ident.SYSTEM_PROMPTS) and len(set(systems)) >= 10
    assert not set(ident.SYSTEM_HELDOUT) & set(ident.SYSTEM_PROMPTS)
    under = [r for r in rows if r["messages"][0]["role"] == "system"]
    assert sum("Ada" in a for r in under for a in _texts(r["messages"], "assistant")) > len(under) / 3
    held = ident.identity_conversations(who, 40, split="heldout", system_fraction=1.0)
    assert {r["messages"][0]["content"] for r in held} <= set(ident.SYSTEM_HELDOUT)
    assert not any(r["messages"][0]["role"] == "system" for r in ident.identity_conversations(who, 50, system_fraction=0))


# ---- general -----------------------------------------------------------------------------------

def test_general_conversations_refuse_on_invented_entities_absent_from_the_corpus(tmp_path):
    from training.conversations import general
    from training.evals.knowledge import is_refusal
    who = ident.make_identity(IdentityConfig(name="Ada"), "CC-MAIN-2024-10")
    rows = general.general_conversations(who, 200, seed=0)
    assert len(rows) == 200 and rows == general.general_conversations(who, 200, seed=0)
    _roundtrip(rows, tmp_path, "general")
    entities = {x for _, x, _ in general.unknown_questions(100, seed=0)}
    unknown = [r for r in rows if any(x in _texts(r["messages"], "user")[0] for x in entities)]
    assert len(unknown) == 100
    assert all(is_refusal(_texts(r["messages"], "assistant")[0]) for r in unknown)
    assert len({_texts(r["messages"], "assistant")[0].split(" ")[1] for r in unknown}) >= 3   # several phrasings
    # held-out entities never in training, whatever the seed; corpus words are never used
    train = {x for seed in range(3) for _, x, _ in general.unknown_questions(300, seed=seed)}
    held = {x for _, x, _ in general.unknown_questions(100, seed=0, split="heldout")}
    assert len(held) == 100 and not train & held
    words = {w.lower() for x in list(train)[:40] for w in x.split()}
    assert not {w.lower() for _, x, _ in general.unknown_questions(300, seed=0, corpus_words=words)
                for w in x.split()} & words
    others = [r for r in rows if r not in unknown]
    assert others and not any("{" in a for r in others for a in _texts(r["messages"], "assistant"))


# ---- reasoning ---------------------------------------------------------------------------------

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv}


def _evaluate(expr: str):
    """Integer arithmetic (+ - * /) by walking the AST: the test's own evaluator, not the generator's."""
    def ev(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise ValueError(f"not plain arithmetic: {expr!r}")
    return ev(ast.parse(expr, mode="eval").body)


def _check_steps(question: str, text: str) -> None:
    """Every 'label: expr = value' line is exact, 'Answer: N' is the last step's value, the steps use
    the question's numbers, and a bare-arithmetic question evaluates to the answer."""
    lines = text.splitlines()
    values = []
    for line in lines[1:-1]:
        if "=" in line:
            m = re.search(r":\s*([\d\s+\-*/]+?)\s*=\s*(-?\d+)$", line)
            assert m, line
            assert _evaluate(m[1]) == int(m[2]), line
            values.append(int(m[2]))
    answer = int(re.fullmatch(r"Answer: (-?\d+)", lines[-1])[1])
    assert values and answer == values[-1]
    steps = " ".join(lines[1:-1])
    assert all(n in re.findall(r"\d+", steps) for n in re.findall(r"\d+", question)), (question, text)
    m = re.search(r"(?:What is|Calculate|Work out|Compute|How much is) ([\d\s+\-*/]+?)(?:\?| step|\.)", question)
    if m and any(op in m[1] for op in "+-*/"):
        assert _evaluate(m[1]) == answer, question
    for pattern, fn in [(r"Multiply (\d+) by (\d+)", operator.mul), (r"product of (\d+) and (\d+)", operator.mul),
                        (r"(\d+) times (\d+)", operator.mul), (r"Divide (\d+) by (\d+)", operator.floordiv),
                        (r"(\d+) divided by (\d+)", operator.floordiv)]:
        if (m := re.search(pattern, question)):
            assert fn(int(m[1]), int(m[2])) == answer, question


def test_reasoning_answers_are_exact_and_tool_outputs_real(tmp_path):
    rows = reasoning_conversations(24, seed=3, tool_fraction=0.5)
    assert len(rows) == 24
    back = _roundtrip(rows, tmp_path, "reasoning")
    letters = 0
    for r in back:
        question = r["messages"][0]["content"]
        content = r["messages"][1]["content"]
        # every answer is one python call (arithmetic too), then a sentence from its real output
        assert [p["type"] for p in content] == ["tool_call", "tool_output", "text"] and content[0]["name"] == "python"
        code = content[0]["arguments"]
        rerun = python_tool(code)           # the same sandbox the engine runs
        assert rerun == content[1]["text"], (code, rerun)
        assert rerun in content[2]["text"]
        quoted = re.findall(r"'([a-z]+)'", code)
        if quoted:
            letters += 1
            assert quoted[-1] in question   # the word: last quoted in every shape (not "r" or "aeiou")
            continue
        expr = re.fullmatch(r"print\((.+)\)", code)[1]
        assert str(_evaluate(expr)) == rerun
        if "(" in question:
            assert expr in question, (question, code)            # bare expressions are copied verbatim
        extra = [n for n in re.findall(r"\d+", expr) if n not in re.findall(r"\d+", question)]
        assert set(extra) <= {"2", "4"}, (question, code)   # legs per animal, else the question's numbers
    assert 6 <= letters <= 18
    steps = reasoning_conversations(24, seed=3, tool_fraction=0.0, arithmetic="steps")
    for r in _roundtrip(steps, tmp_path, "steps"):
        _check_steps(r["messages"][0]["content"], r["messages"][1]["content"])
        assert len(r["messages"][1]["content"].splitlines()) >= 3   # the work spread over several lines


CODE_SHAPES = {   # one code shape per family: what a 4M-parameter model must copy
    "count": r"print\('[a-z]+'\.count\('[a-z]'\)\)", "reverse": r"print\('[a-z]+'\[::-1\]\)",
    "nth": r"print\('[a-z]+'\[\d+\]\)", "length": r"print\(len\('[a-z]+'\)\)",
    "spell": r"print\('-'\.join\('[a-z]+'\)\)", "vowels": r"print\(sum\(c in 'aeiou' for c in '[a-z]+'\)\)",
    "expr": r"print\([\d +*()-]+\)", "mul": r"print\(\d+ \* \d+\)", "chain": r"print\([\d +-]+\)",
    "div": r"print\(\d+ // \d+\)", "word": r"print\([\d +*-]+\)"}


def test_every_family_has_one_code_shape_and_many_phrasings():
    from training.conversations.reasoning import tool_code
    problems = draw_problems(3000, seed=0, tool_fraction=0.5)
    families: dict[str, set] = {}
    for p in problems:
        family = p.key.split(":")[0]
        code = tool_code(p)
        assert re.fullmatch(CODE_SHAPES[family], code), (family, code)
        ast.parse(code)
        # the phrasing with the operands masked: how many distinct wordings the family has
        families.setdefault(family, set()).add(re.sub(r"'?\b[a-z]+\b'?|\d+", "X", p.question.lower())
                                               if family not in ("word",) else p.question.split()[0])
    assert set(families) == set(CODE_SHAPES)
    assert len(families["expr"]) >= 15 and len(families["count"]) >= 8 and len(families["reverse"]) >= 5


def test_reasoning_heldout_problems_never_in_training():
    train = {p.key for seed in range(3) for p in draw_problems(400, seed=seed, split="train")}
    heldout = draw_problems(200, seed=0, split="heldout")
    assert len(heldout) == 200 and not train & {p.key for p in heldout}
    train_q = {p.question for seed in range(3) for p in draw_problems(400, seed=seed, split="train")}
    assert not train_q & {p.question for p in heldout}
    assert [p.key for p in draw_problems(50, seed=0)] == [p.key for p in draw_problems(50, seed=0)]
    # the letter tasks use the words they are given (corpus words)
    assert all("zebra" in p.question for p in draw_problems(20, tool_fraction=1.0, words=["zebra"]))


# ---- user files --------------------------------------------------------------------------------

GOOD = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


def test_user_files_good_rows_kept_bad_rows_aside_with_reasons(tmp_path):
    lines = [json.dumps({"messages": GOOD}),                                                 # 1 kept
             "",                                                                            # not a row
             "{not json",                                                                   # 3 rejected
             json.dumps({"messages": [{"role": "tool", "content": "x"}, *GOOD]}),           # 4 rejected
             json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),    # 5 rejected
             json.dumps({"messages": GOOD}),                                                # 6 duplicate
             json.dumps({"messages": [{"role": "user", "content": "Q"},
                                      {"role": "assistant", "content": "  "}]}),            # 7 rejected
             json.dumps({"text": "no messages"}),                                           # 8 rejected
             json.dumps({"conversations": [{"from": "human", "value": "2+2?"},
                                           {"from": "gpt", "value": "4"}]}),                # 9 kept (ShareGPT)
             json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": [{"type": "text", "text": "Name?"}]},
                                      {"role": "assistant", "content": "Ada.", "weight": 1}]})]  # 10 kept
    (tmp_path / "openai.jsonl").write_text("\n".join(lines) + "\n")
    smol = pa.table({"messages": [[{"role": "user", "content": "Tea?"}, {"role": "assistant", "content": "Yes."}],
                                  [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "bye"},
                                   {"role": "system", "content": "late system"}]],
                     "source": ["smol-a", "smol-b"]})
    pq.write_table(smol, tmp_path / "smoltalk.parquet")
    pq.write_table(pa.table({"messages": [json.dumps(GOOD[:1] + [{"role": "assistant", "content": "Hey"}])]}),
                   tmp_path / "ultra.parquet")
    kept, rejected, stats = user_conversations([str(tmp_path / "openai.jsonl"), str(tmp_path / "*.parquet")])
    assert stats["rows"] == 12 == stats["kept"] + stats["rejected"] == len(kept) + len(rejected)
    assert len(kept) == 5
    where = {(Path(r["file"]).name, r["line"]): r["reason"] for r in rejected}
    assert set(where) == {("openai.jsonl", n) for n in (3, 4, 5, 6, 7, 8)} | {("smoltalk.parquet", 2)}
    assert where[("openai.jsonl", 3)].startswith("not valid JSON")
    assert "messages[0].role: 'tool' is not one of" in where[("openai.jsonl", 4)]
    assert "no assistant message" in where[("openai.jsonl", 5)]
    assert where[("openai.jsonl", 6)] == "duplicate of openai.jsonl:1"
    assert "messages[1].content: empty assistant message" in where[("openai.jsonl", 7)]
    assert "no `messages` (OpenAI) or `conversations` (ShareGPT)" in where[("openai.jsonl", 8)]
    assert "messages[2].role: a system message may only come first" in where[("smoltalk.parquet", 2)]
    assert json.loads(next(r["row"] for r in rejected if r["line"] == 8)) == {"text": "no messages"}
    assert stats["reasons"]["duplicate"] == 1 and sum(stats["reasons"].values()) == 7
    assert {r["source"] for r in kept} == {"user:openai.jsonl", "user:smoltalk.parquet", "user:ultra.parquet"}
    sharegpt = next(r for r in kept if r["messages"][0]["content"] == "2+2?")
    assert [m["role"] for m in sharegpt["messages"]] == ["user", "assistant"]
    extra = next(r for r in kept if r["messages"][0]["role"] == "system")
    assert extra["messages"][2] == {"role": "assistant", "content": "Ada."}   # only role and content kept
    with pytest.raises(InputError, match="nope.jsonl does not exist"):
        user_conversations([str(tmp_path / "nope.jsonl")])
    pq.write_table(pa.table({"prompt": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="no `messages` column"):
        user_conversations([str(tmp_path / "bad.parquet")])


# ---- knowledge probes --------------------------------------------------------------------------

CORPUS = [
    ("d1", "https://www.bridges.example/wye", "The old stone bridge over the river Wye was finished in 1850 after "
     "ten years of work. The lighthouse keeper's cottage on the cliff was rebuilt in 1923 by the county council."),
    ("d2", "https://library.example/about", "The town library on the main square now holds 12,500 books and maps. "
     "The first mayor of the little harbour town was Margaret Ellison, a ship owner."),
    ("d3", "https://festival.example/", "The annual harvest festival in the valley draws 3,400 visitors each autumn. "
     "It is short."),
]


def _docs():
    return [Document(text, doc_id, {"url": url}) for doc_id, url, text in CORPUS]


def _probe(kind, answer):
    return Probe("p", "d", "", "x", "s", kind, answer, "prefix", "q")


def test_rule_judge_on_known_right_and_wrong_answers():
    year, num, name = _probe("year", "1850"), _probe("number", "12,500"), _probe("name", "Margaret Ellison")
    assert rule_judge(year, " 1850 after ten years") and rule_judge(year, "It was 1850.")
    assert not rule_judge(year, " 1851") and not rule_judge(year, "in the year 18500") and not rule_judge(year, "")
    assert not rule_judge(year, " 1923, not 1850")          # the first number is the answer given
    assert rule_judge(num, "12500 books") and rule_judge(num, " 12,500.") and not rule_judge(num, "12 500")
    assert rule_judge(name, " margaret ellison, a ship owner") and rule_judge(name, "The Margaret Ellison.")
    assert not rule_judge(name, " Margaret Elliot") and not rule_judge(name, "Ellison")
    assert classify([True, True]) == "knows" and classify([False, False]) == "does_not_know"
    assert classify([True, False]) == "mixed" and classify([True, False], knows_at=0.5) == "knows"


def test_find_probes_builds_cloze_questions_with_known_answers():
    probes = find_probes(_docs(), per_doc=5)
    got = {p.answer: p for p in probes}
    assert set(got) == {"1850", "1923", "12,500", "Margaret Ellison", "3,400"}
    p = got["1850"]
    assert p.kind == "year" and p.prefix == "The old stone bridge over the river Wye was finished in"
    cloze = "The old stone bridge over the river Wye was finished in ____ after ten years of work."
    assert cloze in p.question and "bridges.example" in p.question and " year" in p.question
    assert len({q.question.split()[0] for q in find_probes(_docs(), per_doc=5)}) >= 2   # several wordings
    assert got["Margaret Ellison"].kind == "name" and got["12,500"].kind == "number"
    assert "1850" not in p.question and p.id == find_probes(_docs(), per_doc=5)[probes.index(p)].id
    assert len(find_probes(_docs(), max_probes=2, per_doc=5)) == 2


@pytest.fixture
def search_index(tmp_path):
    from training.engine.search import SearchIndex, build_index
    build_index(_docs(), tmp_path / "index.sqlite")
    return SearchIndex(tmp_path / "index.sqlite")


def test_probe_pipeline_knows_and_does_not_know_on_a_real_engine(tiny_tok, tiny_export, search_index):
    from training.engine.engine import Engine
    from training.engine.search import search_tool
    probes = find_probes(_docs(), per_doc=5)
    cfg = ProbesConfig(samples=3, max_tokens=8, temperature=0.7)
    # A real GPT that has "memorized" one fact: after " in" it writes " 1850" and stops (engine_fixtures'
    # table model). So it knows when the bridge was finished and wrongly says 1850 for the cottage.
    bridge = next(p for p in probes if p.answer == "1850")
    last = tiny_tok.encode(bridge.prefix)[-1]
    script = [last, *tiny_tok.encode(" 1850"), tiny_tok.special("im_end")]
    memorized = Engine(table_model(tiny_tok, script_table(script)), tiny_tok, tools={})
    rows = run_probes(memorized, probes, cfg)
    outcome = {r["answer"]: r["outcome"] for r in rows}
    assert outcome["1850"] == "knows" and outcome["1923"] == "does_not_know"
    assert next(r for r in rows if r["answer"] == "1923")["samples"] == [" 1850"] * 3
    assert set(outcome.values()) == {"knows", "does_not_know"}
    assert rows == run_probes(memorized, probes, cfg)          # seeded: the same samples again

    # The random tiny base model knows none of it.
    random_rows = run_probes(Engine.load(tiny_export, tools={}), probes, cfg)
    assert {r["outcome"] for r in random_rows} == {"does_not_know"}
    assert all(len(r["samples"]) == 3 and len(set(r["samples"])) >= 2 for r in random_rows)  # distinct seeds
    rates = outcome_rates(random_rows)
    assert rates["does_not_know_rate"] == 1.0 and rates["probes"] == len(probes)

    search = search_tool(search_index, k=2)
    convs, counts = probe_conversations(rows, search)
    dnk = sum(o == "does_not_know" for o in outcome.values())
    assert counts == {"probe_known": 1, "probe_idk": dnk, "probe_idk_search": dnk, "mixed_skipped": 0}
    for c in convs:
        check_trainable(c["messages"])
        assert c["messages"][0]["content"] in {r["question"] for r in rows}
    known = next(c for c in convs if c["source"] == "probe_known")
    assert "1850" in known["messages"][1]["content"]
    idk = [c["messages"][1]["content"] for c in convs if c["source"] == "probe_idk"]
    assert all("don't know" in t or "not sure" in t for t in idk) and len(set(idk)) > 1      # several phrasings
    answered = 0
    for c in (c for c in convs if c["source"] == "probe_idk_search"):
        text, call, output, final = c["messages"][1]["content"]
        assert call["type"] == "tool_call" and call["name"] == "search"
        assert output["text"] == search(call["arguments"])    # the real search output, re-run
        row = next(r for r in rows if r["question"] == c["messages"][0]["content"])
        assert call["arguments"] == search_query(row) and row["answer"] not in call["arguments"]
        if final["text"].startswith("According to"):
            answered += 1
            assert row["answer"] in final["text"] and row["answer"] in output["text"]
            assert final["text"].split()[2].rstrip(",") in output["text"]      # the URL it cites
        else:
            assert "don't know" in final["text"]
    assert answered >= 2


def test_a_pluggable_judge_replaces_the_rule_judge(tiny_export):
    from training.engine.engine import Engine
    probes = find_probes(_docs(), per_doc=5)[:2]
    rows = run_probes(Engine.load(tiny_export, tools={}), probes, ProbesConfig(samples=2, max_tokens=4),
                      judge=lambda probe, sample: isinstance(sample, str))
    assert [r["outcome"] for r in rows] == ["knows", "knows"]


# ---- mixture -----------------------------------------------------------------------------------

def _rows(source, n):
    return [{"id": f"{source}-{i}", "source": source,
             "messages": json.dumps([{"role": "user", "content": f"{source} {i}"},
                                     {"role": "assistant", "content": "ok"}])} for i in range(n)]


def test_mixture_weights_repeat_and_split_are_stable(tmp_path):
    sources = {"identity_conversations": _rows("identity", 40), "reasoning_conversations": _rows("reasoning", 400),
               "idk_conversations": _rows("idk", 10), "user_conversations": []}
    weights = {"identity_conversations": 1, "reasoning_conversations": 2, "idk_conversations": 1,
               "user_conversations": 1}
    train, val, stats = mix(sources, weights, rows=800, val_fraction=0.1, seed=0)
    assert stats["left_out"] == ["user_conversations"]         # no rows: its weight is redistributed
    per = {n: s["train_rows"] for n, s in stats["sources"].items()}
    assert per == {"identity_conversations": 200, "reasoning_conversations": 400, "idk_conversations": 200}
    assert len(train) == 800 and len({r["id"] for r in train}) == 800
    idk = [r["id"] for r in train if r["source"] == "idk"]
    originals = {i.split("#")[0] for i in idk}
    assert len(originals) == stats["sources"]["idk_conversations"]["available_train"]
    assert all(sum(i.split("#")[0] == o for i in idk) in (200 // len(originals), 200 // len(originals) + 1)
               for o in originals)   # repeated evenly, not drawn at random
    # split: by the original id only, copies on the same side, val rows once
    val_ids = {r["id"] for r in val}
    assert not val_ids & {r["id"].split("#")[0] for r in train}
    assert len(val_ids) == len(val) and all(split_of(i, 0.1) == "val" for i in val_ids)
    assert 20 <= len(val) <= 70
    # stable: same inputs in another order -> same mixture; other weights -> same split
    shuffled = {n: list(reversed(rs)) for n, rs in reversed(list(sources.items()))}
    assert mix(shuffled, weights, rows=800, val_fraction=0.1, seed=0) == (train, val, stats)
    _, val2, _ = mix(sources, {"identity_conversations": 5, "reasoning_conversations": 1}, val_fraction=0.1)
    assert {r["id"] for r in val2} == {r["id"] for r in val if not r["id"].startswith("idk")}
    assert [r["id"] for r in mix(sources, weights, rows=800, val_fraction=0.1, seed=1)[0]] != [r["id"] for r in train]
    # on disk: train/ and val/ with the split column
    for name, rs in sources.items():
        write_conversations(rs, tmp_path / name)
    stats = write_mixture({n: tmp_path / n for n in sources}, tmp_path / "mix",
                          MixtureConfig(weights=weights, rows=800, val_fraction=0.1))
    on_disk = list(read_conversations(tmp_path / "mix" / "train"))
    assert [r["id"] for r in on_disk] == [r["id"] for r in train] and {r["split"] for r in on_disk} == {"train"}
    assert {r["split"] for r in read_conversations(tmp_path / "mix" / "val")} == {"val"}
    with pytest.raises(InputError, match="no training rows"):
        write_mixture({"user_conversations": tmp_path / "nothing"}, tmp_path / "mix2",
                      MixtureConfig(weights={"user_conversations": 1}))


def test_mixture_pretrain_text_is_train_split_and_its_windows_the_configured_share(tmp_path, tiny_tok):
    from pipelines.shards import split_of as shard_split
    from training.sft import pack_conversations, pretrain_windows
    rows = reasoning_conversations(20, seed=0, run_python=lambda code: "7")
    write_conversations(rows, tmp_path / "reasoning")
    docs = [Document(id=f"doc-{i}", text=f"Page {i} says the river is {i} miles long. " * 4, metadata={})
            for i in range(400)]
    cfg = MixtureConfig(weights={"reasoning_conversations": 1}, val_fraction=0.0, pretrain_fraction=0.25,
                        pretrain_val_fraction=0.5)
    stats = write_mixture({"reasoning_conversations": tmp_path / "reasoning"}, tmp_path / "mix", cfg, iter(docs))
    text = read_table_dataset(tmp_path / "mix" / "pretrain")
    assert stats["pretrain"]["documents"] == len(text) > 0
    assert all(shard_split(r["id"], 0.5) == "train" for r in text)      # the val shards stay held out
    assert len(text) >= 4 and int(text[-1]["id"].split("-")[1]) + 1 > len(text)   # val documents skipped
    conv = pack_conversations(tiny_tok, list(read_conversations(tmp_path / "mix" / "train")), 128)
    windows = pretrain_windows(tiny_tok, tmp_path / "mix", 128, len(conv))
    assert len(windows) == round(0.25 / 0.75 * len(conv))
    assert windows.tokens[0, 0] == tiny_tok.bos_id
    # every token is a target but the document separator: SFT never teaches ending a reply with it
    assert (windows.trained == (windows.tokens != tiny_tok.bos_id)).all() and not windows.trained[0, 0]
    assert pretrain_windows(tiny_tok, tmp_path / "reasoning", 128, len(conv)) is None   # none: no windows
    with pytest.raises(InputError, match="no clean text"):
        write_mixture({"reasoning_conversations": tmp_path / "reasoning"}, tmp_path / "mix3", cfg)


def test_data_config_defaults_and_mistakes(tmp_path):
    cfg = load_data_config()
    assert cfg.identity.name == "crawl2chat" and cfg.probes.samples >= 2 and cfg.mixture.val_fraction > 0
    (tmp_path / "sft.yaml").write_text("train: {steps: 3}\ndata:\n  identity: {nmae: Ada}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'data.identity.nmae' \(did you mean 'name'\?\)"):
        load_data_config(tmp_path / "sft.yaml")
    (tmp_path / "sft.yaml").write_text("data:\n  mixture: {weights: {identiy_conversations: 1}}\n")
    with pytest.raises(ConfigError, match="unknown source"):
        load_data_config(tmp_path / "sft.yaml")
    assert load_data_config(tmp_path / "sft.yaml", {"mixture": {"weights": {}}}).mixture.weights == {}
