"""Protocol adherence: does the model keep the chat protocol on prompts it has not seen?

A reply keeps the protocol when the turn ends with <|im_end|> within max_tokens and the model never
opens a turn itself (no sampled <|im_start|>, so no user or system header) nor ends the document
instead (<|endoftext|>). The one implementation: the chat_model asset's blocking check
(assets/post_training_model.py, through training.sft) and the eval suite both call it.
"""
from __future__ import annotations

from training.evals.core import EvalResult, timed


def protocol_adherence(engine, prompts: list[list[dict]], max_tokens: int, temperature: float = 0.7,
                       seed: int = 0) -> dict:
    """Sample each prompt's reply through the engine (its tools included) and count the replies that
    keep the protocol. Prompts without room for max_tokens in the context are skipped (a reply cut
    by the context would be counted against the model unfairly).

    Returns {"prompts", "skipped_long", "adherent", "rate" (None when nothing fit), "opened_a_turn",
    "no_im_end", "examples" (up to 3 failures), "records" (one per prompt scored)}."""
    from training.conversations.render import render_for_completion
    from training.engine.engine import SamplingParams
    tok = engine.tokenizer
    im_start, im_end = tok.special("im_start"), tok.special("im_end")
    block = engine.model.config.block_size
    ids = [render_for_completion(tok, p) for p in prompts]
    fits = [i for i, p in enumerate(ids) if len(p) + max_tokens <= block]
    if not fits:
        return {"prompts": 0, "skipped_long": len(ids), "adherent": 0, "rate": None, "opened_a_turn": 0,
                "no_im_end": 0, "examples": [], "records": []}
    done = engine.generate([ids[i] for i in fits], SamplingParams(max_tokens=max_tokens, temperature=temperature,
                                                                 top_k=50, seed=seed))
    opened = ended = adherent = 0
    examples, records = [], []
    for i, c in zip(fits, done):
        opens = any(t == im_start for t, s in zip(c.tokens, c.sampled) if s)
        ends = c.finish_reason == "stop" and bool(c.tokens) and c.tokens[-1] == im_end
        ok = ends and not opens
        opened, ended, adherent = opened + opens, ended + ends, adherent + ok
        last = prompts[i][-1]["content"]
        prompt = last if isinstance(last, str) else str(last)
        records.append({"prompt": prompt, "reply": c.text, "finish_reason": c.finish_reason,
                        "tokens": len(c.tokens), "opened_a_turn": opens, "ended_with_im_end": ends, "adherent": ok})
        if not ok and len(examples) < 3:
            examples.append({"prompt": prompt, "reply": c.text[:300]})
    return {"prompts": len(fits), "skipped_long": len(ids) - len(fits), "adherent": adherent,
            "rate": adherent / len(fits), "opened_a_turn": opened, "no_im_end": len(fits) - ended,
            "examples": examples, "records": records}


class ProtocolAdherence:
    """The eval task: adherence on held-out opening turns (see suite.protocol_prompts)."""
    kind = "chat"

    def __init__(self, prompts: list[list[dict]], max_tokens: int = 96, temperature: float = 0.7,
                 name: str = "protocol"):
        self.name, self.prompts, self.max_tokens, self.temperature = name, prompts, max_tokens, temperature

    def run(self, engine, seed: int) -> EvalResult:
        def go():
            r = protocol_adherence(engine, self.prompts, self.max_tokens, self.temperature, seed)
            return EvalResult(self.name, self.kind, r["rate"], r["prompts"], r["records"],
                              {"opened_a_turn": r["opened_a_turn"], "no_im_end": r["no_im_end"],
                               "skipped_long": r["skipped_long"]},
                              note="" if r["prompts"] else "no prompt fits the context with room for the reply")
        return timed(go)
