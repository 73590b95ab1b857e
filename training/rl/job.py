"""RL on verifiable tasks with GRPO: the chat model practises problems and learns from the replies
that reach the checked answer (the seed talk's third stage, DeepSeek-R1 style).

    deepspeed --num_gpus 8 --module training.rl.job --config training/configs/rl.yaml \
        --data arithmetic --init-from crawl2chat-chat@candidate --out lake/models/rl/run1
    python -m training.rl.job --config training/configs/rl.yaml --data toy --out <dir>     # 1 process

A job of the shared trainer (training/trainer.py), like pretraining and SFT: same engine, config
derivation, checkpoints, exact resume, export, MLflow and Pipes. Each optimizer step:
  1. rollouts (training/rl/rollout.py): prompts_per_step task prompts, group_size replies each, sampled
     through the inference engine with the policy's current weights (temperature ~1, distinct seeds,
     tools executed, forced tool output marked);
  2. reward: the task's checker (1 for a reply that ends its turn with the right answer, else 0);
  3. group-centred advantages and the GRPO loss on sampled tokens only (training/rl/grpo.py), summed
     and divided by the step's global sampled-token count (token-level averaging), optionally a k3 KL
     to the frozen starting model, ratio + clip when rollouts serve several updates.
Log-probs, KL and entropy are those of softmax(logits / rl.temperature), the distribution the rollouts
sampled (top-k / top-p are refused). Logged per step: mean reward, the share of groups with zero reward
variance, reply length, stop rate, entropy, rollout vs training time, the KL when rl.kl_coef or
rl.kl_max uses it (else the reference runs at evaluation only: heldout/kl); every eval.every steps
held-out pass@1 and pass@k (the same held-out items and seeds each time, split over the ranks, and
before the first step: the starting model's figures are in the report); every rl.log_rollouts_every
steps sample rollouts as text artifacts (rollouts/).
training/rl/rlhf.py runs the same loop with a reward model's score as the reward.
"""
from __future__ import annotations

import copy
import json
import math

import torch

from pipelines.errors import ConfigError, InputError
from training.config import load_config
from training.evals.core import pass_at_k, row_seed
from training.rl.grpo import grpo_loss, k3
from training.rl.rollout import (RolloutSource, render_prompts, rollout_params, sequences, sync_weights,
                                 token_logprobs, verifiable_reward)
from training.job_cli import cli_main, job_arg_parser, job_overrides
from training.tracking import device_name, peak_flops, processed_throughput
from training.trainer import IGNORE, Job, all_reduce_sum, build_model, resolve_export, run, start

PASS_AT = (1, 2, 4, 8, 16, 32)


