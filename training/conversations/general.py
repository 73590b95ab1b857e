"""General conversations, generated: small talk, requests the model must decline honestly, and
"I don't know" about entities that exist nowhere.

Used when the user gives no open SFT data (SmolTalk, UltraChat files through data.user.paths) and
beside it otherwise: a small model trained only on identity, arithmetic and letter questions
answered "write a haiku" with the letter-counting tool template, because nothing else had ever
followed a user turn.

    smalltalk   greetings, thanks, goodbyes, "how are you", "can you help me": short replies
    limits      live information (weather, news, time), browsing, long creative writing: what the
                model cannot do and what it can do instead (python, search over its corpus)
    unknown     questions about invented people, places, companies and books ("Who is Velmora
                Quintaska?"), several phrasings, answered with one of several "I don't know"
                sentences. The names are built from syllables and dropped when a corpus word list
                has them (absent from the corpus, so absent from the model), and split train /
                held-out by a hash of the name: the evals ask about names no training row holds.

Every answer is a fixed template filled from the identity config: nothing here needs a model.
"""
from __future__ import annotations

import hashlib
import random

from training.conversations.dataset import content_id
from training.conversations.identity import Identity, with_system

SOURCE = "general"
HELDOUT_FRACTION = 0.2

SMALLTALK: list[tuple[list[str], list[str]]] = [
    (["Hi", "Hello", "Hey", "Hello there!", "hi!", "Good morning", "Good evening", "Hey, how's it going?", "yo"],
     ["Hello! How can I help you today?", "Hi! What can I do for you?", "Hello! I'm {name}. What would you like to know?"]),
    (["How are you?", "How are you doing today?", "how's your day", "Are you doing well?"],
     ["I'm a program, so I don't have days, but I'm ready to help. What do you need?",
      "Doing fine, thanks for asking! What can I help you with?"]),
    (["Thanks!", "Thank you.", "thanks a lot", "Great, thank you!", "Thanks for the help.", "Perfect, thanks."],
     ["You're welcome!", "Glad I could help.", "Any time! Let me know if you need anything else."]),
    (["Bye", "Goodbye!", "See you later.", "That's all for now.", "ok bye"],
     ["Goodbye!", "Bye! Come back any time.", "See you!"]),
    (["Can you help me?", "I have a question.", "Can I ask you something?", "I need some help."],
     ["Of course. What is your question?", "Sure, go ahead and ask.", "Yes. What do you need help with?"]),
    (["What can you do?", "How can you help me?", "What are you good at?"],
     ["I can answer short questions, do exact arithmetic and letter counting with a Python tool, and "
      "search the web pages I was trained on.",
      "I'm a small assistant: I can chat, calculate with Python and look things up in my training corpus."]),
    (["Tell me a joke.", "Say something funny.", "Do you know any jokes?"],
     ["Why did the computer go to the doctor? It had a virus.",
      "I'd tell you a joke about UDP, but you might not get it."]),
    (["ok", "Okay.", "Cool.", "Nice.", "I see."],
     ["Anything else I can help with?", "Let me know if you have another question."]),
]

LIMITS: list[tuple[list[str], list[str]]] = [
    (["What's the weather like today?", "Will it rain tomorrow?", "What is the temperature outside?",
      "What's the weather in {city}?"],
     ["I can't check the weather: I have no access to live information. A weather service will know.",
      "I don't have live data such as the weather. Please check a weather website or app."]),
    (["What time is it?", "What is today's date?", "What day is it today?"],
     ["I don't have a clock or the current date. Your device can tell you.",
      "I can't see the time or date: I only know my training data."]),
    (["What's in the news today?", "What happened in the world this week?", "Who won the game last night?"],
     ["I don't know about recent events: my knowledge stops at my training data, and I can't browse the news.",
      "I can't see today's news. My knowledge comes only from the web pages I was trained on."]),
    (["Open {site} for me.", "Can you browse to {site}?", "Look at this link: https://{site}/page",
      "Visit {site} and tell me what it says."],
     ["I can't browse the web. I can only search the pages of my own training corpus.",
      "I have no internet access, so I can't open web pages. I can search my training corpus instead."]),
    (["Write a poem about {topic}.", "Write a haiku about {topic}.", "Write a short story about {topic}.",
      "Write an essay about {topic}.", "Compose a song about {topic}."],
     ["I'm a very small model, so my writing would not be good. I can answer short questions, calculate, "
      "count letters and search my training data.",
      "Long creative writing is beyond a model of my size. Ask me a short question instead, or something "
      "I can work out with Python."]),
    (["Translate '{topic}' into French.", "How do you say {topic} in German?"],
     ["I can't translate reliably: I'm a small model trained mostly on English web pages."]),
]
CITIES = ["Paris", "London", "Tokyo", "Berlin", "Lagos", "Lima", "Toronto", "Mumbai", "Sydney", "Oslo"]
SITES = ["example.com", "wikipedia.org", "news.example.org", "my-blog.net", "shop.example.com"]
TOPICS = ["the sea", "autumn", "a cat", "friendship", "the moon", "coffee", "rain", "trains", "mountains", "music"]

