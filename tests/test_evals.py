"""The eval suite (training/evals/): every task is deterministic for a seed; a scripted model that
always answers right scores 1.0 and one that always refuses (or has no preference) the baseline;
every generated eval set is disjoint from its training side; pass@k checked by hand."""
import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from engine_fixtures import script_table, table_model, tiny_export, tiny_tok, tiny_tokenizer_dir  # noqa: F401
from pipelines.document import Document
from pipelines.errors import InputError
from pipelines.io import ParquetSink, read_documents
from pipelines.shards import split_of, write_token_shards
from training.engine.engine import Engine
from training.evals.core import Sampling, pass_at_k
from training.evals.generative import (GenerativeTask, Item, gsm8k_items, identity_items, reasoning_items,
                                       unknown_entity_items)
from training.evals.knowledge import KnowledgeProbes, heldout_probes, training_probe_keys
from training.evals.lm import BitsPerByte, Choice, MultipleChoice, clean_text_items, read_choice_file
from training.evals.protocol import ProtocolAdherence
from training.evals.suite import SuiteConfig, SuiteInputs, build_suite, protocol_prompts, run_suite

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VAL_FRACTION = 0.3
SMALL = SuiteConfig(samples=2, max_tokens=12, reasoning_items=3, protocol_prompts=4, protocol_max_tokens=12,
                    probes=3, probe_max_tokens=6, mc_items=5, bpb_tokens=256)
RIVERS = ["Wye", "Severn", "Tamar", "Avon", "Usk", "Exe", "Dart", "Teign", "Frome", "Stour"]
NAMES = ["Margaret Ellison", "Thomas Harding", "Alice Brennan", "Peter Lindqvist", "Clara Moreno"]


def corpus_texts() -> list[str]:
    out = []
    for i in range(40):
        river, name = RIVERS[i % len(RIVERS)], NAMES[i % len(NAMES)]
        out.append(f"The old stone bridge over the river {river} was finished in {1800 + 7 * i} after {i + 3} years "
                   f"of hard work by the villagers. The first mayor of the little harbour town was {name}, a ship "
                   f"owner who also built the school. The town library on the main square now holds {1200 + 37 * i} "
                   f"books, maps and old letters from the families of the valley.")
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_tokenizer_dir):
    """clean_text (40 documents, both splits) and its token shards, as the pipeline writes them."""
    root = tmp_path_factory.mktemp("corpus")
    docs = [Document(t, f"doc-{i}", {"url": f"https://town{i}.example/page"}) for i, t in enumerate(corpus_texts())]
    sink = ParquetSink(root / "clean" / "part-00000.parquet")
    for d in docs:
        sink.write(d)
    sink.close()
    write_token_shards(docs, root / "tokens", tiny_tokenizer_dir, {"val_fraction": VAL_FRACTION})
    mc = root / "mc.jsonl"
    mc.write_text("\n".join(json.dumps({"context": f"Item {i}. The colour is", "choices": [" green", " blue", " red"],
                                        "gold": i % 3}) for i in range(4)) + "\n")
    gsm = root / "gsm.jsonl"
    gsm.write_text("\n".join(json.dumps({"question": f"Tom has {6 * k} apples and eats {6 * k - 42}. How many are left?",
                                         "answer": f"{6 * k} - {6 * k - 42} = 42\n#### 42"}) for k in (8, 9)) + "\n")
    return {"clean": root / "clean", "tokens": root / "tokens", "mc": mc, "gsm": gsm}


def scripted(tok, text: str, tools=None) -> Engine:
    """A model that answers every chat prompt with `text` and ends its turn."""
    sep, end = tok.special("im_sep"), tok.special("im_end")
    return Engine(table_model(tok, script_table([sep, *tok.encode(text), end])), tok, tools=tools)


def uniform(tok) -> Engine:
    """A model with no preference at all: every next-token distribution uniform."""
    model = table_model(tok, {})
    with torch.no_grad():
        model.lm_head.weight.zero_()
    return Engine(model, tok, tools={})


def unique_tokens(tok, text: str) -> bool:
    ids = tok.encode(text)
    return len(set(ids)) == len(ids) and tok.special("im_sep") not in ids


def first_scriptable(tok, items: list[Item], render) -> Item:
    """An item whose right answer, as `render` writes it, a table model can say (no repeated token)."""
    return next(it for it in items if unique_tokens(tok, render(it)))


# ---- pass@k ----------------------------------------------------------------------------------

def test_pass_at_k_by_hand():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)       # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)       # 1 - C(3,3)/C(5,3)
    assert pass_at_k(5, 2, 4) == 1.0 and pass_at_k(5, 0, 3) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


# ---- the same seed, the same score -------------------------------------------------------------