class GRPO:
    """The parts of a trainer Job that make it GRPO: the loss, the per-step figures, the held-out
    evaluation and early stopping, around a RolloutSource.

    Ranks agree by construction: the held-out evaluation is split over the ranks and summed (every
    rank gets the same figures), and the early-stopping decision is taken by rank 0 and broadcast,
    so no rank can leave the loop (and enter the export's collectives) while another trains on."""

    def __init__(self, source: RolloutSource, rl: dict, heldout: list, seed: int, verifiable: bool = True):
        self.source, self.rl, self.heldout, self.seed, self.verifiable = source, rl, heldout, seed, verifiable
        self.sums: dict[str, float] = {}
        self.best, self.since_best = -math.inf, 0
        # The leash (rl.kl_max): the run exports the last evaluated policy whose held-out KL is within it.
        # The per-step KL that stops the run lags the weights by a step and is measured on other prompts;
        # the held-out KL the check reads was 0.57 where the step's was 0.45 (demo, bound 0.5).
        self.kl_max = None if rl.get("kl_max") is None else float(rl["kl_max"])
        self.step = 0
        self.last_eval: dict = {}
        self.on_leash: tuple[dict, dict | None] | None = None   # (figures with their step, weights on rank 0)
        self.report: dict = {}        # the job's report (summary.json): what was exported, from which step
        self.temperature = float(rl["temperature"])
        self._entropy: dict | None = None   # during a loss forward: the mask, the rows seen, the sum
        # The training forward scores log-probs under softmax(logits / T), the rollouts' distribution.
        # A hook that stays (not a block around the forward): backward recomputes checkpointed loss
        # chunks through the head, and must see the same logits. It acts on grad-enabled forwards only:
        # the no-grad ones (old/ref log-probs, the held-out KL) temper through rollout.tempered.
        # The rollout engine holds a copy made before this hook, so it samples untempered logits / T once.
        source.policy.lm_head.register_forward_hook(self._head)
        self.fpt = source.policy.flops_per_token
        self.peak = peak_flops(device_name()) if source.device.type == "cuda" else None

    def _head(self, module, args, out):
        if not torch.is_grad_enabled():
            return None
        if self.temperature != 1.0:
            out = out / self.temperature
        if self._entropy is not None:   # the loss forward (not backward's recompute): entropy per chunk,
            e = self._entropy           # so no chunk's logits outlive it
            mask = e["mask"][e["rows"]:e["rows"] + out.size(0)]
            e["rows"] += out.size(0)
            with torch.no_grad():
                logits = out.detach()[mask].float()
                e["sum"] += -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum()
        return out

    def count(self, mb: dict) -> int:
        return int((mb["y"] != IGNORE).sum())

    def loss(self, engine, mb: dict) -> tuple[torch.Tensor, torch.Tensor]:
        mask = mb["y"] != IGNORE
        self._entropy = {"mask": mask, "rows": 0, "sum": torch.zeros((), device=mask.device)}
        try:
            nll = engine(mb["x"], mb["y"], reduction="none")
            entropy = self._entropy["sum"]
        finally:
            self._entropy = None
        loss_sum, stats = grpo_loss(-nll.float(), mb["adv"], mask, mb.get("old_logp"), mb.get("ref_logp"),
                                    clip_eps=float(self.rl["clip_eps"]), kl_coef=float(self.rl["kl_coef"]))
        B, T = mb["x"].shape
        for k, v in {**stats, "entropy_sum": float(entropy), "tokens": float(mask.sum()),
                     "positions": float(B * T), "train_flops": B * T * self.fpt(T)}.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        return loss_sum, mask.sum()

    def after_step(self, rec: dict) -> tuple[dict, dict]:
        """The step's figures, summed over ranks (collective), and sample rollouts every N steps.
        train/tokens_per_s and train/mfu are replaced by what the step processed (the trainer's
        count rows x context, while rows are padded only to their own micro-batch's longest)."""
        self.step = rec["step"]
        batch, fresh = self.source.last, self.source.rolled
        self.source.rolled = False
        roll = {k: (v if fresh or not k.endswith("_s") else 0.0) for k, v in batch.stats.items()}
        local = {**roll, **self.sums}
        keys = sorted(local)
        vals = dict(zip(keys, all_reduce_sum([local[k] for k in keys], self.source.device)))
        self.sums = {}
        world = self.source.world
        rollout_s = (vals["rollout_s"] + vals["reward_s"] + vals["logprob_s"]) / world   # ranks run in parallel
        step_s = rec["train/step_ms"] / 1000
        train_s = max(step_s - rollout_s, 1e-9)
        tok = max(vals.get("tokens", 0.0), 1.0)
        positions = vals.get("positions", 0.0)
        # FLOPs of the step: training forward + backward of every position, and when this step
        # rolled out, the forwards of sampling (prompts and generated tokens) and of the old /
        # reference log-probs: a third of a training position each (2N of 6N).
        flops = vals.get("train_flops", 0.0)
        if fresh:
            infer = vals["prompt_tokens"] + vals["completion_tokens"] + vals["scored_positions"]
            flops += infer * self.fpt(max(1, round(positions / max(vals["rows"], 1)))) / 3
        m = {"rl/reward": vals["reward_sum"] / vals["rows"],
             "rl/zero_variance_groups": vals["zero_variance_groups"] / vals["groups"],
             "rl/completion_tokens": vals["completion_tokens"] / vals["rows"],
             "rl/stop_rate": vals["stopped"] / vals["rows"],
             "rl/tool_calls_per_reply": vals["tool_calls"] / vals["rows"],
             "rl/entropy": vals.get("entropy_sum", 0.0) / tok,
             "rl/clip_fraction": vals.get("clipped", 0.0) / tok,
             "rl/rollout_s": rollout_s, "rl/train_s": train_s,
             "rl/rollout_tokens_per_s": vals["completion_tokens"] / vals["rollout_s"] * world if fresh else None,
             "rl/train_tokens_per_s": positions / train_s,
             **processed_throughput(positions, flops, step_s, world, self.peak)}
        if "kl_sum" in vals:
            m["rl/kl"] = vals["kl_sum"] / tok
        texts = {}
        every = int(self.rl["log_rollouts_every"] or 0)
        if every and (rec["step"] % every == 0 or rec["step"] == 1) and fresh and batch.examples:
            texts[f"rollouts/step_{rec['step']:08d}.txt"] = rollout_text(batch.examples, rec["step"])
        return {k: v for k, v in m.items() if v is not None}, texts

    @torch.no_grad()
    def evaluate(self, engine=None) -> dict:
        """Held-out figures of the policy's current weights (collective): eval_samples replies per
        held-out item with fixed seeds (so only the weights move the score); pass@k when rewards are
        verifiable. Each rank samples its share of the items (item i on rank i % world, as nanochat
        splits its evaluations) and the sums are all-reduced, so every rank holds the same figures."""
        if not self.heldout:
            return {}
        src, n = self.source, int(self.rl["eval_samples"])
        sync_weights(src.engine.model, src.policy)
        mine = self.heldout[src.rank::src.world]
        items = [it for it in mine for _ in range(n)]
        seeds = [row_seed(self.seed, "heldout", it.id, j) for it in mine for j in range(n)]
        T = float(self.rl["eval_temperature"])
        params = rollout_params({**self.rl, "temperature": T})
        prompts = render_prompts(src.engine.tokenizer, items)
        done = src.engine.generate(prompts, params, seeds=seeds) if items else []
        rewards = src.reward_fn(items, done, src.engine.tokenizer)[0] if items else []
        ks = [k for k in PASS_AT if k <= n] if self.verifiable else []
        local = {"reward": sum(rewards), "rows": len(done), "completion_tokens": sum(len(c.tokens) for c in done),
                 "kl": 0.0, "kl_tokens": 0.0,
                 **{f"pass_at_{k}": sum(pass_at_k(n, int(sum(rewards[i * n:(i + 1) * n])), k) for i in range(len(mine)))
                    for k in ks}}
        if src.reference is not None:   # the KL of these weights (rl/kl is of the rollouts' weights),
            for s in range(0, len(done), src.micro_batch):   # scored at the temperature that sampled
                x, y, _ = sequences(prompts[s:s + src.micro_batch], done[s:s + src.micro_batch])
                x, y = x.to(src.device), y.to(src.device)
                mask = y != IGNORE
                per = k3(token_logprobs(src.policy, x, y, T), token_logprobs(src.reference, x, y, T))
                local["kl"] += float(per[mask].sum())
                local["kl_tokens"] += float(mask.sum())
        keys = sorted(local)
        tot = dict(zip(keys, all_reduce_sum([float(local[k]) for k in keys], src.device)))
        out = {"heldout/reward": tot["reward"] / tot["rows"], "heldout/problems": len(self.heldout),
               "heldout/completion_tokens": tot["completion_tokens"] / tot["rows"]}
        if src.reference is not None:
            out["heldout/kl"] = tot["kl"] / max(tot["kl_tokens"], 1.0)
        out.update({f"heldout/pass_at_{k}": tot[f"pass_at_{k}"] / len(self.heldout) for k in ks})
        self._keep_if_on_leash(out, engine)
        return out

    def _keep_if_on_leash(self, figures: dict, engine) -> None:
        """Under rl.kl_max, a copy of the evaluated weights when their held-out KL is within it: the
        fp32 master copy the export writes (collective, like the export), or before the first step
        (no engine yet) the starting weights. One model's weights in host memory."""
        self.last_eval = {"step": self.step, **figures}
        if self.kl_max is None or figures.get("heldout/kl") is None or self._past_leash(figures):
            return
        if engine is not None:
            from training.export import gather_state_dict
            state = gather_state_dict(engine)
        else:
            state = {n: p.detach().to("cpu", torch.float32).clone()
                     for n, p in self.source.policy.named_parameters()} if self.source.rank == 0 else None
        self.on_leash = (dict(self.last_eval), state)

    def _past_leash(self, figures: dict) -> bool:
        """Figures of an evaluation whose held-out KL is past rl.kl_max."""
        kl = figures.get("heldout/kl")
        return self.kl_max is not None and kl is not None and kl > self.kl_max

    def export_weights(self) -> tuple[bool, dict | None]:
        """The trainer's export hook: when the last evaluation found the policy past rl.kl_max, export
        the last policy within it instead (True, its weights). Every rank gets the same answer (the
        figures are all-reduced). Records what was exported in the report either way."""
        over = self._past_leash(self.last_eval) and self.on_leash is not None
        figures = self.on_leash[0] if over else self.last_eval
        # flat keys: the report also goes to Dagster Pipes metadata, which takes no nested dicts
        self.report.update({"exported_step": figures.get("step"), "exported_rolled_back": over,
                            **{f"exported_{k.replace('/', '_')}": v for k, v in figures.items() if k != "step"}})
        return (True, self.on_leash[1]) if over else (False, None)

    def should_stop(self, rec: dict) -> str | None:
        """Early stopping (the RLHF leash): the KL to the reference above rl.kl_max, or the held-out
        reward not improving for rl.patience evaluations in a row. Decided by rank 0 and broadcast
        (collective: the trainer calls it on every rank at every step)."""
        import torch.distributed as dist
        why = self._should_stop(rec) if self.source.rank == 0 else None
        if self.source.world > 1:
            box = [why]
            dist.broadcast_object_list(box, src=0)
            why = box[0]
        return why

    def _should_stop(self, rec: dict) -> str | None:
        kl_max, patience = self.rl.get("kl_max"), self.rl.get("patience")
        # Stop BEFORE the bound: at rl.kl_stop_fraction of it, so the exported policy (this step's)
        # is still on the leash; stopping only once past it exported a model its own check then failed.
        stop_at = float(kl_max) * float(self.rl.get("kl_stop_fraction") or 1.0) if kl_max is not None else None
        if self._past_leash(rec):
            return (f"held-out KL {rec['heldout/kl']:.4f} per token passed rl.kl_max {kl_max}: exporting the "
                    f"last policy within it (step {self.on_leash[0]['step'] if self.on_leash else '?'})")
        if stop_at is not None and rec.get("rl/kl") is not None and rec["rl/kl"] > stop_at:
            return (f"KL {rec['rl/kl']:.4f} per token passed {stop_at:.4g} "
                    f"(rl.kl_stop_fraction of rl.kl_max {kl_max})")
        if patience and rec.get("heldout/reward") is not None:
            if rec["heldout/reward"] > self.best:
                self.best, self.since_best = rec["heldout/reward"], 0
            else:
                self.since_best += 1
                if self.since_best >= int(patience):
                    return (f"held-out reward {rec['heldout/reward']:.4f} has not beaten {self.best:.4f} "
                            f"for {patience} evaluations")
        return None


