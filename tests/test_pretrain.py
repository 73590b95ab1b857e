"""Pretraining with real DeepSpeed engines on CPU (gloo): ZeRO 0-3, resume, partial checkpoints, export,
MLflow, Dagster Pipes. Single-process runs happen in this process (importing DeepSpeed costs ~10 s a
process on the shared box); the two-process and the killed-mid-save runs are subprocesses (slow)."""
import base64
import json
import os
import random
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.shards import TokenShards, write_token_shards
from pipelines.tokenizer import train_tokenizer
from training import checkpoint as ckpt
from training.config import load_config
from training.data import WindowLoader
from training.export import load_model
from training.model import GPT, preset
from training.pretrain import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
SMALL = ["model.n_layer=2", "model.n_embd=64", "model.n_head=2", "model.block_size=32",
         "train.micro_batch=4", "train.batch_tokens=256", "train.warmup_steps=2", "train.lr=3e-3",
         "eval.val_tokens=256", "eval.sample_every=0", "eval.prompts=[]", "checkpoint.every=0",
         "log.mlflow=false"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Tokenizer (vocab 512) + shards of a synthetic English-like corpus: ~100k train tokens (~200 KB)."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    words = ("the of and to in is was for on that with as by at from his her an which are be this it had "
             "not were or have one all their they been has more who can first new time two after there "
             "when also other into some its may years only over river city music station players").split()
    docs = []
    for i in range(1400):
        sents = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 15))).capitalize() + "."
                 for _ in range(rng.randint(3, 12))]
        docs.append((f"doc{i:05d}", " ".join(sents)))
    tok = train_tokenizer((t for _, t in docs), vocab_size=512, out_dir=root / "tokenizer")
    write_token_shards(docs, root / "shards", tok, {"val_fraction": 0.05, "shard_tokens": 30000})
    # The trainer finds <shards>/tokenizer by itself; the CLI tests pass --tokenizer <dir> instead.
    shutil.copytree(root / "tokenizer", root / "shards" / "tokenizer")
    return root / "shards"


def run(corpus, out, *overrides, resume=False, config=None):
    return train(load_config(config, SMALL + list(overrides)), corpus, out, resume=resume)


def losses(summary) -> list[float]:
    return [r["train/loss"] for r in summary["history"]]


