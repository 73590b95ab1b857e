"""Held-out sets are disjoint from training by normalized-text hash: for each conversation generator
(identity, reasoning, knowledge probes, user data), for the eval suite's prompts, and for the chat
model's protocol gate built from a real SFT mixture (write_mixture) with user-supplied conversations."""
import json
import random

import pytest

from pipelines.document import Document
from pipelines.errors import UserError
from training.conversations.heldout import (check_disjoint, gate_prompts, generator_heldout_prompts, normalize,
                                            opening_prompt, text_hash, training_hashes)


def test_normalize_folds_what_does_not_change_the_prompt():
    assert normalize("  What's  your\tNAME?! ") == "what's your name"
    assert normalize("\uff37hat is 2+2") == "what is 2+2"          # NFKC: fullwidth W
    assert normalize("STRASSE") == normalize("straße")              # casefold, not lower
    assert normalize("«Who are you»") == "who are you"
    assert text_hash("Who made you?") == text_hash("who made you") != text_hash("who made them")


def test_identity_generator_heldout_is_disjoint():
    from training.conversations.identity import Identity, identity_conversations
    train = training_hashes(identity_conversations(Identity("Ada", "the team", "web pages", "2099"), 400))
    held = generator_heldout_prompts()["heldout:identity"]
    kept, dropped = check_disjoint(held, train)
    assert not dropped and len(kept) == len(held) > 10


def test_reasoning_generator_heldout_is_disjoint():
    from training.conversations.reasoning import draw_problems, to_conversation
    rng = random.Random(0)   # the conversations reasoning_conversations writes (tool runs aside)
    rows = [to_conversation(p, rng, tool_output="42") for p in draw_problems(2000, 0, "train", tool_fraction=0.5)]
    held = generator_heldout_prompts(problems=200)["heldout:reasoning"]
    assert not check_disjoint(held, training_hashes(rows))[1] and len(held) == 200


def test_eval_suite_prompts_are_disjoint_from_every_generator():
    from training.conversations.identity import Identity, identity_conversations
    from training.conversations.reasoning import reasoning_conversations
    from training.evals.generative import identity_items, reasoning_items
    from training.evals.suite import protocol_prompts
    rows = identity_conversations(Identity("Ada", "t", "w", "2099"), 400)
    rows += reasoning_conversations(400, seed=0, tool_fraction=0.0)
    train = training_hashes(rows)
    texts = [p[0]["content"] for p in protocol_prompts(40)] + [i.question for i in identity_items("Ada")]
    texts += [i.question for t in ("arithmetic", "counting", "spelling") for i in reasoning_items(t, 20)]
    check_disjoint(texts, train, "eval suite", strict=True)


def _probe_docs():
    # the same sentence on two pages of one site, the second in other casing: a different probe id,
    # the same question once normalized
    s = "The old stone bridge over the river was finished in 1872 after nine years of work."
    return [Document(s + " It still carries traffic today and more.", "d1", {"url": "https://a.example/x"}),
            Document(s.replace("old stone", "Old Stone") + " Another sentence here.", "d2",
                     {"url": "https://a.example/y"})]


def test_knowledge_probes_heldout_is_disjoint(tmp_path):
    from training.conversations.dataset import write_table_dataset
    from training.conversations.probes import find_probes, probe_conversations
    from training.evals.knowledge import heldout_probes, training_probe_keys
    found = find_probes(_probe_docs(), per_doc=2)
    assert len(found) == 2 and found[0].id != found[1].id and text_hash(found[0].sentence) == text_hash(found[1].sentence)
    assert found[0].sentence != found[1].sentence
    trained = [{"id": found[0].id, "sentence": found[0].sentence, "question": found[0].question,
                "answer": found[0].answer, "kind": found[0].kind, "outcome": "knows"}]
    convs, _ = probe_conversations(trained)
    import pyarrow as pa
    schema = pa.schema([(k, pa.string()) for k in ("id", "sentence", "question")])
    write_table_dataset([{k: r[k] for k in ("id", "sentence", "question")} for r in trained], tmp_path / "p", schema,
                        "probes")
    exclude = training_probe_keys(tmp_path / "p")
    held = heldout_probes(_probe_docs(), 5, exclude, val_fraction=0.0)
    assert held == []   # the second page's probe asks about the trained fact: not held out
    assert not check_disjoint([p.question for p in held], training_hashes(convs))[1]