def rollout_text(examples: list[dict], step: int) -> str:
    out = [f"# rollouts of step {step} (reward per reply; forced tool output shown between output markers)"]
    for group in sorted({e["group"] for e in examples}):
        rows = [e for e in examples if e["group"] == group]
        out.append(f"\n## prompt: {rows[0]['prompt']!r}  answer: {rows[0]['answer']!r}")
        out += [f"- reward {e['reward']:.3f}: {e['reply']!r}" for e in rows]
    return "\n".join(out) + "\n"


def grpo_setup(cfg: dict, d, model, export, tokenizer, items: list, reward_fn=None) -> tuple[RolloutSource, int]:
    """The rollout engine (its own copy of the policy), the frozen reference and the batch source;
    and the derived gradient accumulation (train.batch_tokens is set from the rollout batch)."""
    from training.engine.engine import Engine
    from training.engine.tools import default_tools
    from training.export import load_model
    t, rl = cfg["train"], cfg["rl"]
    if int(t["zero_stage"]) == 3:
        raise ConfigError("train.zero_stage: RL copies the policy's full parameters into the rollout engine "
                          "every step, which ZeRO-3 would first have to gather; use 0-2")
    if not items:
        raise InputError("the task has no train problems: check rl.task / --data")
    rows, mb, world = int(rl["prompts_per_step"]) * int(rl["group_size"]), int(t["micro_batch"]), d.world
    if int(rl["prompts_per_step"]) % world or rows % (mb * world):
        raise ConfigError(f"rl.prompts_per_step x rl.group_size = {rows} replies per step must split into "
                          f"micro-batches of train.micro_batch {mb} on each of {world} ranks (and the prompts "
                          "evenly over the ranks)")
    block = model.config.block_size
    derived = rows * block
    if t["batch_tokens"] not in (None, derived):
        raise ConfigError(f"train.batch_tokens: RL derives it (rl.prompts_per_step x rl.group_size x context = "
                          f"{derived}); leave it unset")
    t["batch_tokens"] = derived
    for key in ("top_k", "top_p"):
        if rl.get(key) is not None:
            raise ConfigError(f"rl.{key}: training rollouts sample the policy's own distribution at rl.temperature, "
                              f"whose log-probs the loss takes; a truncated one would bias the gradient. Remove rl.{key}")
    if int(rl["updates_per_batch"]) < 1 or int(rl["group_size"]) < 2:
        raise ConfigError("rl.updates_per_batch must be >= 1 and rl.group_size >= 2 (a group is its own baseline)")
    dtype = torch.bfloat16 if d.on_cuda and t["precision"] in ("auto", "bf16") else torch.float32
    reference = None
    if rl["reference"] or float(rl["kl_coef"]):
        reference = load_model(export, device=d.device, dtype=dtype).requires_grad_(False)
    tools = default_tools() if rl["tools"] else {}
    engine = Engine(copy.deepcopy(model), tokenizer, tools=tools, device=str(d.device))
    source = RolloutSource(engine, model, reference, items, rl, mb, rows // (mb * world), d.rank, world,
                           seed=int(t["seed"]), reward_fn=reward_fn, device=d.device)
    return source, rows // (mb * world)


