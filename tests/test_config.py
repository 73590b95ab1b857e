"""The data config is checked once, in one place, for the CLI and Dagster alike: unknown sections and
keys, wrong types, out-of-range values and malformed YAML are ConfigErrors naming the file and field."""
import subprocess
import sys

import pytest

from pipelines.config import DEFAULT_CONFIG, load_config
from pipelines.errors import ConfigError, UserError


def write(tmp_path, text: str):
    p = tmp_path / "cfg.yaml"
    p.write_text(text)
    return p


def test_shipped_configs_are_valid():
    for path in [None, *sorted(DEFAULT_CONFIG.parent.glob("*.yaml"))]:
        cfg = load_config(path)
        assert cfg["language"]["threshold"] == 0.65


def test_misspelled_section_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section 'langauge' \(did you mean 'language'\?\)") as e:
        load_config(write(tmp_path, "langauge:\n  threshold: 0.5\n"))
    assert "cfg.yaml" in str(e.value)


def test_unknown_key_inside_a_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'language.treshold' \(did you mean 'language.threshold'\?\)"):
        load_config(write(tmp_path, "language:\n  treshold: 0.5\n"))


@pytest.mark.parametrize("yaml_text, field", [
    ("language:\n  threshold: 2.0\n", "language.threshold"),        # would silently drop every document
    ("language:\n  threshold: high\n", "language.threshold"),
    ("minhash:\n  bands: 3\n", "minhash"),                          # bands * rows != num_perm
    ("extraction:\n  backend: lynx\n", "extraction.backend"),
    ("pii:\n  entities: [EMAIL, PHONE_NUMBER]\n", "pii.entities"),
    ("checks:\n  dedup_rate_min: 0.6\n", "checks"),                 # above dedup_rate_max 0.5
    ("tokenizer:\n  vocab_size: 100\n", "tokenizer.vocab_size"),
    ("warc_reader:\n  mime_types: []\n", "warc_reader.mime_types"),
    # every size has an upper bound: 1e12 bytes made fastwarc abort the process with a Rust backtrace
    ("warc_reader:\n  max_body_bytes: 1000000000000\n", "warc_reader.max_body_bytes: input should be less than"),
    ("warc_reader:\n  max_invalid_bytes_frac: 0.5\n", "warc_reader.max_invalid_bytes_frac"),
    ("extraction:\n  lookahead: 100000000\n", "extraction.lookahead"),
    ("extraction:\n  workers: 100000\n", "extraction.workers"),
    ("minhash:\n  num_perm: 100000000\n  bands: 1\n  rows: 100000000\n", "minhash.num_perm"),
    ("minhash:\n  shingle_words: 100000000\n", "minhash.shingle_words"),
    ("pii:\n  window_margin: 1000000000\n", "pii.window_margin"),
    ("checks:\n  pii_sample_docs: 1000000000000\n", "checks.pii_sample_docs"),
    ("tokenizer:\n  shard_tokens: 1000000000000\n", "tokenizer.shard_tokens"),
    ("tokenizer:\n  encode_batch_docs: 1000000000\n", "tokenizer.encode_batch_docs"),
    ("tokenizer:\n  max_docs: 100000000000\n", "tokenizer.max_docs"),
    ("tokenizer:\n  max_chars: 10000000000000000\n", "tokenizer.max_chars"),
])
def test_wrong_types_and_ranges(tmp_path, yaml_text, field):
    with pytest.raises(ConfigError, match=rf"{field}"):
        load_config(write(tmp_path, yaml_text))


def test_overrides_are_checked_too():
    with pytest.raises(ConfigError, match="extraction.workers"):
        load_config(None, {"extraction": {"workers": -1}})


@pytest.mark.parametrize("text, what", [
    ("language:\n  threshold: [1\n", "not valid YAML at line"),
    ("- a\n- b\n", "a data config is a mapping"),
])
def test_malformed_files(tmp_path, text, what):
    with pytest.raises(ConfigError, match=what):
        load_config(write(tmp_path, text))


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_prints_one_line_and_exits_2(tmp_path):
    cfg = write(tmp_path, "langauge:\n  threshold: 0.5\n")
    warc = tmp_path / "x.warc.gz"
    warc.write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "process", str(warc), "--out",
                        str(tmp_path / "out"), "--config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crawl2chat: error:") and "langauge" in lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()  # refused before any work


def test_training_config_refuses_unknown_sections_and_keys(tmp_path):
    from training.config import load_config as load_training_config
    with pytest.raises(ConfigError, match=r"unknown key 'train.lrr' \(did you mean 'train.lr'\?\)"):
        load_training_config(None, ["train.lrr=1e-3"])
    p = tmp_path / "t.yaml"
    p.write_text("trian:\n  steps: 5\nmodel:\n  n_layers: 2\n")
    with pytest.raises(ConfigError, match=r"unknown key 'model.n_layers'.*unknown section 'trian'"):
        load_training_config(p)
    with pytest.raises(ConfigError, match="not key=value"):
        load_training_config(None, ["train.lr"])
    assert load_training_config(None, ["model.rope=true", "model.rmsnorm=true", "model.mlp=swiglu"])["model"]["rope"] is True


@pytest.mark.parametrize("yaml_text, what", [
    ("warc_reader:\n  max_body_bytes: 1000000000000\n", "warc_reader.max_body_bytes"),
    ("url_filter:\n  blocklist_dir: {tmp}/no-such-lists\n", "url_filter.blocklist_dir: {tmp}/no-such-lists is not a folder"),
    ("language:\n  model_path: {tmp}/no-such-lid.bin\n", "language.model_path: {tmp}/no-such-lid.bin is not a file"),
    ("language:\n  model_path: {tmp}/x.warc.gz\n", "language.model_path: {tmp}/x.warc.gz is not a fastText model"),
])
def test_bad_paths_and_sizes_are_one_line_not_a_traceback(tmp_path, yaml_text, what):
    """A size past its bound, a missing block list folder or language model: `crawl2chat process`
    exits 2 with one `crawl2chat: error:` line naming the field (tracebacks before)."""
    from warc_fixtures import html_pages, write_warc
    warc = tmp_path / "x.warc.gz"
    write_warc(warc, html_pages(2))
    cfg = write(tmp_path, yaml_text.format(tmp=tmp_path))
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "process", str(warc), "--out",
                        str(tmp_path / "out"), "--config", str(cfg)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "panicked" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "crawl2chat: error:" in line]
    assert len(errors) == 1 and what.format(tmp=tmp_path) in errors[0], r.stderr[-2000:]
    assert not (tmp_path / "out").exists()
