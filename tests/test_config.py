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
