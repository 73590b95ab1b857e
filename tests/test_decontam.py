"""Decontamination against our own crawl: a planted eval item that shares a 13-gram with the
pretraining corpus (clean_text's train split) or the SFT data is found, flagged on its task's
figures, and left out under `decontamination: exclude`; the n-gram hashing is the dedup stage's."""
import json

import pytest

from engine_fixtures import tiny_export, tiny_tokenizer_dir  # noqa: F401  (fixtures)

from pipelines.document import Document
from pipelines.io import ParquetSink
from pipelines.minhash import MinHasher
from training.evals.decontam import NgramIndex, find_contamination
from training.evals.suite import SuiteConfig, SuiteInputs, build_suite

CRAWLED = ("The harbour master of Port Ellison kept a ledger of every ship that entered the bay between "
           "the spring floods and the first autumn storms, writing each name in green ink.")


@pytest.fixture
def lineage_data(tmp_path):
    from training.conversations.dataset import write_conversations
    sink = ParquetSink(tmp_path / "clean" / "part-00000.parquet")
    sink.write(Document(CRAWLED + " Nothing else was written there.", "doc-1", {"url": "https://a.example/"}))
    sink.write(Document("An unrelated page about gardening and the care of roses in dry summers.", "doc-2", {}))
    sink.close()
    sft = [{"id": "c1", "source": "s", "messages": [
        {"role": "user", "content": "Tell me a story."},
        {"role": "assistant", "content": "Once a baker in the old town sold seven loaves of rye bread to every "
                                         "traveller who came through the northern gate at dawn."}]}]
    write_conversations([{**r, "split": "train"} for r in sft], tmp_path / "mixture" / "train")
    mc = tmp_path / "mc.jsonl"
    rows = [  # planted: the crawl's sentence, in other casing and punctuation, as a multiple-choice item
        {"context": CRAWLED.upper().replace(",", "")[:-30], "choices": [CRAWLED[-30:], " nothing at all."], "gold": 0},
        {"context": "Water boils at sea level at a temperature of", "choices": [" 100 C.", " 10 C."], "gold": 0}]
    mc.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(json.dumps({"question": "A baker in the old town sold seven loaves of rye bread to every traveller "
                                           "who came through the northern gate. How many loaves for 3?",
                               "answer": "#### 21"}) + "\n"
                   + json.dumps({"question": "How many legs do 4 cats have?", "answer": "#### 16"}) + "\n")
    return tmp_path, str(mc), str(gsm)


def _suite(tmp_path, mc, gsm, mode):
    cfg = SuiteConfig(reasoning_items=0, protocol_prompts=0, probes=0, mc_items=0, mc_paths=[mc], gsm8k_paths=[gsm],
                      decontamination=mode)
    inputs = SuiteInputs(clean_dir=tmp_path / "clean", val_fraction=0.0, sft_mixture=tmp_path / "mixture")
    return build_suite(cfg, inputs, "chat")


def test_planted_contaminated_items_are_flagged(lineage_data):
    tmp_path, mc, gsm = lineage_data
    tasks, notes = _suite(tmp_path, mc, gsm, "flag")
    by = {t.name: t for t in tasks}
    assert by["mc_mc"].contamination["contaminated_pretraining"] == 1
    assert by["mc_mc"].contamination["contaminated_sft"] == 0 and len(by["mc_mc"].items) == 2   # flagged, kept
    assert by["gsm8k_gsm"].contamination["contaminated_sft"] == 1
    assert by["gsm8k_gsm"].contamination["contaminated_pretraining"] == 0
    assert any(n.startswith("mc_mc: 1 of 2 items share a 13-gram") and "flagged, kept" in n for n in notes)


def test_exclude_leaves_them_out(lineage_data):
    tmp_path, mc, gsm = lineage_data
    tasks, notes = _suite(tmp_path, mc, gsm, "exclude")
    by = {t.name: t for t in tasks}
    assert [i.context for i in by["mc_mc"].items] == ["Water boils at sea level at a temperature of"]
    assert [i.question for i in by["gsm8k_gsm"].items] == ["How many legs do 4 cats have?"]
    assert by["mc_mc"].contamination["decontam_excluded"] == 1


def test_ngram_hashes_are_the_dedup_stage_s():
    text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    idx = NgramIndex({"a": text}, n=13)
    assert set(idx.by_length[13].tolist()) == set(MinHasher(shingle_words=13).shingle_hashes(text).tolist())
    assert idx.hits("zero " + text.upper() + " fifteen") == {"a"} and idx.hits(text[:40]) == set()


def test_short_items_are_checked_whole_or_counted():
    class T:
        name, kind = "t", "chat"
        prompts = [[{"role": "user", "content": "one two three four five six seven eight"}],
                   [{"role": "user", "content": "too short"}]]
    report = find_contamination([T()], {"pretraining": ["zero one two three four five six seven eight nine"]})
    assert report["t"]["pretraining"] == ["prompt-0"] and report["t"]["short"] == 1 and report["t"]["checked"] == 1


@pytest.mark.usefixtures("one_torch_thread")
def test_the_figures_go_with_the_task_s_result(lineage_data, tiny_export):
    from training.engine.engine import Engine
    from training.evals.suite import run_suite
    tmp_path, mc, gsm = lineage_data
    tasks, _ = _suite(tmp_path, mc, gsm, "flag")
    [result] = run_suite(Engine.load(tiny_export), [t for t in tasks if t.name == "mc_mc"], seed=0)
    assert result.metrics["contaminated_pretraining"] == 1 and result.metrics["decontam_checked"] == 2
    assert result.all_metrics()["mc_mc/contaminated_pretraining"] == 1.0 and result.interval is not None
