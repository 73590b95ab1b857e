"""Evaluation: every model version scored the same way (training/evals/suite.py builds the suite).

core.py        EvalResult, the task interface, row seeds, pass@k, answer extraction
lm.py          base tasks: bits per byte, multiple choice by continuation log-likelihood
protocol.py    protocol adherence (also the chat_model asset's blocking check)
generative.py  identity, arithmetic / counting / spelling with and without tools, GSM8K files
knowledge.py   held-out knowledge probes: "I don't know" when it should, answers when it knows
suite.py       the config, which tasks a base or chat model gets, running them
benchmarks.py  ARC, HellaSwag, MMLU, GSM8K, HumanEval from local files; the CORE-style aggregate
intervals.py   95% intervals (Wilson, bootstrap) and the regression flag
decontam.py    n-gram overlap of eval items with the pretraining corpus and the SFT data
report.py      the report card of a lineage tree (crawl -> tokenizer -> pretraining -> post-training -> evals)
card_table.py  the card's one table of every version, the reward model, and the card as JSON
"""
