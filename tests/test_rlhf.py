"""RLHF: preference pairs validated with rejects aside, the reward model's scalar head and pairwise
loss, and (slow) the two stages on the toy task with the real trainer: the reward model ranks held-out
pairs clearly above chance, and the policy stage raises its score with the KL inside the bound."""
import json

import pytest
import torch

from rl_fixtures import tiny_tokenizer_dir, toy_chat_export  # noqa: F401 (fixtures)
from training.config import load_config
from training.model import GPT, preset
from training.rl.gates import rlhf_gate
from training.rl.preferences import read_pairs, user_pairs, write_pairs
from training.rl.reward_model import RewardModel, pad_rows, pair_batch, pair_loss


def test_user_pairs_are_validated_and_bad_rows_kept_aside(tmp_path):
    good = {"prompt": "Write a haiku about rain", "chosen": "Soft rain on the roof", "rejected": "Rain."}
    rows = [json.dumps(good),
            json.dumps({"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
                        "chosen": "Hello! How can I help?", "rejected": "What."}),
            json.dumps({"prompt": "x", "chosen": "same", "rejected": "same"}),
            json.dumps({"prompt": "x", "chosen": "a"}),
            json.dumps({"chosen": "a", "rejected": "b"}),
            "{not json",
            json.dumps(good)]
    f = tmp_path / "prefs.jsonl"
    f.write_text("\n".join(rows) + "\n")
    kept, rejected, stats = user_pairs([str(f)])
    assert [r["chosen"] for r in kept] == ["Soft rain on the roof", "Hello! How can I help?"]
    assert stats == {"rows": 7, "kept": 2, "rejected": 5, "reasons": stats["reasons"]}
    reasons = {r["line"]: r["reason"] for r in rejected}
    assert "same reply" in reasons[3] and "prefs.jsonl:4.rejected" in reasons[4]
    assert "prompt" in reasons[5] and "not a JSON object" in reasons[6] and "duplicate of prefs.jsonl:1" in reasons[7]
    assert all(r["file"] == str(f) and r["row"] for r in rejected)
    out = write_pairs(kept, tmp_path / "pairs", rejected)
    assert len((out / "rejected.jsonl").read_text().splitlines()) == 5
    back = read_pairs(out)
    assert [r["prompt"] for r in back][0] == [{"role": "user", "content": "Write a haiku about rain"}]
    assert {r["split"] for r in back} <= {"train", "heldout"}


def test_reward_model_scores_the_last_real_token_and_ignores_padding():
    torch.manual_seed(0)
    rm = RewardModel.from_gpt(GPT(preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=16, vocab_size=50)))
    a, b = [3, 4, 5, 6, 7], [8, 9]
    idx, last = pad_rows([a, b])
    together = rm(idx, last)
    alone = torch.cat([rm(*pad_rows([a])), rm(*pad_rows([b]))])
    assert torch.allclose(together, alone, atol=1e-6) and together.shape == (2,)
    # Bradley-Terry: -log σ(r_c - r_r), summed over pairs; count = pairs
    mb = pair_batch([(a, b), (b, a)])
    loss, n = pair_loss(rm, mb)
    r = rm(mb["x"], mb["last"])
    expected = -torch.nn.functional.logsigmoid(r[:2] - r[2:]).sum()
    assert int(n) == 2 and loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert rm.value_head.weight.grad is not None and torch.count_nonzero(rm.value_head.weight.grad)


