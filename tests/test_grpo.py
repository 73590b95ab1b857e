"""GRPO's math by hand (advantages, loss, masks, k3), the rollout rows' masks, and the task sets'
splits and checkers. Fast: no trainer, no DeepSpeed."""
import json
import math

import pytest
import torch

from pipelines.errors import ConfigError, InputError
from training.engine.engine import Completion
from engine_fixtures import tiny_tok, tiny_tokenizer_dir  # noqa: F401 (fixtures)
from training.model import GPT, preset
from training.rl.grpo import group_advantages, grpo_loss, k3, zero_variance_fraction
from training.rl.rollout import sequences
from training.tasks import load_task
from training.trainer import IGNORE


def test_hand_computed_group_advantages_and_loss():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    adv = group_advantages(rewards)
    assert adv.tolist() == [[0.5, -0.5, -0.5, 0.5]]
    # population std of {1, 0, 0, 1} is 0.5: scaled advantages are +-1
    assert group_advantages(rewards, scale_std=True, eps=0.0).tolist() == [[1.0, -1.0, -1.0, 1.0]]
    # four replies of 2, 1, 3, 1 sampled tokens (one update per batch: ratio 1)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    logp = torch.log(torch.full((4, 3), 0.5)).requires_grad_()
    loss, _ = grpo_loss(logp, adv.view(-1), mask)
    # sum over sampled tokens of -A: -(0.5*2 - 0.5*1 - 0.5*3 + 0.5*1) = 0.5
    assert loss.item() == pytest.approx(0.5)
    loss.backward()
    expected = -adv.view(-1, 1).expand(4, 3) * mask
    assert torch.equal(logp.grad, expected)


def test_masked_tokens_get_exactly_zero_gradient():
    logp = torch.randn(3, 5).requires_grad_()
    mask = torch.rand(3, 5) > 0.5
    old = logp.detach() + 0.3 * torch.randn(3, 5)
    ref = logp.detach() + 0.3 * torch.randn(3, 5)
    loss, _ = grpo_loss(logp, torch.tensor([1.0, -2.0, 0.5]), mask, old_logp=old, ref_logp=ref, kl_coef=0.1)
    loss.backward()
    assert torch.all(logp.grad[~mask] == 0) and torch.any(logp.grad[mask] != 0)


def test_masked_positions_do_not_reach_the_model():
    """Through a real GPT: a reply whose targets are all masked (prompt, forced output, padding) adds
    exactly nothing: the gradient equals that of the batch without it."""
    torch.manual_seed(0)
    model = GPT(preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=16, vocab_size=50))
    x, y = torch.randint(50, (2, 10)), torch.randint(50, (2, 10))
    y[:, :4] = IGNORE           # the prompt
    y[0, 6:8] = IGNORE          # a forced tool output
    y[1] = IGNORE               # nothing sampled in row 1
    adv = torch.tensor([1.0, -1.0])

    def grads(x, y, adv):
        model.zero_grad()
        loss, _ = grpo_loss(-model(x, y, reduction="none"), adv, y != IGNORE)
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]
    both, alone = grads(x, y, adv), grads(x[:1], y[:1], adv[:1])
    assert all(torch.allclose(g, h, atol=1e-7) for g, h in zip(both, alone))
    assert any(torch.count_nonzero(g) for g in both)


def test_group_with_equal_rewards_contributes_nothing():
    rewards = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]])
    adv = group_advantages(rewards, scale_std=True)
    assert torch.equal(adv[0], torch.zeros(4))
    assert zero_variance_fraction(rewards) == 0.5
    torch.manual_seed(0)
    model = GPT(preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=16, vocab_size=50))
    x, y = torch.randint(50, (4, 8)), torch.randint(50, (4, 8))
    loss, _ = grpo_loss(-model(x, y, reduction="none"), adv[0], torch.ones(4, 8, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.parameters())


def test_k3_by_hand_and_as_an_unbiased_kl():
    # pi(t) = 0.5, ref(t) = 0.25: log r = log 0.5; k3 = r - log r - 1 = 0.5 + ln 2 - 1
    assert k3(torch.log(torch.tensor(0.5)), torch.log(torch.tensor(0.25))).item() == pytest.approx(0.5 + math.log(2) - 1)
    assert k3(torch.tensor(-1.2), torch.tensor(-1.2)).item() == 0.0
    # its expectation under pi is exactly KL(pi || ref)
    pi, ref = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.3, 0.3, 0.4])
    expected_k3 = (pi * k3(pi.log(), ref.log())).sum()
    assert expected_k3.item() == pytest.approx((pi * (pi / ref).log()).sum().item(), rel=1e-6)
    # the loss adds kl_coef * k3 per sampled token and reports its sum
    logp, ref_logp = torch.log(torch.tensor([[0.5, 0.5]])), torch.log(torch.tensor([[0.25, 0.5]]))
    loss, stats = grpo_loss(logp, torch.tensor([0.0]), torch.tensor([[True, True]]), ref_logp=ref_logp, kl_coef=2.0)
    assert stats["kl_sum"] == pytest.approx(0.5 + math.log(2) - 1)
    assert loss.item() == pytest.approx(2.0 * (0.5 + math.log(2) - 1))


