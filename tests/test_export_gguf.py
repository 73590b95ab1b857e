"""`crawl2chat export --format gguf`: the file read back by a real consumer, transformers' GGUF loader
(`from_pretrained(dir, gguf_file=...)`), which de-quantizes llama.cpp's layouts into its own classes:
fp32 logits equal to ours for the GPT-2 shape, Qwen3 (both SFT-trained) and Llama; f16 / bf16 / q8_0
close to them; the tokenizer and chat template from the metadata giving our ids; the overflow guard.

transformers' loader reads what its GGUF tables map: the tiny models are sized to them (GPT-2 context
1024, Qwen3 head_dim 128; interop_fixtures.py), and a Llama with biases is checked in the file itself,
because the loader builds Llama without attention/MLP biases and drops them (llama.cpp reads them)."""
from __future__ import annotations

import pytest
import torch

from interop_fixtures import LLAMA, VOCAB, interop_tokenizer_dir, random_export, trained  # noqa: F401 (fixtures)
from pipelines.cli import main as cli
from pipelines.tokenizer import load_tokenizer
from training.conversations.render import render_for_completion
from training.export import load_model
from training.interop.chat_template import CHAT_TEMPLATE
from training.interop.cli import export

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLASSES = {"gpt2": "GPT2LMHeadModel", "qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}
# Largest logit difference to the fp32 model by dtype (logits here reach |4|): f16 keeps 11 bits,
# bf16 8, q8_0 8-bit blocks with an f16 scale; measured 0.001-0.004, 0.008-0.04, 0.02-0.11.
TOLERANCE = {"f32": 1e-4, "f16": 0.02, "bf16": 0.15, "q8_0": 0.3}


@pytest.fixture(scope="module")
def sources(trained, interop_tokenizer_dir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("gguf_src")
    return {**trained, "llama": random_export(root / "llama" / "export", interop_tokenizer_dir, bias=False, **LLAMA)}


def their_model(gguf_file):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32).eval()


def logits_diff(ours, theirs, x) -> float:
    with torch.no_grad():
        return (ours.lm_head(ours._trunk(x, None)) - theirs(x).logits).abs().max().item()


@pytest.mark.parametrize("fam", ["gpt2", "qwen3", "llama"])
def test_transformers_reads_the_gguf_with_our_fp32_logits(sources, fam, tmp_path):
    out = export(str(sources[fam]), "gguf", tmp_path / "gguf")
    assert out == tmp_path / "gguf" / "model.gguf"
    theirs = their_model(out)
    assert type(theirs).__name__ == CLASSES[fam]
    ours = load_model(sources[fam])
    prompt = render_for_completion(load_tokenizer(sources[fam]), [
        {"role": "system", "content": "You are crawl2chat."}, {"role": "user", "content": "What is 6 times 7?"}])
    for x in (torch.tensor([prompt]), torch.randint(0, VOCAB, (2, 120), generator=torch.Generator().manual_seed(0))):
        assert logits_diff(ours, theirs, x) < TOLERANCE["f32"]


@pytest.mark.parametrize("dtype", ["f16", "bf16", "q8_0"])
def test_smaller_dtypes_are_stored_as_asked_and_stay_close(sources, dtype, tmp_path):
    import gguf
    src = sources["qwen3"]
    out = export(str(src), "gguf", tmp_path / dtype, dtype=dtype)
    reader = gguf.GGUFReader(out)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.ffn_gate.weight"] == dtype.upper() and types["token_embd.weight"] == dtype.upper()
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.attn_q_norm.weight"] == "F32"
    x = torch.randint(0, VOCAB, (2, 80), generator=torch.Generator().manual_seed(1))
    diff = logits_diff(load_model(src), their_model(out), x)
    assert 0 < diff < TOLERANCE[dtype], diff


def test_metadata_holds_the_tokenizer_template_and_stops_and_transformers_tokenizes_as_we_do(sources, tmp_path):
    import gguf
    from transformers import AutoTokenizer
    src = sources["gpt2"]
    out = export(str(src), "gguf", tmp_path / "gguf")
    ours = load_tokenizer(src)
    reader = gguf.GGUFReader(out)

    def field(key):
        return reader.get_field(key).contents()
    assert field("general.architecture") == "gpt2" and field("tokenizer.ggml.model") == "gpt2"
    assert len(field("tokenizer.ggml.tokens")) == VOCAB and field("tokenizer.chat_template") == CHAT_TEMPLATE
    assert field("tokenizer.ggml.eos_token_id") == ours.special("im_end")
    assert field("tokenizer.ggml.bos_token_id") == ours.bos_id and field("tokenizer.ggml.add_bos_token") is False
    modelfile = (out.parent / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf\n") and 'PARAMETER stop "<|im_end|>"' in modelfile
    tok = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    text = "Hello  world!\n\n  café 123456 it's ☕ 日本語\tx"
    assert tok.encode(text, add_special_tokens=False) == ours.encode(text)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How many r in strawberry?"},
                {"role": "assistant", "content": [{"type": "tool_call", "name": "python",
                                                   "arguments": "print('strawberry'.count('r'))"},
                                                  {"type": "tool_output", "text": "3"}, {"type": "text", "text": "3."}]},
                {"role": "user", "content": "Thanks"}]
    got = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert got == render_for_completion(ours, messages)


def test_llama_biases_are_in_the_file_in_llama_cpp_layout(interop_tokenizer_dir, tmp_path):
    """transformers' GGUF loader has no Llama biases, so the file itself is read: every bias is there,
    q/k rows (and their biases) interleaved per head as llama.cpp's llama rotates them."""
    import gguf
    from safetensors.torch import load_file
    from training.interop.gguf import _llama_interleave
    src = random_export(tmp_path / "llama-bias" / "export", interop_tokenizer_dir, bias=True, **LLAMA)
    out = export(str(src), "gguf", tmp_path / "gguf")
    tensors = {t.name: torch.from_numpy(t.data.copy()) for t in gguf.GGUFReader(out).tensors}
    state = load_file(str(src / "model.safetensors"))
    d, heads = 64, 2
    q_bias = state["h.1.attn.c_attn.bias"][:d]
    assert torch.equal(tensors["blk.1.attn_q.bias"], _llama_interleave(q_bias, heads))
    assert not torch.equal(tensors["blk.1.attn_q.bias"], q_bias)          # the interleave did move rows
    assert torch.equal(tensors["blk.1.attn_v.bias"], state["h.1.attn.c_attn.bias"][2 * d:])
    assert torch.equal(tensors["blk.1.attn_k.weight"], _llama_interleave(state["h.1.attn.c_attn.weight"][d:2 * d], heads))
    assert {"blk.0.ffn_gate.bias", "blk.0.ffn_up.bias", "blk.0.ffn_down.bias", "blk.0.attn_output.bias"} <= set(tensors)


def big_weight(src, tmp_path, value: float):
    import shutil
    from safetensors.torch import load_file, save_file
    big = tmp_path / f"big{value:g}" / "export"
    shutil.copytree(src, big)
    state = load_file(str(big / "model.safetensors"))
    state["h.1.attn.c_proj.weight"][0, 0] = value
    save_file(state, str(big / "model.safetensors"), metadata={"format": "crawl2chat-gpt"})
    return big


def test_a_dtype_is_refused_where_a_weight_overflows_what_it_is_stored_in(sources, tmp_path, capsys):
    """F16 holds |w| <= 65504; Q8_0 stores int8 values times an F16 scale per block of 32, so up to
    127 x 65504; BF16 has F32's range."""
    import gguf
    big = big_weight(sources["gpt2"], tmp_path, -1.0e5)
    assert cli(["export", str(big), "--format", "gguf", "--dtype", "f16", "--out", str(tmp_path / "f16")]) == 2
    err = capsys.readouterr().err.strip()
    assert "transformer.h.1.attn.c_proj.weight reaches |w| = 100000, more than float16 holds" in err
    assert "\n" not in err and not (tmp_path / "f16").exists()
    for dtype in ("q8_0", "bf16"):
        out = export(str(big), "gguf", tmp_path / dtype, dtype=dtype)
        [t] = [t for t in gguf.GGUFReader(out).tensors if t.name == "blk.1.attn_output.weight"]
        w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(64, 64)
        assert w[0, 0] == pytest.approx(-1.0e5, rel=1e-2)   # not an inf or a wrapped value
    huge = big_weight(sources["gpt2"], tmp_path, 1.0e7)
    assert cli(["export", str(huge), "--format", "gguf", "--dtype", "q8_0", "--out", str(tmp_path / "q")]) == 2
    assert "reaches |w| = 1e+07, more than q8_0 holds" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