@pytest.mark.slow
def test_reward_model_then_rlhf_on_generated_pairs(toy_chat_export, tmp_path):
    from training.engine.engine import Engine
    from training.rl import reward_model, rlhf
    from training.rl.preferences import generated_pairs
    torch.set_num_threads(1)
    rows, stats = generated_pairs(Engine.load(toy_chat_export, tools={}), "toy", 90, samples=4, max_tokens=12)
    held = [r for r in rows if r["split"] == "heldout"]
    assert len(held) >= 10 and stats["sampled_chosen"] > 0 and stats["sampled_rejected"] > 0
    assert all(r["chosen"] != r["rejected"] for r in rows)
    pairs = write_pairs(rows, tmp_path / "pairs")
    base = [f"model.init_from={toy_chat_export}", "log.mlflow=false", "checkpoint.every=0", "rl.tools=false",
            "rl.max_tokens=12"]
    rm_cfg = load_config("training/configs/rlhf.yaml", base + ["reward_model.steps=30", "reward_model.lr=1e-3",
                                                                "reward_model.eval_every=10"], job="rm")
    s = reward_model.train(rm_cfg, pairs, tmp_path / "rm")
    acc = s["final"]["rm/accuracy"]
    print(f"reward model: held-out pairwise accuracy {s['start_rm_accuracy']:.3f} -> {acc:.3f} "
          f"on {s['heldout_pairs']} held-out pairs ({s['train_pairs']} train)")
    assert acc >= 0.75 and s["heldout_pairs"] == len(held)
    assert s["final"]["val/loss"] < s["start_val_loss"]     # the head learned; a random one ranks by luck
    assert json.loads((tmp_path / "rm" / "export" / "config.json").read_text())["reward_model"] is True

    kl_max = 1.0
    cfg = load_config("training/configs/rlhf.yaml", base + [
        "train.steps=10", "train.lr=1e-3", "train.micro_batch=32", "eval.every=5", "rl.kl_coef=0.1",
        f"rl.kl_max={kl_max}", "rl.patience=null"], job="rlhf")
    p = rlhf.train(cfg, pairs, tmp_path / "rm" / "export", tmp_path / "rlhf")
    before, after = p["start_heldout_reward"], p["final"]["heldout/reward"]
    kls = [h["rl/kl"] for h in p["history"]]
    print(f"RLHF: held-out reward-model score {before:.3f} -> {after:.3f}, final held-out KL "
          f"{p['final']['heldout/kl']:.3f} (bound {kl_max}), per-step KL max {max(kls):.3f}")
    assert after > before + 0.5
    assert p["final"]["heldout/kl"] <= kl_max and max(kls) <= kl_max and p["stopped_early"] is None


@pytest.mark.slow
def test_rlhf_stops_early_when_the_kl_passes_its_bound(toy_chat_export, tmp_path):
    """A leash far tighter than the updates: the run stops at the first step past it and exports the
    last policy within it (here the starting one), which its check then fails: RLHF did nothing."""
    from training.engine.engine import Engine
    from training.rl import rlhf
    from training.rl.preferences import generated_pairs
    from training.rl.reward_model import RewardModel
    from training.export import export_state, load_model
    torch.set_num_threads(1)
    rows, _ = generated_pairs(Engine.load(toy_chat_export, tools={}), "toy", 40, samples=2, max_tokens=12)
    pairs = write_pairs(rows, tmp_path / "pairs")
    rm = RewardModel.from_gpt(load_model(toy_chat_export))     # an untrained head is enough to push on
    export_state({k: v for k, v in rm.state_dict().items()}, rm.config, tmp_path / "rm", toy_chat_export,
                 extra={"reward_model": True})
    cfg = load_config("training/configs/rlhf.yaml", [
        f"model.init_from={toy_chat_export}", "log.mlflow=false", "checkpoint.every=0", "rl.tools=false",
        "rl.max_tokens=12", "train.steps=10", "train.lr=1e-2", "train.micro_batch=32", "eval.every=0",
        "rl.kl_coef=0", "rl.kl_max=0.001", "rl.heldout_problems=4", "rl.eval_samples=2"], job="rlhf")
    p = rlhf.train(cfg, pairs, tmp_path / "rm", tmp_path / "run")
    assert p["stopped_early"] and "rl.kl_max" in p["stopped_early"] and p["step"] < 10
    assert p["history"][-1]["rl/kl"] > 0.001 and "heldout/kl" in p["history"][-1]    # evaluated where it stopped
    assert (tmp_path / "run" / "export" / "model.safetensors").exists()
    assert p["exported_rolled_back"] and p["exported_step"] == 0 and p["exported_heldout_kl"] <= 0.001
    start, exported = load_model(toy_chat_export).state_dict(), load_model(tmp_path / "run" / "export").state_dict()
    assert all(torch.equal(start[k], exported[k]) for k in start)
    ok, meta = rlhf_gate(p["history"], p, 0.001)
    assert not ok and meta["heldout_kl"] <= 0.001 and meta["reward_after"] == meta["reward_before"]
