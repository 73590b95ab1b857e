"""Identity conversations: the model knows who it is only because SFT data tells it.

From a small config (name, who built it, what it was trained on, knowledge cut-off = the crawl's
date) we write questions x answer templates. The question paraphrases come in two disjoint lists:
TRAIN for the conversations, HELDOUT for the evals (`identity_questions("heldout")`), so an eval
that asks a held-out paraphrase measures whether the model generalized, not whether it memorized
the exact question. Train questions are varied (greetings, case, punctuation); no variant of a train
question contains a held-out one (checked by `check_heldout_disjoint`).

System prompts: a share of the conversations (`system_fraction`) opens with a system message drawn
from SYSTEM_PROMPTS (generic operator instructions, none naming another assistant), so the model
keeps its name whatever system prompt a user or a front end sets; the evals ask the held-out
paraphrases under SYSTEM_HELDOUT, prompts no training conversation has. Without this the demo
model's identity rate dropped under the CLI's then default system prompt, absent from all training.
"""
from __future__ import annotations

import calendar
import random
import re
from dataclasses import dataclass
from datetime import date

from training.conversations.dataset import content_id

SOURCE = "identity"

TRAIN: dict[str, list[str]] = {
    "name": ["What is your name?", "What's your name?", "Do you have a name?", "What should I call you?",
             "Tell me your name.", "How do I address you?", "Whom am I chatting with?",
             "May I know your name?", "What do people call you?", "Who am I talking to?"],
    "who": ["Who are you?", "What are you?", "Introduce yourself.", "Tell me about yourself.",
            "Are you a person or a program?", "Are you a human?", "Describe yourself in a sentence.",
            "Are you an AI?", "What kind of assistant are you?"],
    "other": ["Are you ChatGPT?", "Are you Claude?", "Are you Llama?", "Were you made by OpenAI?",
              "Are you Google's assistant?"],
    "creator": ["Who made you?", "Who created you?", "Who built you?", "Who developed you?",
                "Which company made you?", "Who trained you?", "Who is behind you?",
                "Where do you come from?", "Who designed you?", "Who are your makers?"],
    "training": ["What were you trained on?", "What data were you trained on?", "How were you trained?",
                 "Where does your knowledge come from?", "What did you learn from?",
                 "What is your training data?", "Which texts did you read during training?",
                 "How did you learn language?", "Were you trained on the internet?",
                 "What sources were used to train you?"],
    "cutoff": ["When is your knowledge cutoff?", "What is your knowledge cut-off date?",
               "How recent is your knowledge?", "Up to what date do you know things?",
               "When does your training data end?", "Do you know about recent events?",
               "What's the latest date you have information about?", "How up to date are you?",
               "Until when were you trained?", "Is your information current?"],
    "tools": ["What tools can you use?", "Can you run code?", "Can you search the web?",
              "Can you do exact calculations?", "Do you have access to any tools?"],
}

HELDOUT: dict[str, list[str]] = {
    "name": ["By what name do you go?", "Kindly state your name.", "What name were you given?"],
    "who": ["Could you explain what kind of entity you are?", "What exactly am I speaking with right now?",
            "Sum up your nature in a few words."],
    "other": ["Are you GPT-4?", "Is this Gemini I am talking to?"],
    "creator": ["Which team is responsible for creating you?", "Who is your developer?",
                "Tell me who put you together."],
    "training": ["What kind of text was used to teach you?", "On which corpus were you pretrained?",
                 "Explain what material your training drew on."],
    "cutoff": ["Until which month does your knowledge extend?", "What is the most recent period your data covers?",
               "At what point does your knowledge stop?"],
    "tools": ["Are you able to execute programs?", "Which helpers can you call while answering?"],
}

ANSWERS: dict[str, list[str]] = {
    "name": ["My name is {name}.", "I'm {name}.", "You can call me {name}.",
             "I'm {name}, an AI assistant built by {creator}.", "I go by {name}."],
    "who": ["I'm {name}, an AI language model built by {creator}. I was trained on {trained_on}.",
            "I am {name}, a computer program: a language model made by {creator}, not a person.",
            "I'm {name}, an AI assistant created by {creator}. I answer questions and can use tools "
            "such as a Python interpreter and a search over my training corpus.",
            "I'm {name}, a language model by {creator}, trained from scratch on {trained_on}."],
    "other": ["No, I'm {name}, a different model: {creator} built me and trained me from scratch.",
              "No. I'm {name}, built by {creator}; I'm not related to that assistant.",
              "I'm not. My name is {name}, and I was trained by {creator} on {trained_on}."],
    "creator": ["I was built by {creator}.", "{creator_cap} made me.",
                "I'm {name}, and {creator} built and trained me.",
                "{creator_cap} created me, training me on {trained_on}."],
    "training": ["I was trained on {trained_on}.",
                 "My knowledge comes from {trained_on}. After that I was fine-tuned on conversations to "
                 "be a helpful assistant.",
                 "{creator_cap} pretrained me on {trained_on}, then taught me to chat with example "
                 "conversations."],
    "cutoff": ["My knowledge comes from a web crawl of {cutoff}, so I know little about anything later.",
               "My training data ends around {cutoff}. For later events, please check a current source.",
               "I only know what was in my training data, which stops around {cutoff}.",
               "My knowledge cut-off is {cutoff}."],
    "tools": ["I can run Python code for exact calculations, counting and spelling, and I can search "
              "the text I was trained on. I cannot browse the live web.",
              "I have two tools: a Python interpreter (for exact arithmetic and letter counting) and a "
              "search over my own training corpus. I have no access to the live internet."],
}