def test_every_task_is_deterministic_for_a_seed(tiny_export, corpus):
    cfg = SMALL.model_copy(update={"mc_paths": [str(corpus["mc"])], "gsm8k_paths": [str(corpus["gsm"])]})
    inputs = SuiteInputs(corpus["tokens"], corpus["clean"], VAL_FRACTION)
    tasks, notes = build_suite(cfg, inputs, "chat")
    # the corpus repeats one template in every document: the validation documents' sentences are in the
    # train split too, and the decontamination check says so (flagged, kept)
    assert notes == ["mc_clean_text: 5 of 5 items share a 13-gram with the training data (5 in pretraining): "
                     "flagged, kept"]
    assert {t.name for t in tasks} == {"bpb", "mc_clean_text", "mc_mc", "protocol", "identity", "unknown_entities", "arithmetic",
                                       "arithmetic_no_tools", "counting", "counting_no_tools", "spelling",
                                       "spelling_no_tools", "gsm8k_gsm", "knowledge"}
    engine = Engine.load(tiny_export)
    first, again = run_suite(engine, tasks, seed=3), run_suite(engine, tasks, seed=3)
    for a, b in zip(first, again):
        assert a.score is not None and a.n > 0, a.task
        assert (a.score, a.metrics, a.records) == (b.score, b.metrics, b.records), a.task
    generative = [r for r in first if r.task in ("identity", "arithmetic", "gsm8k_gsm", "knowledge")]
    assert all("pass_at_2" in r.metrics for r in generative)
    other = run_suite(engine, [t for t in tasks if t.name == "identity"], seed=4)[0]
    assert other.records != next(r for r in first if r.task == "identity").records   # the seed drives sampling
    assert [t.name for t in build_suite(cfg, inputs, "base")[0]] == ["bpb", "mc_clean_text", "mc_mc"]


# ---- right answers score 1, refusals the baseline -------------------------------------------------

def test_identity_scripted(tiny_tok):
    task = GenerativeTask("identity", identity_items("crawl2chat"), Sampling(2, 0.7, max_tokens=12))
    right = task.run(scripted(tiny_tok, "I am crawl2chat."), 0)
    assert right.score == 1.0 and right.metrics["with_system_rate"] == right.metrics["without_system_rate"] == 1.0
    from training.conversations.identity import system_prompts
    systems = {it.system for it in task.items}   # bare, and under each held-out system prompt (never trained)
    assert systems == {None, *system_prompts("heldout")} and not systems & set(system_prompts("train"))
    assert right.metrics["with_system_items"] == 3 * right.metrics["without_system_items"]
    assert task.run(scripted(tiny_tok, "I don't know."), 0).score == 0.0


@pytest.mark.parametrize("task", ["arithmetic", "counting", "spelling"])
@pytest.mark.parametrize("tools", [True, False])
def test_reasoning_scripted(tiny_tok, task, tools):
    def answer(it):
        return f"Answer: {it.expected}" if task != "spelling" else f"It is {it.expected}"
    item = first_scriptable(tiny_tok, reasoning_items(task, 60), answer)
    t = GenerativeTask(task, [item], Sampling(2, 0.7, max_tokens=16), tools=tools)
    result = t.run(scripted(tiny_tok, answer(item)), 0)
    assert result.score == 1.0 and result.metrics["pass_at_2"] == 1.0, result.records
    assert t.run(scripted(tiny_tok, "I don't know."), 0).score == 0.0


def test_gsm8k_scripted_and_its_file_errors(tiny_tok, corpus, tmp_path):
    task = GenerativeTask("gsm8k", gsm8k_items(corpus["gsm"]), Sampling(2, 0.7, max_tokens=12))
    assert [it.expected for it in task.items] == ["42", "42"]
    assert task.run(scripted(tiny_tok, "The answer is 42."), 0).score == 1.0
    assert task.run(scripted(tiny_tok, "I don't know."), 0).score == 0.0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "4"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:1: answer: .*#### <number>"):
        gsm8k_items(bad)


def test_protocol_scripted(tiny_tok, tiny_export):
    task = ProtocolAdherence(protocol_prompts(6), max_tokens=12)
    assert task.run(scripted(tiny_tok, "Hello there."), 0).score == 1.0
    assert task.run(scripted(tiny_tok, "I don't know."), 0).score == 1.0   # a refusal is a well-formed turn
    never_stops = task.run(Engine.load(tiny_export), 0)       # its head never gives <|im_end|>
    assert never_stops.score == 0.0 and never_stops.metrics["no_im_end"] == 6
    from training.sft import protocol_adherence as used_by_the_chat_model_check
    from training.evals.protocol import protocol_adherence
    assert used_by_the_chat_model_check is protocol_adherence


