"""Inference engine: an exported GPT, decoded with a KV cache, several rows at once, tools in the loop.

    engine = Engine.load("lake/models/base/run1/export")     # or "crawl2chat-base@candidate" (MLflow)
    prompt = render_for_completion(engine.tokenizer, [{"role": "user", "content": "6*7?"}])
    [c] = engine.generate([prompt], SamplingParams(temperature=0.8, top_k=50, seed=1))
    c.text, c.tokens, c.sampled, c.finish_reason
    for ev in engine.stream(prompt, SamplingParams()): print(ev.text, end="")

Decoding: one prefill forward over the (left-padded) prompts fills the cache, then one forward of one
token per row per step, and one batched sampling call for all rows (one host transfer per step, for
the tool state machine and the stop checks). Rows are independent: a row's positions start at its
first real token and its padding is masked (training.model.KVCache); a row samples with one uniform
number per token from its own generator (seed + i) by inverse CDF, so its tokens do not depend on
the other rows; it stops alone (<|im_end|> / <|endoftext|>, its max_tokens, or the context).

Tools are a per-row state machine over the sampled tokens:
    <|tool_start|>NAME<|im_sep|>ARGS<|tool_end|>   sampled by the model
    <|output_start|>RESULT<|output_end|>          forced by the engine, one token per step
after which the model samples again in the same turn. Forced tokens are marked sampled=False, so SFT
and RL can leave them out of the loss. A tool runs in a thread pool, off the decode loop: while it
runs its row sits the steps out (a hole in the cache, see _RowCache) and the other rows go on; a tool
never raises (see tools.run_tool). A finished row stays in the batch as a hole too, until at most half
the rows are unfinished: only then is the cache compacted (each compaction copies the whole cache,
so it happens O(log batch) times, not once per finished row). bf16 on CUDA, fp32 on CPU; attention
through SDPA in both.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
import threading
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from pipelines.errors import ConfigError, InputError
from pipelines.tokenizer import Tokenizer, load_tokenizer
from training.engine.tools import Tool, default_tools, run_tool
from training.model import GPT, KVCache


@dataclass
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0      # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = 0          # same seed -> same text; row i of a batch uses seed + i unless seeds= given
    # (a row draws one uniform number per sampled token from its seeded generator: see sample())

    def validate(self) -> None:
        if self.max_tokens < 0:
            raise ConfigError(f"max_tokens must be >= 0, got {self.max_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1 or unset, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1] or unset, got {self.top_p}")


@dataclass
class Completion:
    tokens: list[int]             # generated tokens after the prompt, forced tool outputs included
    sampled: list[bool]           # per token: True = sampled by the model, False = forced (tool output)
    finish_reason: str            # "stop" (<|im_end|> / <|endoftext|>) | "length" | "cancelled" (stop_event)
    text: str                     # tokens decoded (special tokens kept as their strings)


@dataclass
class TokenEvent:                 # what stream() yields, one per generated token
    token: int
    text: str                     # this token's text ("" mid UTF-8 sequence; stream decodes incrementally)
    forced: bool                  # True for tool-output tokens forced by the engine
    finish_reason: str | None = None   # set on the last event only


class _Row:
    """One row's output so far, its tool-call parser state, its running tool and the tool output
    still to force."""

    def __init__(self, limit: int, rng: random.Random):
        self.limit, self.rng = limit, rng
        self.tokens: list[int] = []
        self.sampled: list[bool] = []
        self.forced: deque[int] = deque()
        self.tool: Future | None = None      # the running tool call: the row waits for its result
        self.finish: str | None = None if limit > 0 else "length"
        self.state, self.name, self.args = "text", [], []   # text | name | args

    def parse(self, token: int, sp: dict[str, int]) -> tuple[list[int], list[int]] | None:
        """Advance the tool-call state machine on a sampled token; (name, args) ids when a call ends."""
        if self.state == "text":
            if token == sp["tool_start"]:
                self.state, self.name, self.args = "name", [], []
        elif token == sp["tool_end"]:
            self.state = "text"
            return self.name, self.args
        elif self.state == "name" and token == sp["im_sep"]:
            self.state = "args"
        else:
            (self.name if self.state == "name" else self.args).append(token)
        return None


class Engine:
    def __init__(self, model: GPT, tokenizer: Tokenizer, tools: dict[str, Tool] | None = None,
                 device: str | None = None):
        """tools: name -> Tool; None gives default_tools() (the sandboxed python), {} none at all.
        The model is moved to the device (bf16 on CUDA, fp32 on CPU) and set to eval mode."""
        self.device = _pick_device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.tokenizer = tokenizer
        self.tools = default_tools() if tools is None else dict(tools)
        for tool in self.tools.values():   # a tool answer (search hits) sized to this model's window
            if hasattr(tool, "fit_context"):
                tool.fit_context(model.config.block_size)
        self.model_name = "crawl2chat"
        if tokenizer.vocab_size != model.config.vocab_size:
            raise InputError(f"tokenizer has {tokenizer.vocab_size} tokens, the model {model.config.vocab_size}: "
                             "load the tokenizer the model was trained with (the export directory's)")
        names = ("im_end", "endoftext", "tool_start", "im_sep", "tool_end", "output_start", "output_end")
        self._sp = {n: tokenizer.special(n) for n in names}
        self._stop_ids = {self._sp["im_end"], self._sp["endoftext"]}

    @classmethod
    def load(cls, source: str | Path, tools: dict[str, Tool] | None = None,
             device: str | None = None) -> "Engine":
        """source: an export dir (model.safetensors + config.json + tokenizer files), or a registered MLflow
        model 'NAME@ALIAS' / 'NAME/VERSION' / 'models:/NAME@ALIAS' (artifact path 'model' of the version's
        run, downloaded once into $CRAWL2CHAT_MODEL_CACHE, default ~/.cache/crawl2chat/models)."""
        from training.export import load_model
        path = Path(source)
        if path.is_dir():
            export_dir = path
            name = path.resolve().parent.name if path.resolve().name == "export" else path.resolve().name
        elif _MODEL_URI.match(str(source)):
            export_dir, name = _download_registered(str(source))
        else:
            raise InputError(f"{source}: neither an export directory (model.safetensors + config.json + "
                             "tokenizer) nor a registered model 'NAME@ALIAS', 'NAME/VERSION' or 'models:/NAME@ALIAS'")
        for f in ("config.json", "model.safetensors", "tokenizer.json"):
            if not (export_dir / f).exists():
                raise InputError(f"{export_dir}: no {f}; an export directory holds model.safetensors, "
                                 "config.json and the tokenizer files (training.export.export_state)")
        dev = _pick_device(device)
        try:
            model = load_model(export_dir, device=dev)
        except ValueError as e:
            raise InputError(str(e)) from e
        engine = cls(model, load_tokenizer(export_dir), tools=tools, device=str(dev))
        engine.model_name = name
        return engine

    # ---- generation ---------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int] | None = None,
                 stop_event: threading.Event | None = None) -> list[Completion]:
        rows: list[_Row] = []
        for _ in self._decode(prompts, params, seeds, stop_event, rows):
            pass
        return [Completion(r.tokens, r.sampled, r.finish or "cancelled", self.tokenizer.decode(r.tokens))
                for r in rows]

    def stream(self, prompt: list[int], params: SamplingParams,
               stop_event: threading.Event | None = None) -> Iterator[TokenEvent]:
        ids: list[int] = []
        start = done = 0  # ids[start:done] is decoded text already yielded (a UTF-8 boundary at start)
        for [(_, token, forced, finish)] in self._decode([prompt], params, None, stop_event, []):
            ids.append(token)
            before, after = self.tokenizer.decode(ids[start:done]), self.tokenizer.decode(ids[start:])
            if finish is None and (after.endswith("\ufffd") or len(after) <= len(before)):
                text = ""  # mid character: hold it until the sequence completes
            else:
                text, start, done = after[len(before):], done, len(ids)
            yield TokenEvent(token, text, forced, finish)

    def _decode(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int] | None,
                stop_event: threading.Event | None, rows: list[_Row]) -> Iterator[list[tuple]]:
        """Fill `rows` (one per prompt) and yield each step's (row, token, forced, finish_reason)s."""
        params.validate()
        self._check_prompts(prompts)
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        if seeds is None:
            seeds = [None if params.seed is None else params.seed + i for i in range(len(prompts))]
        block = self.model.config.block_size
        rows.extend(_Row(min(params.max_tokens, block - len(p)), random.Random(s)) for p, s in zip(prompts, seeds))
        live = [i for i, r in enumerate(rows) if r.finish is None]   # the cache's rows, in its order
        if not live:
            return
        width = max(len(prompts[i]) for i in live)
        pad = [width - len(prompts[i]) for i in live]
        cache = _RowCache(self.model.config, len(live), width + max(rows[i].limit for i in live),
                          pad=torch.tensor(pad), device=self.device, dtype=next(self.model.parameters()).dtype)
        idx = torch.tensor([[0] * p + prompts[i] for p, i in zip(pad, live)], device=self.device)
        logits = self._forward(idx, cache)
        pool: ThreadPoolExecutor | None = None
        try:
            while True:
                if stop_event is not None and stop_event.is_set():
                    for i in live:
                        rows[i].finish = rows[i].finish or "cancelled"
                    return
                self._collect_tools([rows[i] for i in live])
                ready = [j for j, i in enumerate(live) if rows[i].finish is None and rows[i].tool is None]
                if not ready:   # every unfinished row waits for its tool: nothing to compute until one ends
                    wait([rows[i].tool for i in live if rows[i].tool is not None], timeout=0.05,
                         return_when=FIRST_COMPLETED)
                    continue
                chosen = self._choose(logits, [rows[live[j]] for j in ready], ready, params)
                events, calls = [], []
                for j, (token, forced) in zip(ready, chosen):
                    r = rows[live[j]]
                    r.tokens.append(token)
                    r.sampled.append(not forced)
                    if not forced:
                        if token in self._stop_ids:
                            r.finish = "stop"
                        elif (call := r.parse(token, self._sp)) is not None:
                            calls.append((r, call))
                    if r.finish is None and len(r.tokens) >= r.limit:
                        r.finish = "length"
                    events.append((live[j], token, forced, r.finish))
                for r, call in calls:   # started before the yield: a stream shows the call while it runs
                    if r.finish is None:
                        pool = pool or ThreadPoolExecutor(max_workers=min(len(live), 64), thread_name_prefix="tool")
                        r.tool = pool.submit(self._call_tool, call)
                yield events
                fed = [False] * len(live)   # rows that emitted a token this step feed it (a row whose call
                for j in ready:             # just ended feeds its <|tool_end|>, then waits)
                    fed[j] = rows[live[j]].finish is None
                unfinished = [j for j, i in enumerate(live) if rows[i].finish is None]
                if not unfinished:
                    return
                if len(unfinished) <= len(live) // 2:   # few rows left: compact (see the module docstring)
                    cache.keep(unfinished)
                    live, fed = [live[j] for j in unfinished], [fed[j] for j in unfinished]
                if not any(fed):
                    logits = None   # only waiting rows: the next rows to emit force their tool output
                    continue
                last = [rows[i].tokens[-1] if f else 0 for i, f in zip(live, fed)]
                logits = self._forward(torch.tensor(last, device=self.device)[:, None], cache, fed)
        finally:
            if pool is not None:   # a cancelled or abandoned generation does not wait for its tools
                pool.shutdown(wait=False, cancel_futures=True)

    @torch.inference_mode()
    def _forward(self, idx: torch.Tensor, cache: "_RowCache", fed: list[bool] | None = None) -> torch.Tensor:
        if fed is not None:
            cache.feed(fed)
        return self.model(idx, kv_cache=cache)[:, -1, :].float()

    def _choose(self, logits: torch.Tensor | None, rows: list[_Row], at: list[int],
                params: SamplingParams) -> list[tuple[int, bool]]:
        """Each ready row's next token: its forced tool output if any is queued, else a sample from
        its logits (row at[k] of `logits`), all rows in one sample() call; a forced token draws
        nothing from the row's generator."""
        out: list[tuple[int, bool] | None] = [(r.forced.popleft(), True) if r.forced else None for r in rows]
        todo = [k for k, o in enumerate(out) if o is None]
        if todo:
            greedy = params.temperature <= 0
            picks = sample(logits[[at[k] for k in todo]], params,
                           None if greedy else [rows[k].rng.random() for k in todo]).tolist()
            for k, t in zip(todo, picks):
                out[k] = (int(t), False)
        return out

    def _call_tool(self, call: tuple[list[int], list[int]]) -> list[int]:
        """In a pool thread: the tool's result as the tokens to force (never raises: run_tool)."""
        name, args = call
        result = run_tool(self.tools, self.tokenizer.decode(name).strip(), self.tokenizer.decode(args))
        # encode() never yields special ids: a result cannot close the output or the turn itself
        return [self._sp["output_start"], *self.tokenizer.encode(result), self._sp["output_end"]]

    @staticmethod
    def _collect_tools(rows: list[_Row]) -> None:
        """Rows whose tool has ended get its output queued; they emit again from this step on."""
        for r in rows:
            if r.tool is not None and r.tool.done():
                r.forced.extend(r.tool.result())
                r.tool = None

    def _check_prompts(self, prompts: list[list[int]]) -> None:
        block, vocab = self.model.config.block_size, self.model.config.vocab_size
        for i, p in enumerate(prompts):
            if not p:
                raise InputError(f"prompt {i} is empty: give at least one token (e.g. render_for_completion)")
            if len(p) >= block:
                raise InputError(f"prompt {i} has {len(p)} tokens; the model's context is {block}: "
                                 "shorten the conversation")
            bad = [t for t in p if not 0 <= t < vocab]
            if bad:
                raise InputError(f"prompt {i} has token ids outside the vocabulary [0, {vocab}): {bad[:5]}")