def _user_file(path, n=12):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"Tell me about harbour number {i}."},
                                             {"role": "assistant", "content": f"Harbour {i} is a harbour."}]}) + "\n")
    return path


def _mixture(tmp_path):
    """A real SFT mixture of identity, reasoning and a user's file (write_mixture, as sft_mixture)."""
    from training.conversations.config import MixtureConfig
    from training.conversations.dataset import write_conversations
    from training.conversations.identity import Identity, identity_conversations
    from training.conversations.mixture import write_mixture
    from training.conversations.reasoning import reasoning_conversations
    from training.conversations.user import user_conversations
    from training.sft import load_conversations
    user, _, _ = user_conversations([str(_user_file(tmp_path / "mine.jsonl"))])
    sources = {"identity": identity_conversations(Identity("Ada", "t", "w", "2099"), 60),
               "reasoning": reasoning_conversations(60, seed=0, tool_fraction=0.0), "user": user}
    for name, rows in sources.items():
        write_conversations(rows, tmp_path / name)
    write_mixture({n: tmp_path / n for n in sources}, tmp_path / "mixture",
                  MixtureConfig(weights={n: 1.0 for n in sources}, val_fraction=0.3))
    return load_conversations(tmp_path / "mixture", "train"), load_conversations(tmp_path / "mixture", "val")


def test_gate_never_sees_a_training_prompt_and_is_stratified(tmp_path):
    from training.sft import held_out_prompts
    train, val = _mixture(tmp_path)
    hashes = training_hashes(train)
    # what the gate sampled before: the val split's opening turns, many of them trained verbatim
    old = held_out_prompts(val, 64)
    assert check_disjoint([p[-1]["content"] for p in old], hashes)[1], "the generators no longer repeat prompts"
    prompts, stats = gate_prompts(train, val, 24, extra=generator_heldout_prompts())
    assert len(prompts) == 24
    check_disjoint([p[-1]["content"] for p in prompts], hashes, "gate", strict=True)
    assert stats["identity"]["in_training"] > 0                      # excluded, and counted
    assert stats["user:mine.jsonl"]["used"] > 0                      # user conversations are sampled
    used = [s["used"] for s in stats.values() if s["available"] - s["in_training"] >= 4]
    assert max(used) - min(used) <= 1                                # round robin over sources


def test_planted_duplicate_is_caught(tmp_path):
    train, val = _mixture(tmp_path)
    trained = json.loads(train[0]["messages"]) if isinstance(train[0]["messages"], str) else train[0]["messages"]
    ask = next(m["content"] for m in trained if m["role"] == "user")
    planted = {"id": "user-planted", "source": "user:mine.jsonl", "split": "val",
               "messages": [{"role": "user", "content": f"  {ask.upper()}!! "},
                            {"role": "assistant", "content": "Planted."}]}
    prompts, stats = gate_prompts(train, [planted, *val], 500)
    assert all(normalize(p[-1]["content"]) != normalize(ask) for p in prompts)
    assert stats["user:mine.jsonl"]["in_training"] >= 1
    with pytest.raises(UserError, match="appear in the training data"):
        check_disjoint([planted["messages"][0]["content"]], training_hashes(train), "gate", strict=True)
    assert opening_prompt(planted)[-1]["content"] == planted["messages"][0]["content"]


def test_suite_leaves_out_a_user_eval_item_found_in_the_sft_data(tmp_path):
    from training.evals.suite import SuiteConfig, SuiteInputs, build_suite
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("\n".join(json.dumps({"question": q, "answer": "#### 42"})
                             for q in ("How many apples are left?", "Planted: what is six times seven?")) + "\n")
    train = training_hashes([[{"role": "user", "content": "planted: What is six times seven"},
                              {"role": "assistant", "content": "42"}]])
    cfg = SuiteConfig(reasoning_items=0, protocol_prompts=0, probes=0, mc_items=0, gsm8k_paths=[str(gsm)])
    tasks, notes = build_suite(cfg, SuiteInputs(training_prompts=train), "chat")
    [task] = [t for t in tasks if t.name == "gsm8k_gsm"]
    assert [i.question for i in task.items] == ["How many apples are left?"]
    assert "gsm8k_gsm: 1 of 2 items left out, their prompt is in the SFT data" in notes