@pytest.fixture(scope="module")
def stage_runs(corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("stages")
    return {s: run(corpus, base / f"z{s}", "train.steps=3", f"train.zero_stage={s}", "eval.every=3",
                   "checkpoint.every=3") | {"out": base / f"z{s}"} for s in (0, 1, 2, 3)}


def test_zero_stages_train_and_agree(stage_runs):
    ref = losses(stage_runs[0])
    assert len(ref) == 3 and all(np.isfinite(ref))
    for s in (1, 2, 3):
        got = losses(stage_runs[s])
        assert stage_runs[s]["zero_stage"] == s
        assert got[0] == pytest.approx(ref[0], rel=1e-6)   # same init, same data: identical step 1
        assert got == pytest.approx(ref, rel=1e-3)          # same math after updates, up to fp order
        assert stage_runs[s]["final"]["val/loss"] == pytest.approx(stage_runs[0]["final"]["val/loss"], rel=1e-3)
        assert stage_runs[s]["final"]["train/grad_norm"] > 0
    assert stage_runs[0]["final"]["val/bpb"] > 0


@pytest.mark.parametrize("stage", [0, 3])
def test_export_round_trip_matches_checkpoint_weights(stage_runs, stage):
    import deepspeed.utils.zero_to_fp32 as z2f
    out = stage_runs[stage]["out"]
    model = load_model(out / "export")
    meta = json.loads((out / "export" / "config.json").read_text())
    assert meta["step"] == 3 and meta["model"]["n_layer"] == 2
    for f in ("tokenizer.json", "token_bytes.npy", "tokenizer_meta.json"):
        assert (out / "export" / f).exists()
    tag_dir = out / "checkpoints" / ckpt.tag_for(3)
    if stage == 0:
        state = torch.load(tag_dir / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    else:
        state = z2f.get_fp32_state_dict_from_zero_checkpoint(str(out / "checkpoints"), tag=ckpt.tag_for(3))
    ref = GPT(model.config)
    ref.load_state_dict(state, strict=False)
    ref.eval()
    x = torch.randint(0, model.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(x, x, reduction="none"), ref(x, x, reduction="none"), atol=1e-6)
        assert torch.equal(model(x), ref(x))


def test_resume_reproduces_uninterrupted_run(corpus, tmp_path):
    common = ["train.steps=6", "train.zero_stage=2", "eval.every=6", "checkpoint.every=3", "checkpoint.keep=1"]
    full = run(corpus, tmp_path / "full", *common)
    part = run(corpus, tmp_path / "part", *common, "train.stop_after=3")
    assert part["step"] == 3 and part["export"] is None
    assert ckpt.latest_complete(tmp_path / "part" / "checkpoints") == (3, "step_00000003")
    rest = run(corpus, tmp_path / "part", *common, resume=True)
    assert rest["resumed_from"] == "step_00000003" and [r["step"] for r in rest["history"]] == [4, 5, 6]
    assert losses(part) == pytest.approx(losses(full)[:3], rel=1e-6)
    assert losses(rest) == pytest.approx(losses(full)[3:], rel=1e-5)
    assert rest["final"]["val/loss"] == pytest.approx(full["final"]["val/loss"], rel=1e-5)
    # keep=1: only the newest complete tag survives
    assert sorted(p.name for p in (tmp_path / "part" / "checkpoints").iterdir() if p.is_dir()) == ["step_00000006"]


def test_partial_checkpoint_is_never_loaded(stage_runs, corpus, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(stage_runs[1]["out"] / "checkpoints", out / "checkpoints")
    good = out / "checkpoints" / "step_00000003"
    # A later save that died half way: DeepSpeed's files partly there, its `latest` pointing at it.
    partial = out / "checkpoints" / "step_00000005"
    shutil.copytree(good, partial)
    (partial / ckpt.MARKER).unlink()
    victim = next(p for p in partial.iterdir() if p.suffix == ".pt")
    victim.write_bytes(victim.read_bytes()[:100])
    (out / "checkpoints" / "latest").write_text("step_00000005")
    # A marker whose files were truncated afterwards does not count either.
    bad = out / "checkpoints" / "step_00000004"
    shutil.copytree(good, bad)
    next(p for p in bad.iterdir() if p.suffix == ".pt").write_bytes(b"x")
    assert not ckpt.is_complete(partial) and not ckpt.is_complete(bad) and ckpt.is_complete(good)
    assert ckpt.latest_complete(out / "checkpoints") == (3, "step_00000003")
    res = run(corpus, out, "train.steps=4", "train.zero_stage=1", "checkpoint.every=3", "eval.every=0",
              resume=True)
    assert res["resumed_from"] == "step_00000003" and [r["step"] for r in res["history"]] == [4]
    # The resume quarantined the corrupt tag (kept for inspection), the save wrote step 4 afresh.
    assert ckpt.latest_complete(out / "checkpoints") == (4, "step_00000004")
    names = sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir() and p.name[0] != ".")
    assert names == ["step_00000003", "step_00000004", "step_00000005"]  # 5 > newest complete: untouched
    assert [p.name[:13] for p in (out / "checkpoints" / ckpt.QUARANTINE).iterdir()] == ["step_00000004"]


def _subprocess_env(**extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "MLFLOW_RUN_ID"):
        env.pop(k, None)  # this process's in-process distributed defaults must not leak
    return env


def _cli(corpus, out, *overrides):
    args = ["--data", str(corpus), "--out", str(out), "--tokenizer", str(corpus.parent / "tokenizer")]
    for o in SMALL + list(overrides):
        args += ["--set", o]
    return args


@pytest.mark.slow
def test_killed_during_save_resumes_from_previous_complete(corpus, tmp_path):
    out = tmp_path / "run"
    over = ["train.steps=5", "checkpoint.every=2", "eval.every=0"]
    p = subprocess.run([sys.executable, "-m", "training.pretrain", *_cli(corpus, out, *over)], cwd=REPO,
                       env=_subprocess_env(CRAWL2CHAT_FAULT="after_save:4"), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 137, p.stderr[-2000:]
    cdir = out / "checkpoints"
    assert (cdir / "step_00000004").is_dir() and not ckpt.is_complete(cdir / "step_00000004")
    assert ckpt.latest_complete(cdir) == (2, "step_00000002")
    res = run(corpus, out, *over, resume=True)
    assert res["resumed_from"] == "step_00000002" and [r["step"] for r in res["history"]] == [3, 4, 5]
    assert ckpt.latest_complete(cdir) == (5, "step_00000005") and (out / "export" / "model.safetensors").exists()


@pytest.mark.slow
def test_two_processes_via_deepspeed_launcher_read_disjoint_data(corpus, tmp_path):
    out = tmp_path / "run"
    over = ["train.steps=2", "train.zero_stage=2", "eval.every=2", "checkpoint.every=2"]
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port",
           str(29600 + os.getpid() % 300), "--module", "training.pretrain", *_cli(corpus, out, *over)]
    # On the CPU accelerator the launcher counts "devices" from LOCAL_SIZE (else NUMA nodes).
    p = subprocess.run(cmd, cwd=REPO, env=_subprocess_env(LOCAL_SIZE="2"), capture_output=True, text=True,
                       timeout=400)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["zero_stage"] == 2 and summary["step"] == 2
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    # Step 1's loss is the mean over both ranks' micro-batches at the initial weights: recompute it here
    # from the same seed and each rank's own windows (disjoint slices, gradient accumulation 1 at world 2).
    cfg = load_config(None, SMALL)
    torch.manual_seed(cfg["train"]["seed"])
    shards = TokenShards(corpus, "train")
    model = GPT(preset("tiny", n_layer=2, n_embd=64, n_head=2, block_size=32, vocab_size=shards.vocab_size))
    per_rank = []
    for r in (0, 1):
        loader = WindowLoader(shards, 32, 4, rank=r, world_size=2, seed=cfg["train"]["seed"])
        x, y = loader.next_batch()
        with torch.no_grad():
            per_rank.append(model(x, y).item())
    assert first["train/loss"] == pytest.approx(sum(per_rank) / 2, rel=1e-5)
    a, b = (set(TokenShards(corpus).rank_windows(r, 2, 32).tolist()) for r in (0, 1))
    assert a and b and not a & b
    assert load_model(out / "export").config.n_layer == 2


def test_mlflow_run_continued_and_dagster_pipes_report(corpus, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    run_id = client.create_run(exp).info.run_id
    messages = tmp_path / "pipes_messages.jsonl"

    def enc(v):
        return base64.b64encode(zlib.compress(json.dumps(v).encode())).decode()
    context = {"asset_keys": ["base_model"], "code_version_by_asset_key": None, "provenance_by_asset_key": None,
               "partition_key": None, "partition_key_range": None, "partition_time_window": None,
               "run_id": "dagster-run", "job_name": None, "retry_number": 0, "extras": {}}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    monkeypatch.setenv("DAGSTER_PIPES_CONTEXT", enc({"data": context}))
    monkeypatch.setenv("DAGSTER_PIPES_MESSAGES", enc({"path": str(messages)}))
    res = run(corpus, tmp_path / "run", "train.steps=4", "eval.every=2", "eval.sample_every=4",
              "eval.sample_tokens=8", "eval.prompts=[The river]", "log.mlflow=true", "log.flush_every=2")
    assert res["mlflow_run_id"] == run_id
    r = client.get_run(run_id)
    assert r.info.status == "RUNNING"  # the parent owns the run's status
    assert r.data.params["pretrain.train.steps"] == "4"
    hist = client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in hist] == [1, 2, 3, 4]
    assert [m.step for m in client.get_metric_history(run_id, "val/bpb")] == [2, 4]
    for key in ("train/lr", "train/grad_norm", "train/tokens_per_s", "val/loss"):
        assert client.get_metric_history(run_id, key)
    assert not client.get_metric_history(run_id, "train/mfu")  # None on CPU: not logged
    arts = [a.path for a in client.list_artifacts(run_id, "samples")]
    assert arts == ["samples/step_00000004.txt"]
    text = Path(client.download_artifacts(run_id, arts[0], str(tmp_path / "dl"))).read_text()
    assert text.startswith("### 'The river'\nThe river")
    msgs = [json.loads(line) for line in messages.read_text().splitlines()]
    assert msgs[0]["method"] == "opened" and msgs[-1]["method"] == "closed"
    mat = [m for m in msgs if m["method"] == "report_asset_materialization"]
    assert len(mat) == 1
    meta = mat[0]["params"]["metadata"]
    assert meta["step"]["raw_value"] == 4 and meta["mlflow_run_id"]["raw_value"] == run_id
    assert meta["val_bpb"]["raw_value"] > 0


def test_tracker_new_run_stays_in_run_directory(tmp_path, monkeypatch):
    from training.tracking import Tracker
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    t = Tracker(True, tmp_path, "exp", run_name="r", params={"train.lr": 0.1}, flush_every=100)
    t.log_metrics({"train/loss": 2.0, "train/mfu": None}, step=1)
    t.log_text("sample", "samples/step_00000001.txt")
    t.finish()
    assert "MLFLOW_TRACKING_URI" not in os.environ  # nothing leaks to later runs or subprocesses
    run = t.client.get_run(t.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"train/loss": 2.0}
    assert run.data.params == {"pretrain.train.lr": "0.1"}
    assert list(tmp_path.glob("mlartifacts/*/artifacts/samples/step_00000001.txt"))
    assert (tmp_path / "mlflow.db").exists()


def test_an_export_dir_crawl2chat_did_not_write_stops_the_run_before_training(corpus, tmp_path):
    from pipelines.errors import OutputExistsError
    mine = tmp_path / "run" / "export"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("the user's own file")
    with pytest.raises(OutputExistsError, match="replaces only outputs it wrote"):
        run(corpus, tmp_path / "run", "train.steps=2")
    assert (mine / "notes.txt").read_text() == "the user's own file"
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()