def test_knowledge_scripted(tiny_tok, corpus):
    probes = heldout_probes(read_documents([corpus["clean"]]), 40, set(), VAL_FRACTION)
    probe = next(p for p in probes if unique_tokens(tiny_tok, p.answer))
    task = KnowledgeProbes([probe], samples=2, max_tokens=16)
    right = task.run(scripted(tiny_tok, probe.answer), 0)
    assert right.score == 1.0 and right.metrics["pass_at_2"] == 1.0
    refuses = task.run(scripted(tiny_tok, "I don't know."), 0)
    assert refuses.score == 0.0 and refuses.metrics["refusal_rate"] == 1.0
    assert refuses.metrics["idk_when_unknown"] == 1.0   # it cannot complete the fact either: "I don't know" is right


def test_multiple_choice_scripted_and_uniform(tiny_tok, corpus):
    items = read_choice_file(corpus["mc"])
    colour_is = tiny_tok.encode("Item 0. The colour is")[-1]
    assert all(tiny_tok.encode(it.context)[-1] == colour_is for it in items)
    # always says " blue" after "The colour is": make " blue" the gold of every item
    items = [Choice(it.id, it.context, it.choices, it.choices.index(" blue")) for it in items]
    knows = Engine(table_model(tiny_tok, script_table([colour_is, *tiny_tok.encode(" blue")])), tiny_tok, tools={})
    task = MultipleChoice("mc", items)
    r = task.run(knows, 0)
    assert r.score == 1.0 and r.metrics["accuracy"] == 1.0
    r = task.run(uniform(tiny_tok), 0)
    assert r.score == pytest.approx(0.0, abs=1e-12) and r.metrics["accuracy"] == pytest.approx(1 / 3)
    assert r.metrics["baseline"] == pytest.approx(1 / 3)
    bad = corpus["mc"].with_name("bad_mc.jsonl")
    bad.write_text('{"context": "c", "choices": ["a", "b"], "gold": 2}\n')
    with pytest.raises(InputError, match=r"bad_mc.jsonl:1: gold"):
        read_choice_file(bad)


def test_bits_per_byte_perfect_and_uniform(tiny_tok, tiny_tokenizer_dir, tmp_path):
    text = "The quick brown fox"
    ids = tiny_tok.encode(text)
    assert len(set(ids)) == len(ids)
    docs = [(f"d{i}", text) for i in range(60)]
    write_token_shards(docs, tmp_path / "tokens", tiny_tokenizer_dir, {"val_fraction": 1.0})
    task = BitsPerByte(tmp_path / "tokens", max_tokens=512, micro_batch=4)
    chain = [tiny_tok.bos_id, *ids, tiny_tok.bos_id]          # every document: <|endoftext|> then the text
    perfect = Engine(table_model(tiny_tok, script_table(chain)), tiny_tok, tools={})
    assert task.run(perfect, 0).score < 1e-6
    r = task.run(uniform(tiny_tok), 0)
    # by hand: every text target costs ln V nats; bits per byte = Σ ln V / (ln 2 · Σ bytes) over the windows
    from pipelines.shards import TokenShards
    from training.data import val_batches
    tb = tiny_tok.token_bytes
    targets = np.concatenate([y.numpy().ravel() for _, y in val_batches(TokenShards(tmp_path / "tokens", "val"),
                                                                         256, 512, 0, 1, 4)])
    text = targets[tb[targets] > 0]
    assert r.score == pytest.approx(len(text) * math.log(tiny_tok.vocab_size) / (math.log(2) * tb[text].sum()), rel=1e-5)
    assert r.metrics["val_loss"] == pytest.approx(math.log(tiny_tok.vocab_size), rel=1e-5)


# ---- eval sets never meet their training side ----------------------------------------------------

def _norm(text: str) -> str:
    from training.conversations.identity import normalize
    return normalize(text)


def test_identity_eval_questions_are_not_trained():
    from training.conversations.identity import Identity, check_heldout_disjoint, identity_conversations
    check_heldout_disjoint()
    who = Identity("crawl2chat", "the team", "web pages", "March 2024")
    trained = {_norm(m["content"]) for s in range(3) for r in identity_conversations(who, 400, seed=s)
               for m in r["messages"] if m["role"] == "user"}
    for it in identity_items("crawl2chat"):
        q = f" {_norm(it.question)} "          # whole words: the greeting "hi" is not in "this"
        assert not any(q in f" {t} " or f" {t} " in q for t in trained), it.question


