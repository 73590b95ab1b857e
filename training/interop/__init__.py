"""Models leave crawl2chat: a Hugging Face transformers directory (hf.py) and a GGUF file for
llama.cpp / Ollama / LM Studio (gguf.py), both in the standard architecture of the model's family
(families.py), with the chat protocol as a Jinja template (chat_template.py) and a model card
(card.py). `crawl2chat export` is cli.py; the export of every registered chat version is
registered.py, which the Dagster asset (assets/interop.py) runs."""
