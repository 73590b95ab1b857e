"""PII scrubbing with presidio (pattern recognizers, no NLP model): recall, precision, modes,
prefilter, offline operation."""
from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.document import Document
from pipelines.pii import DUMMY_VALUES, FINEWEB_REPLACEMENTS, NER_MODEL, PIIScrubber
from pipelines.runner import run_stages

ROOT = Path(__file__).resolve().parents[1]
FILLER = ("The committee met on Tuesday to review the annual report and discuss the budget "
          "for next year. Several members raised questions about the schedule. ")


@pytest.fixture(scope="module")
def placeholder():
    return PIIScrubber(mode="placeholder")


PLANTED = {
    "EMAIL_ADDRESS": ["john.doe@gmail.com", "a.b-c+tag@sub.example.co.uk", "first_last@uni-heidelberg.de",
                      "info@xn--mnchen-3ya.de"],
    "IP_ADDRESS": ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "2001:4860:4860::8888",
                   "::ffff:8.8.4.4"],
    "CREDIT_CARD": ["4111 1111 1111 1111", "5555555555554444", "3782 822463 10005", "6011-1111-1111-1117",
                    "2221-2089-3452-3620"],                                         # Mastercard 2-series
    "PHONE_NUMBER": ["(212) 736-5000", "+1 650-253-0000", "650.253.0000",         # US
                     "+44 20 7946 0958", "020 7946 0958", "07700 900123",           # UK
                     "+49 30 901820", "030 901820", "+49 (0)89 12345678",          # DE
                     "01 42 68 53 00", "+33 1 42 68 53 00", "06 12 34 56 78",      # FR
                     "+81 3-3224-9999", "+61 2 9374 4000",                          # international
                     "+4915253419225", "+33 7.30.32.98.17"],  # also read as a card / as the IP 7.30.32.98
    "IBAN_CODE": ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432",
                  "FR14 2004 1010 0505 0001 3M02 606"],
    "US_SSN": ["219-09-9999", "219 09 9999", "219.09.9999"],  # presidio's "medium" form: no context needed
}


@pytest.mark.parametrize("entity,value", [(e, v) for e, vs in PLANTED.items() for v in vs])
def test_recall_on_planted_values(placeholder, entity, value):
    text = FILLER + f"Reach us via {value} for details. " + FILLER
    out, counts = placeholder.scrub(text)
    assert value not in out
    assert out == FILLER + f"Reach us via <{entity}> for details. " + FILLER
    assert counts == {entity: 1}


@pytest.mark.parametrize("text", [
    "Internal hosts 10.0.0.1, 192.168.0.10, 172.16.5.4 and 127.0.0.1 answer; 169.254.1.1 too.",
    "Broadcast 255.255.255.255 and 0.0.0.0; IPv6 fe80::1, ::1, fc00::1 and 2001:db8::1.",
    "Slicing a[::2] or std::vector at 12:30:45 is code, not an address.",
    "Card 4111 1111 1111 1112 fails the Luhn check; so does 5555555555554445.",
    "IBAN DE89 3704 0044 0532 0130 01 has a bad checksum.",
    "Posted 2023-12-05, ISBN 978-3-16-148410-0, population 1,234,567, pi 3.14159265.",
    "Not an email: foo@bar or @handle.",
])
def test_non_pii_left_untouched(placeholder, text):
    assert placeholder.scrub(text) == (text, {})


@pytest.mark.parametrize("text,replaced", [
    ("SSN: 219099999", "SSN: <US_SSN>"), ("social security no. 21909-9999", "social security no. <US_SSN>"),
    ("His SSN is 219-099999 on file.", "His SSN is <US_SSN> on file."),
    ("Order 219099999 shipped.", None), ("Springfield, IL 62704-1234.", None), ("Ref 219-099999 paid.", None),
    ("Example SSN 123-45-6789 (the canonical sample).", None)])
def test_ssn_weak_forms_need_a_context_word(placeholder, text, replaced):
    # presidio scores 9 digits, 5-4 and 3-6 "very weak"; without its context words they are order
    # numbers and ZIP+4 codes
    assert placeholder.scrub(text)[0] == (replaced or text)


def test_fineweb_mode_cycles_dummy_values():
    scrubber = PIIScrubber(mode="fineweb")
    text = "Write to ann@gmail.com or bob@gmail.com. Servers: 8.8.8.8, 9.9.9.9 and 10.1.1.1."
    out, counts = scrubber.scrub(text)
    assert counts == {"EMAIL_ADDRESS": 2, "IP_ADDRESS": 2}
    assert "ann@" not in out and "bob@" not in out and "8.8.8.8" not in out and "9.9.9.9" not in out
    assert "10.1.1.1" in out  # private: kept
    emails = FINEWEB_REPLACEMENTS["EMAIL_ADDRESS"]
    assert out.count(emails[0]) == 1 and out.count(emails[1]) == 1
    ips = [ip for ip in FINEWEB_REPLACEMENTS["IP_ADDRESS"] if ip in out]
    assert len(ips) == 2 and ips[0] != ips[1]
    # the cycle continues over the next document
    out2, _ = scrubber.scrub("Again: carl@gmail.com")
    assert out2 == f"Again: {emails[0]}"