def test_unknown_entity_questions_are_not_trained_and_only_a_refusal_scores():
    from training.conversations.general import general_conversations, unknown_questions
    from training.conversations.identity import Identity
    who = Identity("crawl2chat", "the team", "web pages", "March 2024")
    prompts = {_norm(m["content"]) for s in range(3)
               for r in general_conversations(who, 400, seed=s, unknown_fraction=1.0)
               for m in r["messages"] if m["role"] == "user"}
    entities = {x for s in range(3) for _, x, _ in unknown_questions(400, seed=s, split="train")}
    items = unknown_entity_items(32)
    assert len(items) == 32 and len({it.meta["entity"] for it in items}) == 32
    for it in items:   # neither the question nor the invented entity was ever trained on
        assert _norm(it.question) not in prompts and it.meta["entity"] not in entities, it.question
    assert items[0].check("I don't know who that is.")[0]
    assert not items[0].check(f"{items[0].meta['entity']} is a famous painter from Lyon.")[0]


@pytest.mark.parametrize("task", ["arithmetic", "counting", "spelling"])
def test_reasoning_eval_problems_are_not_trained(task):
    from training.conversations.reasoning import draw_problems, split_of as problem_split
    items = reasoning_items(task, 20, seed=0)
    assert len(items) == 20 and all(problem_split(it.id) == "heldout" for it in items)
    train = [p for s in range(3) for f in (0.0, 1.0) for p in draw_problems(1500, seed=s, split="train", tool_fraction=f)]
    assert not {it.id for it in items} & {p.key for p in train}
    assert not {it.question for it in items} & {p.question for p in train}


def test_protocol_prompts_are_not_trained():
    from training.conversations.identity import identity_questions
    from training.conversations.reasoning import draw_problems
    trained = {q for qs in identity_questions("train").values() for q in qs}
    trained |= {p.question for s in range(3) for p in draw_problems(1500, seed=s, split="train")}
    prompts = [p[0]["content"] for p in protocol_prompts(40)]
    assert len(prompts) == 40 and not set(prompts) & trained


def test_knowledge_eval_probes_are_not_the_trained_ones(corpus, tmp_path):
    from training.conversations.dataset import write_table_dataset
    from training.conversations.probes import PROBE_SCHEMA, find_probes
    trained = find_probes(read_documents([corpus["clean"]]), max_probes=15, per_doc=2)  # what knowledge_probes took
    rows = [{**asdict(p), "prompt_mode": "completion", "samples": [], "judgments": [], "right": 0,
             "outcome": "does_not_know"} for p in trained]
    write_table_dataset(rows, tmp_path / "probes", PROBE_SCHEMA, kind="probe_outcomes")
    exclude = training_probe_keys(tmp_path / "probes")
    held = heldout_probes(read_documents([corpus["clean"]]), 30, exclude, VAL_FRACTION)
    assert len(held) == 30
    for p in held:
        assert not {p.id, p.sentence, p.question} & exclude
        assert split_of(p.doc_id, VAL_FRACTION) == "train"      # facts pretraining read
    built = build_suite(SMALL, SuiteInputs(None, corpus["clean"], VAL_FRACTION, tmp_path / "probes"), "chat")[0]
    suite_probes = next(t for t in built if t.name == "knowledge").probes
    assert suite_probes and not {p.question for p in suite_probes} & exclude


def test_generated_multiple_choice_comes_from_validation_documents(corpus):
    docs = list(read_documents([corpus["clean"]]))
    items = clean_text_items(docs, 12, VAL_FRACTION, seed=0)
    assert len(items) == 12 and items == clean_text_items(docs, 12, VAL_FRACTION, seed=0)
    val = [" ".join(d.text.split()) for d in docs if split_of(d.id, VAL_FRACTION) == "val"]
    train = [" ".join(d.text.split()) for d in docs if split_of(d.id, VAL_FRACTION) == "train"]
    for it in items:
        sentence = it.context.split(". ")[-1] + it.choices[it.gold]
        assert any(sentence in t for t in val) and not any(sentence in t for t in train), sentence
        assert len(it.choices) == 4 and len(set(it.choices)) == 4
    assert len({it.gold for it in items}) > 1                 # the gold is not always in one place


def test_letter_check_reads_the_answer_letter_not_the_pronoun_i():
    from training.evals.generative import letter_check
    g = letter_check("g")
    assert g("The 3rd letter of 'dog' is 'g'.") == (True, "g")
    assert g("The 3rd letter of dog is g. I hope that helps!") == (True, "g")
    assert g("It is g, I'm sure.") == (True, "g")
    assert g('The answer is "o", not g.') == (False, "o")  # the quoted letter is the answer
    assert g("I don't know.") == (False, None)
    i = letter_check("i")
    assert i("The 2nd letter of 'line' is 'i'.") == (True, "i")
    assert i("The 2nd letter of line is I.") == (True, "i")  # the letter, capitalised, ends the sentence
    assert i("I think the answer is n.") == (False, "n")
