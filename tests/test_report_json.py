"""One report card per lineage tree, from a small registry of real MLflow runs and versions (no
training: the runs log what the training assets log): base -> SFT -> RL and RLHF side by side, the
reward model with its length-only baselines, the failed RLHF version marked, a regression flagged,
and `crawl2chat report --json` listing it all with score, n and interval per task and version."""
import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from training.evals.core import EvalResult
from training.evals.intervals import wilson
from training.evals.registry import EXPERIMENT, Version, log_evaluation


def _training_run(client, exp: str, stage: str, tags: dict, inputs=(), metrics: dict | None = None) -> str:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    mlflow.set_tracking_uri(client.tracking_uri)
    with mlflow.start_run(experiment_id=exp, tags={"crawl2chat.stage": stage, **tags}) as run:
        mlflow.log_params({f"{stage}.n_params": 1000, f"{stage}.flops_per_token": 6000.0, f"{stage}.device": "cpu",
                           f"{stage}.world_size": 1})
        for step, loss in enumerate((3.0, 2.5, 2.2)):
            mlflow.log_metrics({"train/loss": loss, "val/loss": loss + 0.1, "train/step_ms": 50.0}, step=step)
        mlflow.log_metrics({"train/tokens": 4096, "train/tokens_per_s": 2000.0, **(metrics or {})})
        for name, path, digest in inputs:
            mlflow.log_input(MetaDataset(resolve_dataset_source(Path(path).resolve().as_uri()), name=name,
                                         digest=digest), context="upstream")
    return run.info.run_id


def _version(client, name: str, run_id: str, tags: dict) -> Version:
    try:
        client.create_registered_model(name)
    except mlflow.exceptions.MlflowException:
        pass
    mv = client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id,
                                     tags={k: str(v) for k, v in tags.items()})
    stage = {"crawl2chat-base": "BASE", "crawl2chat-chat": "SFT", "crawl2chat-rl": "RL",
             "crawl2chat-rlhf": "RLHF"}.get(name, "RM")
    return Version(stage, name, "base" if stage == "BASE" else "chat", mv)


def _evaluate(client, v: Version, bpb_windows: list[float], right: int, of: int, artifacts: Path):
    exp = client.get_experiment_by_name(EXPERIMENT)
    # an explicit artifact location: MLflow's default is ./mlruns in the working directory (the checkout)
    exp_id = exp.experiment_id if exp else client.create_experiment(EXPERIMENT, artifact_location=artifacts.as_uri())
    recs = [{"text_nats": b * 0.6931471805599453 * 100, "bytes": 100} for b in bpb_windows]
    bpb = EvalResult("bpb", "base", sum(bpb_windows) / len(bpb_windows), len(recs), recs, higher_is_better=False)
    results = [bpb]
    if v.kind == "chat":
        results.append(EvalResult("arithmetic", "chat", right / of, of, [{"correct": [i < right]} for i in range(of)],
                                  {"decontam_checked": of, "decontam_short": 0, "contaminated_pretraining": 2,
                                   "contaminated_sft": 1, "decontam_excluded": 0}))
    from training.evals import intervals
    for r in results:
        lo, hi, r.interval_method = intervals.of(r)
        r.interval = (lo, hi)
    log_evaluation(client, exp_id, v, results, {"seed": 0}, {"eval_suite": "test"})


@pytest.fixture
def registry(tmp_path):
    from training.rl.preferences import write_pairs
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.create_experiment("crawl2chat/training", artifact_location=(tmp_path / "art").as_uri())
    base = _version(client, "crawl2chat-base", _training_run(client, exp, "pretrain", {}), {})
    chat_tags = {"base_model": base.ref, "check_passed": True}
    with mlflow.start_run(experiment_id=exp, run_name="sft_mixture", tags={"dataset.digest": "mix1"}):
        pass   # the data run that wrote the mixture (as the sft_mixture asset tags its output's digest)
    (tmp_path / "mixture").mkdir()
    chat = _version(client, "crawl2chat-chat", _training_run(client, exp, "sft", chat_tags, [
        ("sft_mixture", str(tmp_path / "mixture"), "mix1")]), chat_tags)
    rl_tags = {"chat_model": chat.ref, "check_passed": True}
    rl = _version(client, "crawl2chat-rl", _training_run(client, exp, "rl", rl_tags), rl_tags)
    # held-out pairs where the chosen reply is the shorter one 3 times in 4
    pairs = [{"id": f"p{i}", "source": "test", "prompt": json.dumps([{"role": "user", "content": f"q{i}"}]),
              "chosen": "short" if i % 4 else "a much longer chosen reply", "rejected": "a longer rejected reply",
              "split": "heldout" if i < 8 else "train"} for i in range(12)]
    write_pairs(pairs, tmp_path / "pairs")
    rm_tags = {"chat_model": chat.ref, "check_passed": True}
    rm = _version(client, "crawl2chat-rm", _training_run(client, exp, "rm", rm_tags, [
        ("preference_pairs", str(tmp_path / "pairs"), "abc")], {"accuracy": 0.875, "heldout_pairs": 8}), rm_tags)
    rlhf_tags = {"chat_model": chat.ref, "reward_model": rm.ref, "check_passed": False}
    rlhf = _version(client, "crawl2chat-rlhf", _training_run(client, exp, "rlhf", rlhf_tags), rlhf_tags)
    art = tmp_path / "evals"
    _evaluate(client, base, [1.00, 1.02, 0.98, 1.01] * 8, 0, 1, art)
    _evaluate(client, chat, [1.60, 1.62, 1.58, 1.61] * 8, 10, 40, art)        # SFT cost language modelling: flagged
    _evaluate(client, rl, [1.61, 1.63, 1.59, 1.60] * 8, 34, 40, art)
    _evaluate(client, rlhf, [1.60, 1.61, 1.59, 1.62] * 8, 12, 40, art)
    return uri, {"base": base, "chat": chat, "rl": rl, "rlhf": rlhf, "rm": rm}