def test_ratio_clip_stops_the_gradient_outside_the_trust_region():
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    logp = torch.log(torch.tensor([[0.8, 0.55]])).requires_grad_()   # ratios 1.6 (clipped) and 1.1
    loss, stats = grpo_loss(logp, torch.tensor([1.0]), torch.tensor([[True, True]]), old_logp=old, clip_eps=0.2)
    loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] == pytest.approx(-1.1)
    assert stats["clipped"] == 1.0


def test_rollout_rows_train_only_sampled_tokens():
    prompt = [9, 8, 7]
    # reply: text, a tool call, its forced output (3 tokens), more text, <|im_end|>
    c = Completion(tokens=[1, 2, 3, 4, 5, 6, 11], sampled=[True, True, False, False, False, True, True],
                   finish_reason="stop", text="")
    short = Completion(tokens=[1], sampled=[True], finish_reason="length", text="")
    x, y, last = sequences([prompt, prompt], [c, short])
    assert x.shape == (2, 9)
    assert x[0].tolist() == [9, 8, 7, 1, 2, 3, 4, 5, 6]
    assert y[0].tolist() == [IGNORE, IGNORE, 1, 2, IGNORE, IGNORE, IGNORE, 6, 11]
    assert y[1].tolist() == [IGNORE, IGNORE, 1] + [IGNORE] * 6      # padding masked
    assert last.tolist() == [8, 2]


@pytest.mark.parametrize("task", ["toy", "arithmetic", "counting", "spelling"])
def test_task_splits_never_overlap_and_references_pass_their_checker(task):
    train, held = load_task(task, "train", 300), load_task(task, "heldout", 100)
    assert train and held
    assert not {i.id for i in train} & {i.id for i in held}
    assert not {json.dumps(i.messages) for i in train} & {json.dumps(i.messages) for i in held}
    for it in train[:20] + held[:20]:
        assert it.messages[-1]["role"] == "user"
        assert it.check(it.reference)[0], (it.id, it.reference)
        assert not it.check("No idea.")[0]


def test_toy_task_rewards_only_the_exact_format():
    [item] = [i for i in load_task("toy", "train") + load_task("toy", "heldout") if i.id == "echo:47"]
    assert item.messages == [{"role": "user", "content": "Repeat 47."}]
    assert item.check("Answer: 47")[0] and item.check(" Answer: 47\n")[0]
    assert not item.check("47")[0] and not item.check("It is 47.")[0] and not item.check("Answer: 48")[0]


def test_user_task_file(tmp_path):
    f = tmp_path / "tasks.jsonl"
    rows = [{"prompt": "What is 6 * 7?", "answer": 42, "split": "train"},
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
             "answer": "Paris", "check": "contains", "split": "heldout"},
            {"prompt": "Say yes", "answer": "yes", "check": "exact", "split": "train"}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    train, held = load_task(str(f), "train"), load_task(str(f), "heldout")
    assert [i.answer for i in train] == ["42", "yes"] and [i.answer for i in held] == ["Paris"]
    assert train[0].check("The answer is 42.")[0] and not train[0].check("41")[0]     # numeric
    assert train[1].check(" yes ")[0] and not train[1].check("yes!")[0]                # exact
    assert held[0].check("It is Paris.")[0] and held[0].messages[0]["role"] == "system"
    for bad, field in [({"prompt": "x"}, "answer"), ({"answer": "1"}, "prompt"),
                       ({"prompt": "x", "answer": "a", "check": "numeric"}, "answer"),
                       ({"prompt": "x", "answer": "1", "check": "fuzzy"}, "check"),
                       ({"prompt": "x", "answer": "1", "split": "val"}, "split")]:
        f.write_text(json.dumps(bad) + "\n")
        with pytest.raises(InputError, match=rf"tasks.jsonl:1.*{field}"):
            load_task(str(f), "train")
    f.write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[0]) + "\n")
    with pytest.raises(InputError, match="tasks.jsonl:2: the same prompt"):
        load_task(str(f), "train")
    with pytest.raises(ConfigError, match="rl.task"):
        load_task("nonsense", "train")


def test_rl_configs_check_their_keys():
    from training.config import load_config
    cfg = load_config("training/configs/rl.yaml", ["rl.group_size=4"], job="rl")
    assert cfg["rl"]["group_size"] == 4 and cfg["train"]["batch_tokens"] is None
    with pytest.raises(ConfigError, match="rl.group_sise.*did you mean 'rl.group_size'"):
        load_config("training/configs/rl.yaml", ["rl.group_sise=4"], job="rl")
    for job in ("rm", "rlhf"):
        cfg = load_config("training/configs/rlhf.yaml", [], job=job)
        assert cfg["rl"]["kl_max"] == 0.5 and cfg["reward_model"]["batch_pairs"] == 16
    with pytest.raises(ConfigError, match="reward_model.stepz"):
        load_config("training/configs/rlhf.yaml", ["reward_model.stepz=3"], job="rm")