def train(cfg: dict, task: str, out, resume: bool = False) -> dict:
    from pipelines.tokenizer import load_tokenizer
    from training.tasks import load_task
    d = start()
    rl = cfg["rl"]
    if not cfg["model"].get("init_from"):
        raise ConfigError("model.init_from: RL starts from a chat model: an export directory or a registered one "
                          "such as crawl2chat-chat@candidate")
    task = task or rl["task"]
    export = resolve_export(cfg["model"]["init_from"])
    tokenizer = load_tokenizer(export)
    model = build_model(cfg, init_dir=export, device=d.device)
    items = load_task(task, "train", rl["train_problems"], rl["task_seed"])
    heldout = load_task(task, "heldout", rl["heldout_problems"], rl["task_seed"])
    source, gas = grpo_setup(cfg, d, model, export, tokenizer, items, verifiable_reward)
    grpo = GRPO(source, rl, heldout, int(cfg["train"]["seed"]), verifiable=True)
    start_figures = grpo.evaluate()
    report = grpo.report
    report |= {"task": task, "train_problems": len(items), "heldout_problems": len(heldout),
              "init_export": str(export), **{f"start_{k.replace('/', '_')}": v for k, v in start_figures.items()}}
    if d.rank == 0:
        print(f"[rl] task {task}: {len(items)} train / {len(heldout)} held-out problems; "
              f"{rl['prompts_per_step']} prompts x {rl['group_size']} replies per step (grad accum {gas}); "
              f"start {json.dumps({k: round(v, 4) for k, v in start_figures.items()})}")
    job = Job(stage="rl", seq_len=model.config.block_size, batches=source, loss=grpo.loss, count=grpo.count,
              evaluate=grpo.evaluate, after_step=grpo.after_step, should_stop=grpo.should_stop,
              export_weights=grpo.export_weights, tokenizer=tokenizer, tokenizer_dir=export, params={"task": task},
              report=report)
    return run(cfg, job, model, out, resume=resume)


def main(argv: list[str] | None = None) -> dict:
    ap = job_arg_parser(__doc__, data_help="the task: toy | arithmetic | counting | spelling | a .jsonl/.parquet "
                                           "of {messages | prompt, answer} (default: rl.task)")
    ap.add_argument("--init-from", help="shorthand for --set model.init_from=SOURCE (export dir or NAME@ALIAS)")
    args = ap.parse_args(argv)
    overrides = job_overrides(args) + ([f"model.init_from={args.init_from}"] if args.init_from else [])
    cfg = load_config(args.config, overrides, job="rl")
    return train(cfg, args.data, args.out, resume=args.resume)


if __name__ == "__main__":
    cli_main(main)