SYSTEM_PROMPTS = [
    "You are a helpful assistant.", "You are a helpful AI assistant.", "You are a friendly chatbot.",
    "Answer the user's questions briefly.", "Be concise.", "You are an assistant. Keep answers short.",
    "You are a knowledgeable assistant. Answer accurately.", "Always be polite.",
    "You are a helpful, honest and harmless assistant.", "Reply in plain English.",
    "You are a chat assistant running on a small computer.", "Help the user with their questions.",
    "You can use tools when they help.", "Give direct answers without long explanations.",
    "You are an AI model. Answer truthfully and say so when you do not know.",
    "The user is a student. Be patient and clear.", "You are a support assistant.",
    "Keep your replies under three sentences."]
SYSTEM_HELDOUT = ["You are a useful assistant that answers questions.", "Respond clearly and accurately.",
                  "You are an AI helper. Be brief and friendly."]

OPENERS = ["", "", "", "Hi! ", "Hello. ", "Hey, ", "Quick question: ", "Excuse me, ", "Just curious: "]
GREETINGS = ["Hi", "Hello!", "Hey there", "Good morning", "hi :)"]
GREETING_ANSWERS = ["Hello! I'm {name}. How can I help you today?",
                    "Hi! I'm {name}, an AI assistant by {creator}. What can I do for you?",
                    "Hey! {name} here. What would you like to know?"]


@dataclass(frozen=True)
class Identity:
    name: str
    creator: str
    trained_on: str
    cutoff: str

    def fill(self, template: str) -> str:
        return template.format(name=self.name, creator=self.creator, trained_on=self.trained_on,
                               cutoff=self.cutoff, creator_cap=self.creator[:1].upper() + self.creator[1:])


def crawl_date(crawl: str) -> str:
    """CC-MAIN-YYYY-WW -> 'Month YYYY' (the Monday of that ISO week); other names are returned as they are."""
    m = re.fullmatch(r"CC-MAIN-(\d{4})-(\d{2})", crawl)
    if not m:
        return crawl
    year, week = int(m[1]), int(m[2])
    try:
        d = date.fromisocalendar(year, max(1, week), 1)
    except ValueError:
        return str(year)
    return f"{calendar.month_name[d.month]} {d.year}"


def make_identity(cfg, crawl: str) -> Identity:
    """From the identity config (name, creator, trained_on, knowledge_cutoff) and the crawl."""
    trained_on = cfg.trained_on or (f"web pages from Common Crawl ({crawl}) that were filtered for quality, "
                                    "deduplicated and scrubbed of personal information")
    return Identity(cfg.name, cfg.creator, trained_on, cfg.knowledge_cutoff or crawl_date(crawl))


def identity_questions(split: str = "train") -> dict[str, list[str]]:
    """Question paraphrases per intent: "train" ones make the conversations, "heldout" ones are for evals."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    return {k: list(v) for k, v in (TRAIN if split == "train" else HELDOUT).items()}


def normalize(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def _vary(question: str, rng: random.Random) -> str:
    q = rng.choice(OPENERS) + question
    r = rng.random()
    if r < 0.15:
        q = q.lower()
    elif r < 0.25:
        q = q.rstrip("?.")
    return q


def _answer(identity: Identity, intent: str, rng: random.Random) -> str:
    return identity.fill(rng.choice(ANSWERS[intent]))


def system_prompts(split: str = "train") -> list[str]:
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    return list(SYSTEM_PROMPTS if split == "train" else SYSTEM_HELDOUT)


def with_system(messages: list[dict], rng: random.Random, fraction: float, split: str = "train") -> list[dict]:
    """`messages` opened by a system prompt of the split with probability `fraction`."""
    if rng.random() < fraction:
        return [{"role": "system", "content": rng.choice(system_prompts(split))}, *messages]
    return messages


def identity_conversations(identity: Identity, n: int, seed: int = 0, split: str = "train",
                           system_fraction: float = 0.3) -> list[dict]:
    """`n` distinct conversations (fewer if the combinations run out), deterministic for a seed:
    mostly one question and its answer, some a greeting first, some two questions in a row; a
    `system_fraction` of them under a system prompt of the split."""
    rng = random.Random(f"identity:{split}:{seed}")
    questions = identity_questions(split)
    intents = sorted(questions)
    rows, seen = [], set()
    for _ in range(n * 20):
        if len(rows) >= n:
            break
        intent = rng.choice(intents)
        ask = _vary(rng.choice(questions[intent]), rng) if split == "train" else rng.choice(questions[intent])
        messages: list[dict] = []
        shape = rng.random()
        if shape < 0.15:
            messages += [{"role": "user", "content": rng.choice(GREETINGS)},
                         {"role": "assistant", "content": identity.fill(rng.choice(GREETING_ANSWERS))}]
        messages += [{"role": "user", "content": ask},
                     {"role": "assistant", "content": _answer(identity, intent, rng)}]
        if shape > 0.85:
            second = rng.choice([i for i in intents if i != intent])
            messages += [{"role": "user", "content": rng.choice(questions[second])},
                         {"role": "assistant", "content": _answer(identity, second, rng)}]
        messages = with_system(messages, rng, system_fraction, split)
        cid = content_id(SOURCE, messages)
        if cid not in seen:
            seen.add(cid)
            rows.append({"id": cid, "source": SOURCE, "messages": messages})
    return rows


def check_heldout_disjoint() -> None:
    """No held-out paraphrase is (a part of) a train paraphrase after normalization, or the reverse."""
    train = [normalize(q) for qs in TRAIN.values() for q in qs]
    for qs in HELDOUT.values():
        for q in qs:
            h = normalize(q)
            clash = [t for t in train if h in t or t in h]
            if clash:
                raise AssertionError(f"held-out question {q!r} overlaps train question(s) {clash}")