def test_report_json_lists_the_whole_tree(registry, tmp_path, capsys):
    from pipelines.cli import main
    uri, v = registry
    assert main(["report", "--json", "--out", str(tmp_path / "cards"), "--tracking-uri", uri]) == 0
    [card] = json.loads(capsys.readouterr().out)
    versions = {x["ref"]: x for x in card["versions"]}
    assert [x["stage"] for x in card["versions"]] == ["BASE", "SFT", "RL", "RLHF"]
    assert versions[v["chat"].ref]["parent"] == v["base"].ref and versions[v["base"].ref]["parent"] is None
    assert versions[v["rl"].ref]["parent"] == versions[v["rlhf"].ref]["parent"] == v["chat"].ref
    assert versions[v["rlhf"].ref]["failed"] == "its blocking check failed" and versions[v["rl"].ref]["failed"] is None
    assert versions[v["base"].ref]["training"]["tokens_per_s"] == 2000.0
    [rm] = card["reward_models"]
    assert rm["ref"] == v["rm"].ref and rm["parent"] == v["chat"].ref and rm["n"] == 8
    assert rm["interval"] == pytest.approx(list(wilson(7, 8)))
    assert rm["length_baseline"] == {"pairs": 8, "shorter_wins": 0.75, "longer_wins": 0.25}
    arith = card["tasks"]["arithmetic"]["versions"]
    assert arith[v["rl"].ref]["score"] == 34 / 40 and arith[v["rl"].ref]["n"] == 40
    assert arith[v["rl"].ref]["interval"] == pytest.approx(list(wilson(34, 40)))
    assert not arith[v["rl"].ref]["regressed"] and not arith[v["rlhf"].ref]["regressed"]
    bpb = card["tasks"]["bpb"]["versions"]
    assert bpb[v["chat"].ref]["regressed"] and not bpb[v["rl"].ref]["regressed"]   # worse than its parent

    assert card["decontamination"]["arithmetic"] == {"items": 40, "checked": 40, "short": 0, "pretraining": 2,
                                                     "sft": 1, "excluded": 0, "version": v["rlhf"].ref}
    md = (Path(card["card"]).with_name("report.md")).read_text()
    assert "| arithmetic **contaminated** | 40 | 40 | 0 | 2 | 1 | 0 |" in md
    table = md.split("## Reward model")[0]
    [head] = [line for line in table.splitlines() if line.startswith("| task | measure |")]   # one table
    assert all(f"`{x.ref}`" in head for x in v.values() if x.stage != "RM") and "not run" not in head
    assert "RLHF `crawl2chat-rlhf/1` FAILED (its blocking check failed)" in table
    assert "**worse**" in table and "n=40" in table
    assert "| `crawl2chat-rm/1` | `crawl2chat-chat/1` | 0.875 |" in md
    assert Path(card["card"]).is_file() and Path(card["card"]).with_name("report.json").is_file()


def test_attach_links_every_version_to_its_lineage(registry, tmp_path, monkeypatch):
    from training.evals.report import attach, build_cards
    uri, v = registry
    monkeypatch.setenv("CRAWL2CHAT_MLFLOW_UI", "http://mlflow.example:8080")
    client = MlflowClient(uri, registry_uri=uri)
    [card] = build_cards(client, tmp_path / "cards")
    assert "[`crawl2chat-rl/1`](http://mlflow.example:8080/#/models/crawl2chat-rl/versions/1)" in card.markdown
    rid = attach(client, card)
    chat = client.get_model_version("crawl2chat-chat", "1")
    assert chat.description.startswith(f"Report card: runs:/{rid}/report_card/report.md")
    assert "- parent version: [crawl2chat-base/1](http://mlflow.example:8080/#/models/crawl2chat-base/versions/1)" \
        in chat.description
    assert f"/runs/{chat.run_id})" in chat.description and ":5000" not in chat.description
    assert "- data run `sft_mixture`: [sft_mixture](http://mlflow.example:8080/#/experiments/" in chat.description
    rm_run = client.get_run(client.get_model_version("crawl2chat-rm", "1").run_id)
    assert rm_run.inputs.dataset_inputs[0].dataset.name == "preference_pairs"