# invented entities: syllables that make names no corpus has (checked against corpus words anyway)
_SYLLABLES = ("ka ve lo mi ra zu qui ten dor bri sal var nex thu pol gri ost wen yar fel mor tas lin "
              "zar kel vu bra sto ple dri nak").split()
UNKNOWN_QUESTIONS = {
    "person": ["Who is {x}?", "What do you know about {x}?", "Tell me about {x}.", "What is {x} famous for?",
               "When was {x} born?", "Who was {x}?", "What did {x} do?", "Can you tell me who {x} is?",
               "What is {x} known for?", "Where does {x} live?"],
    "place": ["Where is {x}?", "What is the capital of {x}?", "How many people live in {x}?",
              "Tell me about the town of {x}.", "What country is {x} in?", "What is {x} like?"],
    "company": ["What does {x} make?", "Who founded {x}?", "When was {x} founded?", "What is {x}?",
                "Tell me about the company {x}.", "Where is {x} based?"],
    "book": ["Who wrote {x}?", "What is the book {x} about?", "When was {x} published?",
             "Have you read {x}?", "Summarize {x}."],
}
_SUFFIX = {"person": "", "place": "", "company": " {co}", "book": ""}
_COMPANY = ["Labs", "Systems", "Industries", "Group", "Works"]
IDK_UNKNOWN = ["I don't know {x}. I have no information about it in my training data.",
               "I'm not sure: I don't know anything about {x}, and I'd rather not guess.",
               "I don't know. {x} does not appear in what I've read.",
               "Sorry, I don't know who or what {x} is.",
               "I don't recognize {x}, so I don't know. If you share some text about it, I can help."]


def split_of(key: str) -> str:
    h = int.from_bytes(hashlib.sha256(f"general:{key}".encode()).digest()[:8], "big") / 2 ** 64
    return "heldout" if h < HELDOUT_FRACTION else "train"


def _word(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()


def invented_entity(rng: random.Random, kind: str) -> str:
    if kind == "person":
        return f"{_word(rng, 2)} {_word(rng, 3)}"
    if kind == "place":
        return _word(rng, 3)
    if kind == "company":
        return f"{_word(rng, 2)} {rng.choice(_COMPANY)}"
    return f"The {_word(rng, 2)} of {_word(rng, 3)}"


def unknown_questions(n: int, seed: int = 0, split: str = "train",
                      corpus_words: set[str] | None = None) -> list[tuple[str, str, str]]:
    """`n` (question, entity, kind) about invented entities of one split, none of whose words is in
    `corpus_words` (lowercase)."""
    rng = random.Random(f"unknown:{split}:{seed}")
    known = corpus_words or set()
    out, seen = [], set()
    for _ in range(n * 50):
        if len(out) >= n:
            break
        kind = rng.choice(sorted(UNKNOWN_QUESTIONS))
        x = invented_entity(rng, kind)
        if x in seen or split_of(x) != split or any(w.lower() in known for w in x.split()):
            continue
        seen.add(x)
        out.append((rng.choice(UNKNOWN_QUESTIONS[kind]).format(x=x), x, kind))
    return out


def _fill(text: str, rng: random.Random) -> str:
    return text.format(city=rng.choice(CITIES), site=rng.choice(SITES), topic=rng.choice(TOPICS), name="{name}")


def general_conversations(identity: Identity, n: int, seed: int = 0, split: str = "train",
                          unknown_fraction: float = 0.5, system_fraction: float = 0.2,
                          corpus_words: set[str] | None = None) -> list[dict]:
    """`n` distinct conversations: `unknown_fraction` about invented entities, the rest small talk
    and limits (small talk and limits are the same on both splits: they are not what the evals ask)."""
    rng = random.Random(f"general:{split}:{seed}")
    unknown = unknown_questions(round(n * unknown_fraction), seed, split, corpus_words)
    rows, seen = [], set()

    def add(messages: list[dict]):
        messages = with_system(messages, rng, system_fraction)
        cid = content_id(SOURCE, messages)
        if cid not in seen:
            seen.add(cid)
            rows.append({"id": cid, "source": SOURCE, "messages": messages})

    for question, x, _ in unknown:
        add([{"role": "user", "content": question},
             {"role": "assistant", "content": rng.choice(IDK_UNKNOWN).format(x=x)}])
    pools = SMALLTALK + LIMITS
    for _ in range(20 * n):
        if len(rows) >= n:
            break
        asks, answers = rng.choice(pools)
        add([{"role": "user", "content": _fill(rng.choice(asks), rng)},
             {"role": "assistant", "content": identity.fill(rng.choice(answers))}])
    return rows