# ---- the training forward scores what the rollouts sampled ---------------------------------------

def _tiny_policy(vocab: int = 97, block: int = 16) -> GPT:
    torch.manual_seed(0)
    return GPT(preset("tiny", n_layer=1, n_embd=32, n_head=2, block_size=block, vocab_size=vocab))


def test_grpo_loss_and_entropy_are_those_of_the_tempered_distribution_through_checkpointed_chunks():
    """At rl.temperature 0.7 the loss's log-probs and gradient are those of softmax(logits / 0.7), also
    when the head runs in checkpointed chunks (backward recomputes them: the tempering must hold
    there too), and the entropy is summed per chunk, over sampled tokens only, once."""
    import copy
    from types import SimpleNamespace

    from training.rl.job import GRPO
    from training.rl.rollout import token_logprobs
    T = 0.7
    policy = _tiny_policy()
    plain = copy.deepcopy(policy)             # the same weights, no hook: the reference computation
    policy.loss_chunk = 2 * 16                # 2 rows per chunk: 3 checkpointed chunks of 6 rows
    source = SimpleNamespace(policy=policy, device=torch.device("cpu"))
    grpo = GRPO(source, {"temperature": T, "clip_eps": 0.2, "kl_coef": 0.0}, [], seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(97, (6, 16), generator=g)
    y = torch.randint(97, (6, 16), generator=g)
    y[:, :5] = IGNORE
    y[2] = IGNORE
    mb = {"x": x, "y": y, "adv": torch.tensor([1.0, -0.5, 0.3, 0.0, -1.0, 0.7])}
    loss, n = grpo.loss(policy, mb)
    loss.backward()

    mask = y != IGNORE
    logits = plain.lm_head(plain._trunk(x, None)).float() / T
    logp = torch.log_softmax(logits, -1).gather(-1, y.clamp(min=0)[..., None])[..., 0]
    ref_loss, _ = grpo_loss(logp, mb["adv"], mask)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss)
    assert int(n) == int(mask.sum())
    for (name, a), b in zip(policy.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    with torch.no_grad():
        m = logits[mask]
        entropy = -(torch.softmax(m, -1) * torch.log_softmax(m, -1)).sum()
    assert grpo.sums["entropy_sum"] == pytest.approx(float(entropy), rel=1e-5)
    # the no-grad log-probs (old policy, reference, held-out KL) temper the same way, and only once
    torch.testing.assert_close(token_logprobs(policy, x, y, T)[mask], logp.detach()[mask])


def test_rl_refuses_truncated_sampling_for_training_rollouts():
    from training.config import load_config
    from training.rl.job import grpo_setup
    from training.trainer import Dist
    d = Dist(0, 1, 0, torch.device("cpu"), False)
    for key, value in (("top_k", 50), ("top_p", 0.9)):
        cfg = load_config(None, [f"rl.{key}={value}", "model.init_from=x"], job="rl")
        with pytest.raises(ConfigError, match=rf"rl.{key}: training rollouts sample the policy's own"):
            grpo_setup(cfg, d, _tiny_policy(block=64), None, None, load_task("toy", "train", 8))


def test_reference_forward_only_where_the_kl_is_used(tiny_tok):
    """kl_coef 0 and no kl_max: the reference runs no forward per rollout (the KL is measured at
    evaluation); with either, every rollout row is scored by it."""
    from training.engine.engine import Engine
    from training.rl.rollout import RolloutSource
    policy = _tiny_policy(vocab=tiny_tok.vocab_size, block=64)
    calls = []
    reference = _tiny_policy(vocab=tiny_tok.vocab_size, block=64)
    reference.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    base = {"prompts_per_step": 2, "group_size": 2, "max_tokens": 4, "temperature": 1.0, "scale_std": False,
            "updates_per_batch": 1, "log_rollouts": 0, "kl_max": None}
    for kl_coef, kl_max, scored in ((0.0, None, 0), (0.1, None, 2), (0.0, 0.5, 2)):
        calls.clear()
        rl = {**base, "kl_coef": kl_coef, "kl_max": kl_max}
        src = RolloutSource(Engine(_tiny_policy(vocab=tiny_tok.vocab_size, block=64), tiny_tok, tools={}),
                            policy, reference, load_task("toy", "train", 8), rl, micro_batch=2, grad_accum=2,
                            rank=0, world=1, seed=0)
        mbs = [src.next_batch() for _ in range(2)]
        assert len(calls) == scored and all(("ref_logp" in mb) == bool(scored) for mb in mbs)
