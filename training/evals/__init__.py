"""Evaluation: every model version scored the same way (training/evals/suite.py builds the suite).

core.py        EvalResult, the task interface, row seeds, pass@k, answer extraction
lm.py          base tasks: bits per byte, multiple choice by continuation log-likelihood
protocol.py    protocol adherence (also the chat_model asset's blocking check)
generative.py  identity, arithmetic / counting / spelling with and without tools, GSM8K files
knowledge.py   held-out knowledge probes: "I don't know" when it should, answers when it knows
suite.py       the config, which tasks a base or chat model gets, running them
report.py      the report card of a lineage (crawl -> tokenizer -> pretraining -> post-training -> evals)
"""
