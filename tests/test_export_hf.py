"""`crawl2chat export --format hf`: tiny SFT-trained models of the GPT-2 shape and the modern shape
(Qwen3: RoPE, RMSNorm, SwiGLU, QK-norm, untied head), and a Llama-shaped one, read back by real
transformers: standard classes with no remote code, the chat template giving our renderer's ids
token for token, fp32 logits equal to ours, greedy generate equal to our engine's; and the misuse
cases (unknown model, not an export, an output crawl2chat did not write) as one error line that
writes nothing."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from engine_fixtures import tiny_gpt
from interop_fixtures import LLAMA, VOCAB, interop_tokenizer_dir, random_export, trained  # noqa: F401 (fixtures)
from pipelines.cli import main as cli
from pipelines.tokenizer import load_tokenizer
from training.conversations.render import render_conversation, render_for_completion
from training.export import export_state, load_model
from training.interop.chat_template import CHAT_TEMPLATE
from training.interop.cli import export

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASSES = {"gpt2": "GPT2LMHeadModel", "qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM",
           "gpt2-nobias": "GPT2LMHeadModel"}

CHATS = [
    [{"role": "system", "content": "You are crawl2chat, a small assistant."},
     {"role": "user", "content": "How many letters are in strawberry?"},
     {"role": "assistant", "content": [
         {"type": "text", "text": "Let me count."},
         {"type": "tool_call", "name": "python", "arguments": "print(len('strawberry'))"},
         {"type": "tool_output", "text": "10\n"},
         {"type": "text", "text": " strawberry has 10 letters."}]},
     {"role": "user", "content": "And  in\n\n'river'?  "}],
    [{"role": "user", "content": "What is 17 plus 25?"}],
    [{"role": "user", "content": [{"type": "text", "text": "Say hi, café ☕ 日本"}]},
     {"role": "assistant", "content": "hi!"}, {"role": "user", "content": "Again."}],
]


@pytest.fixture(scope="module")
def exports(trained, interop_tokenizer_dir, tmp_path_factory) -> dict:
    """family -> (crawl2chat export, hf directory): the trained ones, a random Llama with biases and a
    random GPT-2 shape without biases (GPT-2's layers get zero ones) and with an untied head."""
    root = tmp_path_factory.mktemp("hf")
    sources = {**trained, "llama": random_export(root / "llama" / "export", interop_tokenizer_dir, bias=True, **LLAMA),
               "gpt2-nobias": random_export(root / "gpt2" / "export", interop_tokenizer_dir, bias=False,
                                            tie_embeddings=False)}
    return {fam: (src, export(str(src), "hf", root / fam / "hf")) for fam, src in sources.items()}


def our_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """Every position's logits (forward without targets gives the last one only)."""
    with torch.no_grad():
        return model.lm_head(model._trunk(ids, None))


@pytest.mark.parametrize("fam", ["gpt2", "qwen3", "llama", "gpt2-nobias"])
def test_loads_as_a_standard_class_with_no_remote_code_and_cut_vocabulary(exports, fam):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    src, out = exports[fam]
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    assert type(model).__name__ == CLASSES[fam] and type(model).__module__.startswith("transformers.models.")
    assert model.get_input_embeddings().weight.shape[0] == VOCAB == model.get_output_embeddings().weight.shape[0]
    ours = load_model(src)
    assert ours.wte.weight.shape[0] == 512  # padded in training; the 12 padded rows are gone
    tok = AutoTokenizer.from_pretrained(out, trust_remote_code=False)
    special = load_tokenizer(src)
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [special.special("im_end"), special.special("endoftext")]
    assert tok.eos_token == "<|im_end|>" and tok.bos_token == "<|endoftext|>"
    assert set(tok.all_special_tokens) == set(special.special_ids)
    # transformers 4.x (what vLLM pins) reads these spellings; a 4.57 checked by hand renders the same ids
    old = json.loads((out / "tokenizer_config.json").read_text())
    assert old["tokenizer_class"] == "PreTrainedTokenizerFast" and old["chat_template"] == CHAT_TEMPLATE
    card = (out / "README.md").read_text()
    assert CLASSES[fam] in card and "trust_remote_code" in card
    if fam in ("gpt2", "qwen3"):   # trained: the trainer's figures are in the card
        assert "chat (SFT)" in card and "| val_loss |" in card and json.loads((src / "config.json").read_text())["mlflow_run_id"] is None


@pytest.mark.parametrize("chat", range(len(CHATS)))
def test_chat_template_gives_the_ids_of_our_rendering(exports, chat):
    from transformers import AutoTokenizer
    src, out = exports["gpt2"]
    ours, tok = load_tokenizer(src), AutoTokenizer.from_pretrained(out)
    messages = CHATS[chat]
    got = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert got == render_for_completion(ours, messages)
    # A whole training conversation (it ends with the assistant) renders as SFT renders it
    full = messages[:-1] if messages[-1]["role"] == "user" and len(messages) > 2 else None
    if full:
        ids = tok.apply_chat_template(full, tokenize=True, return_dict=True)["input_ids"]
        assert ids == render_conversation(ours, full)[0]


@pytest.mark.parametrize("fam", ["gpt2", "qwen3", "llama", "gpt2-nobias"])
def test_fp32_logits_equal_ours(exports, fam):
    from transformers import AutoModelForCausalLM
    src, out = exports[fam]
    ours = load_model(src)
    theirs = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.tensor([render_for_completion(load_tokenizer(src), CHATS[0])])
    rand = torch.randint(0, VOCAB, (3, 100), generator=torch.Generator().manual_seed(0))
    for x in (ids, rand):
        with torch.no_grad():
            diff = (our_logits(ours, x) - theirs(x).logits).abs().max().item()
        assert diff < 1e-4, (fam, diff)


@pytest.mark.parametrize("fam", ["gpt2", "qwen3"])
def test_greedy_generate_equals_our_engine_token_for_token(exports, fam):
    from transformers import AutoModelForCausalLM
    from training.engine.engine import Engine, SamplingParams
    src, out = exports[fam]
    engine = Engine.load(src, tools={}, device="cpu")
    theirs = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    prompts = [[{"role": "user", "content": "What is 12 plus 30?"}],
               [{"role": "system", "content": "You are crawl2chat."}, {"role": "user", "content": "Who are you?"}],
               [{"role": "user", "content": "Say 7."}, {"role": "assistant", "content": "7."},
                {"role": "user", "content": "Now 9."}]]
    stopped = 0
    for messages in prompts:
        prompt = render_for_completion(engine.tokenizer, messages)
        [c] = engine.generate([prompt], SamplingParams(max_tokens=40, temperature=0))
        assert all(c.sampled)   # no tool ran: the engine's output is the model's alone
        with torch.no_grad():
            gen = theirs.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False)
        assert gen[0, len(prompt):].tolist() == c.tokens, (fam, messages)
        stopped += c.finish_reason == "stop"
    assert stopped, "the trained models end some replies with <|im_end|>: the stop tokens are compared too"