def sample(logits: torch.Tensor, params: SamplingParams, uniforms: list[float] | None) -> torch.Tensor:
    """The next token of each row of `logits` (n, V): greedy at temperature 0; else logits /
    temperature, top-k, top-p, softmax, and inverse CDF at the row's uniform number in [0, 1)
    (`uniforms`, one per row from the row's own generator). One batched call for all rows, one
    random number per row and token: a row's token depends on its logits and its number only."""
    if params.temperature <= 0:
        return logits.argmax(dim=-1)
    x = logits / params.temperature
    if params.top_k is not None:
        v, _ = torch.topk(x, min(params.top_k, x.size(-1)))
        x = x.masked_fill(x < v[:, [-1]], -float("inf"))
    if params.top_p is not None and params.top_p < 1:
        # keep the smallest set of most likely tokens whose probability reaches top_p
        sorted_x, order = torch.sort(x, descending=True)
        p = torch.softmax(sorted_x, dim=-1)
        drop = (p.cumsum(dim=-1) - p) >= params.top_p
        x = x.scatter(-1, order, sorted_x.masked_fill(drop, -float("inf")))
    # fp64 CDF: a token's share is its probability to ~1e-16 even over 50k tokens; the target stays
    # strictly below the total, so the pick is always a token of non-zero probability
    cdf = torch.softmax(x.float(), dim=-1).double().cumsum(dim=-1)
    total = cdf[:, -1:]
    u = torch.tensor(uniforms, dtype=torch.float64).to(cdf.device, non_blocking=True)[:, None]
    target = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True).squeeze(1)