def test_dummy_values_are_not_detected_again(placeholder):
    # FineWeb's dummy IPs are public addresses by design: everything else must not be re-flagged,
    # so a residue check over scrubbed output only has to skip the IPs.
    non_ip = [v for k, vs in FINEWEB_REPLACEMENTS.items() if k != "IP_ADDRESS" for v in vs
              if "@" not in v and k != "PERSON"]
    text = " ; ".join(non_ip)
    assert placeholder.scrub(text) == (text, {})
    assert "email@example.com" in DUMMY_VALUES


def test_stage_counts_and_prefilter():
    docs = [Document(FILLER * 5, "a"),
            Document(FILLER + "Mail jane@gmail.com or call +44 20 7946 0958.", "b"),
            Document(FILLER + "Released 2023-12-05, build 20231205.", "c")]
    out, stats = run_stages(iter(docs), [PIIScrubber(mode="placeholder")])
    texts = [d.text for d in out]
    assert texts[0] == FILLER * 5 and texts[2] == docs[2].text
    assert texts[1].endswith("Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>.")
    c = stats["pii"].counters
    assert c["pii_prefilter_skipped"] == 1  # doc a never reaches presidio; doc c does, unchanged
    assert c["replaced_EMAIL_ADDRESS"] == 1 and c["replaced_PHONE_NUMBER"] == 1
    assert stats["pii"].docs_in == stats["pii"].docs_out == 3 and not stats["pii"].dropped


def test_entities_config_limits_what_is_replaced():
    scrubber = PIIScrubber(mode="placeholder", entities=["EMAIL_ADDRESS", "IP_ADDRESS"])  # FineWeb's set
    out, counts = scrubber.scrub("x@gmail.com, 8.8.8.8, +44 20 7946 0958, 4111 1111 1111 1111")
    assert out == "<EMAIL_ADDRESS>, <IP_ADDRESS>, +44 20 7946 0958, 4111 1111 1111 1111"
    with pytest.raises(ValueError):
        PIIScrubber(mode="nope")


def test_pickles_without_engines(placeholder):
    placeholder.scrub("warm x@gmail.com")
    clone = pickle.loads(pickle.dumps(placeholder))
    assert clone._analyzer is None
    assert clone.scrub("mail y@gmail.com") == ("mail <EMAIL_ADDRESS>", {"EMAIL_ADDRESS": 1})


@pytest.mark.skipif(importlib.util.find_spec(NER_MODEL) is not None, reason="NER model installed")
def test_ner_without_model_is_a_clear_error():
    with pytest.raises(RuntimeError, match=NER_MODEL):
        PIIScrubber(ner=True).scrub("John Smith lives here.")


NO_NETWORK_SCRIPT = r"""
import socket
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args[:2])
    raise OSError("network disabled by test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from pipelines.pii import PIIScrubber
s = PIIScrubber()
out, counts = s.scrub("Mail john.doe@gmail.com or a@b.co.uk; ip 8.8.8.8; +44 20 7946 0958")
assert counts == {"EMAIL_ADDRESS": 2, "IP_ADDRESS": 1, "PHONE_NUMBER": 1}, counts
print("ATTEMPTS", len(attempts))
"""


def test_no_network_access(tmp_path):
    # A fresh process (tldextract caches per process) with sockets that record and refuse every
    # connection, and an empty HOME so no cached public-suffix list can be found.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLDEXTRACT")}
    env.update(HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", NO_NETWORK_SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ATTEMPTS 0" in proc.stdout
    assert not (tmp_path / "cache").exists()


TORCH_FREE_SCRIPT = """
import sys
from pipelines.pii import PIIScrubber
out, _ = PIIScrubber(mode="placeholder").scrub("Write to jane@example.org now.")
assert out == "Write to <EMAIL_ADDRESS> now.", out
print("TORCH_LOADED", "torch" in sys.modules)
import torch  # blocked only while presidio imported
print("TORCH_WORKS", float(torch.ones(2).sum()) == 2.0)
"""


def test_presidio_loads_without_torch_which_still_imports_afterwards():
    # Every Spark Python worker imports presidio; pulling torch in through thinc cost 2+ s each.
    env = {k: v for k, v in os.environ.items() if k != "PRESIDIO_DEVICE"}
    proc = subprocess.run([sys.executable, "-c", TORCH_FREE_SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "TORCH_LOADED False" in proc.stdout and "TORCH_WORKS True" in proc.stdout