def test_large_weights_are_sharded_and_load_the_same(exports, tmp_path):
    from transformers import AutoModelForCausalLM
    src, _ = exports["qwen3"]
    out = export(str(src), "hf", tmp_path / "sharded", max_shard_size="500KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2 and not (out / "model.safetensors").exists()
    x = torch.randint(0, VOCAB, (1, 50), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (our_logits(load_model(src), x) - AutoModelForCausalLM.from_pretrained(out).eval()(x).logits).abs().max()
    assert diff < 1e-4


def test_a_switch_combination_with_no_standard_architecture_is_refused_before_training():
    from pipelines.errors import ConfigError
    from training.config import load_config
    with pytest.raises(ConfigError, match=r"model\.rope=true without model\.rmsnorm=true, model\.mlp=swiglu.*"
                                          r"set model\.rmsnorm=true, model\.mlp=swiglu"):
        load_config(None, ["model.rope=true"])
    with pytest.raises(ConfigError, match=r"model\.qk_norm=true with model\.bias=true.*set model\.bias=false"):
        load_config(None, ["model.rope=true", "model.rmsnorm=true", "model.mlp=swiglu", "model.qk_norm=true"])
    for ok in ([], ["model.rope=true", "model.rmsnorm=true", "model.mlp=swiglu"],
               ["model.rope=true", "model.rmsnorm=true", "model.mlp=swiglu", "model.qk_norm=true", "model.bias=false"]):
        load_config(None, ok)
    # SFT takes its shape from init_from: not refused at config time (the export says what it is)
    load_config(None, ["model.init_from=some/export"], job="sft")


def test_an_old_export_with_no_standard_architecture_is_one_line_and_writes_nothing(interop_tokenizer_dir, tmp_path,
                                                                                     capsys):
    model = tiny_gpt(VOCAB, rope=True)  # RoPE with LayerNorm and GELU: trained before the config refused it
    src = export_state(model.state_dict(), model.config, tmp_path / "old" / "export", tokenizer_dir=interop_tokenizer_dir)
    for fmt in ("hf", "gguf"):
        assert cli(["export", str(src), "--format", fmt, "--out", str(tmp_path / fmt)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "model.rope=true without model.rmsnorm=true" in err
        assert not (tmp_path / fmt).exists()


def test_a_dtype_a_weight_would_overflow_is_refused(exports, tmp_path, capsys):
    from safetensors.torch import load_file, save_file
    src, _ = exports["llama"]
    big = tmp_path / "big" / "export"
    shutil.copytree(src, big)
    state = load_file(str(big / "model.safetensors"))
    state["h.0.mlp.c_fc.weight"][3, 5] = 70000.0    # beyond float16's 65504, within bfloat16's range
    save_file(state, str(big / "model.safetensors"), metadata={"format": "crawl2chat-gpt"})
    assert cli(["export", str(big), "--format", "hf", "--dtype", "f16", "--out", str(tmp_path / "f16")]) == 2
    err = capsys.readouterr().err
    assert "model.layers.0.mlp.gate_proj.weight reaches |w| = 70000" in err and "--dtype bf16" in err and not (tmp_path / "f16").exists()
    assert cli(["export", str(big), "--format", "hf", "--dtype", "bf16", "--out", str(tmp_path / "bf16")]) == 0
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert cfg["dtype"] == "bfloat16"


def test_misuse_is_one_line_and_writes_nothing(exports, interop_tokenizer_dir, tmp_path, capsys, monkeypatch):
    src, _ = exports["gpt2"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("CRAWL2CHAT_MODEL_CACHE", str(tmp_path / "cache"))
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    cases = {
        "crawl2chat-nosuch@candidate": "no MLflow registry",      # and none is created to look
        str(interop_tokenizer_dir): "not a crawl2chat model export",
        str(tmp_path / "no" / "such" / "dir"): "neither an export directory nor a registered model",
    }
    for model, says in cases.items():
        assert cli(["export", model, "--format", "hf", "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("crawl2chat: error:") and "\n" not in err and says in err, err
    for fmt in ("hf", "gguf"):
        assert cli(["export", str(src), "--format", fmt, "--out", str(mine)]) == 2
        err = capsys.readouterr().err.strip()
        assert "was not written by crawl2chat" in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-folder"]      # no output, cache or MLflow store
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


# ---- the MLflow registry: NAME@ALIAS, and the asset exporting every chat version ----------------

@pytest.fixture(scope="module")
def registry(exports, tmp_path_factory):
    """A real MLflow store (SQLite + local artifacts) with the trained Qwen3 as crawl2chat-chat v1
    (alias candidate) and the GPT-2 shape as crawl2chat-rl v1, registered as assets/training.register
    does: the export as run artifacts `model`, a version with the run id."""
    from mlflow import MlflowClient
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.create_experiment("crawl2chat/post_training", artifact_location=(root / "artifacts").as_uri())
    runs = {}
    for name, fam in (("crawl2chat-chat", "qwen3"), ("crawl2chat-rl", "gpt2")):
        run = client.create_run(exp)
        client.log_artifacts(run.info.run_id, str(exports[fam][0]), "model")
        client.set_terminated(run.info.run_id)
        client.create_registered_model(name)
        mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        client.set_registered_model_alias(name, "candidate", mv.version)
        runs[name] = run.info.run_id
    return uri, runs


def test_a_registered_model_exports_by_alias_with_its_lineage_in_the_card(registry, exports, tmp_path, capsys,
                                                                         monkeypatch):
    from transformers import AutoModelForCausalLM
    uri, runs = registry
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("CRAWL2CHAT_MODEL_CACHE", str(tmp_path / "cache"))
    assert cli(["export", "crawl2chat-chat@candidate", "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    card = (tmp_path / "hf" / "README.md").read_text()
    assert f"| SFT | crawl2chat-chat/1 | `{runs['crawl2chat-chat']}` |" in card
    x = torch.randint(0, VOCAB, (1, 60), generator=torch.Generator().manual_seed(2))
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert (our_logits(load_model(exports["qwen3"][0]), x) - theirs(x).logits).abs().max() < 1e-4
    capsys.readouterr()
    assert cli(["export", "crawl2chat-nosuch@candidate", "--format", "gguf", "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err.strip()
    assert "'crawl2chat-nosuch@candidate' not found" in err and "\n" not in err
    assert not (tmp_path / "g").exists() and sorted(p.name for p in (tmp_path / "cache").iterdir()) == \
        [f"crawl2chat-chat-v1-{runs['crawl2chat-chat'][:12]}"]


def test_the_asset_exports_each_chat_version_once_and_logs_it_to_the_version_s_run(registry, tmp_path,
                                                                                  monkeypatch):
    import dagster as dg
    from mlflow import MlflowClient
    from assets.interop import hf_exports
    from assets.lineage import MLflowTracker
    from assets.resources import LakeResource
    uri, runs = registry
    monkeypatch.setenv("CRAWL2CHAT_MODEL_CACHE", str(tmp_path / "cache"))
    resources = {"lake": LakeResource(root=str(tmp_path / "lake")),
                 "mlflow_tracker": MLflowTracker(tracking_uri=uri, artifact_root=str(tmp_path / "art"))}
    result = dg.materialize([hf_exports], resources=resources, instance=dg.DagsterInstance.ephemeral())
    exported = result.asset_materializations_for_node("hf_exports")[0].metadata["exported"].value
    assert sorted(exported) == ["crawl2chat-chat/1", "crawl2chat-rl/1"]
    client = MlflowClient(uri, registry_uri=uri)
    for name, run_id in runs.items():
        logged = {a.path for a in client.list_artifacts(run_id, "hf")}
        assert {"hf/config.json", "hf/model.safetensors", "hf/tokenizer.json", "hf/README.md"} <= logged
        assert client.get_model_version(name, "1").tags["hf_export"] == f"runs:/{run_id}/hf"
    again = dg.materialize([hf_exports], resources=resources, instance=dg.DagsterInstance.ephemeral())
    assert again.asset_materializations_for_node("hf_exports")[0].metadata["exported"].value == {}