class _RowCache(KVCache):
    """The engine's KV cache: a KVCache whose rows may sit a step out. Every forward appends one slot
    to every row; a row with nothing to feed (its tool is running, or it finished and the batch is
    not compacted yet) feeds a placeholder into a hole: a slot no later query attends to and that
    takes no position. So a row's keys, positions and logits are the ones it has alone, wherever its
    holes fall. Slots then outnumber a row's tokens, and the capacity grows when a wait uses it up."""

    def __init__(self, cfg, batch: int, capacity: int, pad: torch.Tensor, device, dtype):
        super().__init__(cfg, batch, capacity, pad=pad, device=device, dtype=dtype)
        self.real = torch.arange(capacity, device=self.pad.device)[None, :] >= self.pad[:, None]  # attendable slots
        self.next_pos: torch.Tensor | None = None   # (B,) each row's next position, from the first decode step
        self.pos: torch.Tensor | None = None        # (B,) this forward's positions (0 in a hole)
        self.filled = [capacity] * batch            # host: positions each row used (set at the first feed)

    def feed(self, fed: list[bool]) -> None:
        """Before a one-token forward: which rows feed a real token (the others fill a hole)."""
        if self.next_pos is None:   # after the prefill: a row's next position is its prompt length
            self.next_pos = self.length - self.pad
            self.filled = (self.length - self.pad).tolist()
        if self.length + 1 > self.capacity:
            self._grow(max(self.capacity // 2, 16))
        active = torch.tensor(fed, device=self.pad.device)
        self.real[:, self.length] = active
        self.pos = torch.where(active, self.next_pos, torch.zeros_like(self.next_pos))
        self.next_pos = self.next_pos + active
        # the model checks length + T - min_pad <= block_size: make that the longest fed row's positions
        longest = max(f for f, a in zip(self.filled, fed) if a)
        self.min_pad = self.length - longest
        self.filled = [f + a for f, a in zip(self.filled, fed)]

    def positions(self, T: int) -> torch.Tensor:
        return super().positions(T) if self.pos is None else self.pos[:, None]

    def mask(self, T: int) -> torch.Tensor:
        if self.pos is None:
            return super().mask(T)   # the prefill: causal over real (unpadded) slots
        # one query per row at slot `length`: it sees the row's real slots and itself (a hole's
        # query sees at least itself: no empty softmax row, see KVCache.mask)
        seen = self.real[:, :self.length + 1].clone()
        seen[:, self.length] = True
        return seen[:, None, None, :]

    def keep(self, rows: list[int]) -> None:
        at = torch.tensor(rows, device=self.pad.device)
        super().keep(at)
        self.real = self.real[at]
        if self.next_pos is not None:
            self.next_pos, self.filled = self.next_pos[at], [self.filled[j] for j in rows]

    def _grow(self, extra: int) -> None:
        """More slots (a copy of the cache: rare, only when waits for tools used up the margin)."""
        grow = lambda t: torch.cat([t, t.new_zeros(*t.shape[:3], extra, t.shape[4])], dim=3)   # noqa: E731
        self.k, self.v = grow(self.k), grow(self.v)
        self.real = torch.cat([self.real, self.real.new_zeros(self.real.size(0), extra)], dim=1)
        self.capacity += extra


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---- registered models ----------------------------------------------------------------------

_MODEL_URI = re.compile(r"^(?:models:/)?(?P<name>[^@/]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def _download_registered(spec: str) -> tuple[Path, str]:
    """Resolve 'NAME@ALIAS' / 'NAME/VERSION' in the MLflow registry and download the version's run
    artifacts 'model' into the local cache (once: a version's artifacts do not change)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    m = _MODEL_URI.match(spec)
    name, alias, version = m["name"], m["alias"], m["version"]
    uri = os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{Path(os.environ.get('DAGSTER_HOME') or Path.cwd() / 'dagster_home') / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as e:
        raise InputError(f"registered model {spec!r} not found in MLflow at {uri} ({e.message.splitlines()[0]}); "
                         "set MLFLOW_TRACKING_URI or check the name, alias and version") from e
    return cached_model(mv, uri), spec.removeprefix("models:/")


def cached_model(mv, tracking_uri: str, cache: Path | None = None) -> Path:
    """The exported model of a registered version (its run's artifacts 'model'), downloaded once into
    the model cache ($CRAWL2CHAT_MODEL_CACHE): a version's artifacts do not change. Downloaded into a
    fresh temporary directory and renamed into place, so a half-written copy never looks complete
    and two processes downloading at once both end with a whole one."""
    import mlflow
    from mlflow.exceptions import MlflowException
    cache = Path(cache or os.environ.get("CRAWL2CHAT_MODEL_CACHE") or Path.home() / ".cache/crawl2chat/models")
    dest = cache / f"{mv.name}-v{mv.version}-{mv.run_id[:12]}"
    if not (dest / "model" / "model.safetensors").exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp", dir=cache))
        try:
            mlflow.artifacts.download_artifacts(run_id=mv.run_id, artifact_path="model", dst_path=str(tmp),
                                                tracking_uri=tracking_uri)
        except BaseException as e:  # no partial copy stays behind in the cache
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, MlflowException):
                raise InputError(f"registered model {mv.name} version {mv.version}: its run {mv.run_id} has no "
                                 f"'model' artifacts to load ({str(e).splitlines()[0]})") from e
            raise
        try:
            tmp.rename(dest)
        except OSError:  # another process finished first: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return dest / "model"
