"""Low-quality article bodies, each aimed at ONE rule of fineweb-recipe.md.

A planted page must survive everything before its rule (URL filter, trafilatura extraction,
English LID > 0.65, earlier quality rules) and then trip its rule first. What trafilatura does to
the body matters (favor_precision, deduplicate=True):
- every <p> and <h1> becomes one line; `<li>` becomes "- item"; it never emits a blank line, so
  the paragraph rules (dup_para_frac, dup_para_char_frac), which split on blank lines, cannot be
  reached through it and are not planted;
- a text block over 100 characters seen more than 3 times is dropped (process-wide LRU), so
  repeated blocks here are short or appear at most twice, and filler comes from the prose deck.
The n-gram rules have narrow windows (dup_7 must exceed 0.13 while dup_6 stays <= 0.14 ...), so
those bodies are calibrated here with a small regex tokenizer close to NLTK's on plain words.

- trafilatura also drops a whole document seen more than 3 times: fixed bodies are shuffled (and
  numbers, names, prices varied) per page, and fixed lines stay under 100 characters.

Each maker returns (title, paragraphs, extra_html): paragraphs go into <p>, extra_html (lists)
is appended to the article.
"""
from __future__ import annotations

import random
import re
from collections import Counter

_TOKEN = re.compile(r"\w+(?:'\w+)?|[^\w\s]")

RULES = {
    "gopher_repetition": ["dup_line_frac", "dup_line_char_frac", "top_2_gram", "top_3_gram", "top_4_gram",
                          "duplicated_5_n_grams", "duplicated_6_n_grams", "duplicated_7_n_grams",
                          "duplicated_8_n_grams", "duplicated_9_n_grams", "duplicated_10_n_grams"],
    "gopher_quality": ["gopher_short_doc", "gopher_below_avg_threshold", "gopher_above_avg_threshold",
                       "gopher_too_many_hashes", "gopher_too_many_ellipsis", "gopher_too_many_bullets",
                       "gopher_too_many_end_ellipsis", "gopher_below_alpha_threshold",
                       "gopher_enough_stop_words"],
    "c4_quality": ["lorem_ipsum", "curly_bracket", "too_few_sentences"],
    "fineweb_quality": ["line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio"],
}
# (stage, reason) in pipeline order; gopher_long_doc (> 100,000 words, ~600 KB) is left out: it
# would hit the extraction timeout first, and would weigh more than the rest of a small crawl.
ALL_RULES = [(stage, reason) for stage, reasons in RULES.items() for reason in reasons]

_DUP_N_WINDOW = {5: 0.19, 6: 0.16, 7: 0.147, 8: 0.134, 9: 0.122, 10: 0.111}  # aim inside (thr, next)
_TOP_N = {2: ("cheap flights", 0.235), 3: ("luxury beachfront apartments", 0.21),
          4: ("affordable luxury beachfront apartments", 0.185)}
_CITIES = ("Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Prague", "Lisbon", "Dublin", "Oslo",
           "Athens", "Warsaw", "Zurich", "Brussels", "Munich", "Milan", "Porto", "Seville", "Krakow", "Nice",
           "Geneva", "Lyon", "Hamburg", "Venice", "Florence", "Naples", "Malaga", "Bergen", "Riga", "Tallinn")
_LEADS = ("Honestly", "Remember", "Notably", "Frankly", "Clearly", "Sometimes", "Often", "Again", "Today",
          "Meanwhile", "Naturally", "Basically", "Surely", "Really", "Arguably", "Admittedly", "Ideally",
          "Usually", "Rarely", "Certainly", "Obviously", "Generally", "Perhaps", "Initially")
_TAILS = ("indeed", "daily", "here", "now", "too", "again", "anyway", "overall", "regardless", "still",
          "instead", "nowadays", "tonight", "somehow", "meanwhile", "eventually", "quickly", "slowly",
          "happily", "finally", "lately", "twice", "mostly", "gladly")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def dup_ngram_frac(text: str, n: int, words=None) -> float:
    words = tokens(text) if words is None else words
    seen, rep, idx = set(), 0, 0
    while idx <= len(words) - n:
        gram = "".join(words[idx:idx + n])
        if gram in seen:
            rep += len(gram)
            idx += n
        else:
            seen.add(gram)
            idx += 1
    return rep / max(1, len(text))


def top_ngram_frac(text: str, n: int, words=None) -> float:
    words = tokens(text) if words is None else words
    grams = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    return len(gram) * count / max(1, len(text))


def make_low_quality(reason: str, rng: random.Random, deck) -> tuple[str, list[str], str]:
    """(title, paragraphs, extra_html) for a page meant to be dropped by `reason`."""
    if reason.startswith("duplicated_"):
        return _dup_ngrams(int(reason.split("_")[1]), rng, deck)
    if reason.startswith("top_"):
        return _top_ngram(int(reason.split("_")[1]), rng, deck)
    title, paras, extra = globals()["_" + reason](rng, deck)
    if reason in _SHUFFLED:  # fixed lines: a new order per page keeps whole documents unique
        paras = rng.sample(paras, len(paras))
    return title, paras, extra


_SHUFFLED = {"gopher_short_doc", "gopher_below_avg_threshold", "gopher_above_avg_threshold",
             "gopher_too_many_ellipsis", "gopher_too_many_end_ellipsis", "gopher_enough_stop_words",
             "line_punct_ratio", "short_line_ratio"}


# --- gopher repetition --------------------------------------------------------------------------

def _dup_line_frac(rng, deck):
    # Short call-to-action lines (< 100 chars: trafilatura never dedups them) repeated between
    # paragraphs: 8 of ~17 lines are repeats, well over 0.3, while characters stay low.
    ctas = ["Order today and get free shipping.", "Limited stock, buy now while it lasts."]
    paras = []
    for p in deck.take(8, max_chars=260):
        paras += [p, ctas[len(paras) % 2]]
    return "Weekly deals and tips", paras, ""


def _dup_line_char_frac(rng, deck):
    # Two long paragraphs shown twice (a block >100 chars may appear up to 3 times): 2 repeats
    # out of ~12 lines (< 0.3 by count) but ~25% of the characters.
    long = deck.take(2, min_chars=450)
    short = deck.take(7, max_chars=260)
    paras = short[:3] + [long[0]] + short[3:5] + [long[1]] + short[5:] + [long[0], long[1]]
    return "Frequently asked questions", paras, ""


def _top_ngram(n, rng, deck):
    phrase, target = _TOP_N[n]
    templates = ("Book {p} to {c} and compare {p} today.", "Our {p} in {c} are the best {p} online.",
                 "Find {p} near {c} because {p} matter.", "Search {p} from {c} and save on {p}.",
                 "Only {p} for {c} travellers: {p} made simple.", "Why pay more when {p} in {c} are {p} here?")
    cities = list(_CITIES)
    rng.shuffle(cities)
    spam = [templates[i % len(templates)].format(p=phrase, c=c) for i, c in enumerate(cities)]
    spam = [f"{line} From {rng.randint(19, 999)} EUR." for line in spam]  # unique lines per page
    title = f"Deals on {phrase}"
    lines = _calibrate(title, lambda k: spam[:k], deck, lambda t, w: top_ngram_frac(t, n, w), n, _TOP_THR,
                       len(spam), target)
    return title, lines, ""


def _dup_ngrams(n, rng, deck):
    """Passages of exactly n words, each said twice with different words around it.

    With an n-word passage a k-gram scan (k < n) covers k words when 2k > n, so the duplicated
    fractions rise with k up to n: aiming dup_n inside its window keeps every smaller k under its
    own (higher) threshold. For n = 10, k = 5 covers all 10 words, hence its low target.
    """
    source = " ".join(deck.take(6))
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", source) if len(w) > 2]
    sents = []
    for i in range(30):
        passage = " ".join(words[i * n:(i + 1) * n])
        for j in (2 * i, 2 * i + 1):
            sents.append(f"{_LEADS[j % len(_LEADS)]} {passage} {_TAILS[(j * 7) % len(_TAILS)]}.")
    return "Study notes and reminders", _calibrate("Study notes and reminders", lambda k: sents[:2 * k], deck,
                                                   lambda t, w: dup_ngram_frac(t, n, w), n, _DUP_THR,
                                                   30, _DUP_N_WINDOW[n], mix=True), ""


_TOP_THR = {2: 0.2, 3: 0.18, 4: 0.16}
_DUP_THR = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
_MARGIN = 0.006  # our regex tokenizer is close to, not equal to, NLTK's


def _calibrate(title, spam_of, deck, metric, n, thresholds, max_k, target, mix=False):
    """Grow the repeated material (k units) until metric(n) reaches `target`; whenever a rule that is
    checked earlier (smaller n, or any top-n before a dup-n) gets within the margin, add prose."""
    filler = deck.take(2, max_chars=350)
    k = 1
    for _ in range(200):
        lines = _interleave(filler, spam_of(k), mix)
        text = "\n".join([title] + lines)  # the extractor keeps the <h1> as the first line
        words = tokens(text)
        earlier_ok = all(top_ngram_frac(text, m, words) <= t - _MARGIN for m, t in _TOP_THR.items()
                         if thresholds is not _TOP_THR or m < n)
        if thresholds is _DUP_THR:
            earlier_ok = earlier_ok and all(dup_ngram_frac(text, m, words) <= t - _MARGIN
                                            for m, t in _DUP_THR.items() if m < n)
        value = metric(text, words)
        if value >= target and earlier_ok:
            return lines
        if not earlier_ok or k >= max_k:
            filler += deck.take(1, max_chars=350)
        else:
            k += 1
    return lines


def _interleave(filler, spam, mix):
    """Spam lines spread between prose lines; with mix=True the spam sentences go inside them."""
    if mix:
        lines = list(filler)
        for i, s in enumerate(spam):
            lines[i % len(lines)] += " " + s
        return lines
    out, f = [], list(filler)
    step = max(1, len(spam) // max(1, len(f)))
    for i, s in enumerate(spam):
        out.append(s)
        if f and i % step == step - 1:
            out.append(f.pop(0))
    return out + f


# --- gopher quality -----------------------------------------------------------------------------

def _gopher_short_doc(rng, deck):
    # Under 50 words, but of short words: with a count of 1 the longest 4-gram still has to stay
    # under 16% of the text, or top_4_gram (checked earlier) would catch the page.
    # 34 short words (rendered without ads, which an extractor keeps next to so little text).
    day = rng.choice(("Monday", "Friday", "Tuesday"))
    return "Quick note", [f"We are out on {day} as it is a day off for us all.",
                          f"We will be back the day after at {rng.choice(('ten', 'nine', 'noon'))}.",
                          "If you need us, call or drop us a note. See you soon."], ""


_SHORT_WORDS = ("I am not so sure we can do it in a day or two, but we try. So we go on and on and we do it. "
                "He is up at six and we go by bus to the big red box. It is so hot, so we sit in the sun and "
                "eat a bun. You and I are on a road to the sea, as is my dog. Go on, he is not a bad dog at all. "
                "Do not be sad if it is not so. We can go up to the top of the hill to see the sun set.")


def _gopher_below_avg_threshold(rng, deck):
    return "Up we go", [s.strip() + "." for s in _SHORT_WORDS.split(".") if s.strip()], ""


def _gopher_above_avg_threshold(rng, deck):
    lines = ["Internationalization considerations notwithstanding, modernization necessitates collaboration.",
             "Extraordinarily sophisticated institutionalization mechanisms underestimate responsibilities.",
             "Uncharacteristically straightforward implementations demonstrate interoperability.",
             "Multidimensional transformations simultaneously accommodate unprecedented requirements.",
             "Environmentally responsible manufacturing methodologies outperform industrialization.",
             "Comprehensive documentation accompanying authentication infrastructure simplifies troubleshooting.",
             "Representatives acknowledged unquestionable inconsistencies concerning telecommunications.",
             "Professionalization initiatives strengthened organizational accountability considerably.",
             "Decentralized administrative responsibilities complicate intergovernmental communication.",
             "Unprecedented technological breakthroughs revolutionized pharmaceutical manufacturing."]
    return "Organizational transformation considerations", rng.sample(lines, 8), ""


def _gopher_too_many_hashes(rng, deck):
    tags = ("#summer", "#travel", "#beach", "#sunset", "#foodie", "#photography", "#weekend", "#friends",
            "#nature", "#happy", "#instagood", "#love", "#vacation", "#ocean")
    base = ["Loving the sunshine today with the best people", "Morning walk along the coast before breakfast",
            "Fresh seafood and a cold drink by the water", "Golden hour on the pier was absolutely magical",
            "Back home after a long and wonderful trip", "Planning the next adventure with the whole crew"]
    lines = [f"{b} {' '.join(rng.sample(tags, 5))}" for b in base]
    return "My summer diary", lines, ""


def _gopher_too_many_ellipsis(rng, deck):
    lines = ["So I waited... and waited... and then the bus finally came...",
             "We got to the station... it was closed... of course it was...",
             "Then the rain started... no umbrella... no jacket... great...",
             "Called a taxi... no answer... tried again... still nothing...",
             "Walked home in the end... soaked... tired... but home...",
             "Made some tea... sat down... and the power went out...",
             "Tomorrow will be better... I hope... we will see..."]
    return "What a day", lines, ""


def _gopher_too_many_bullets(rng, deck):
    items = ["Warm wool socks", "A rain jacket with a hood", "Two spare phone chargers", "Sunglasses in a hard case",
             "Travel insurance papers", "Passport and a printed copy", "Comfortable walking shoes",
             "A small first aid kit", "Reusable water bottle", "Light scarf for cool evenings",
             "Paperback novel for the train", "Earplugs and an eye mask", "Toothbrush plus toothpaste",
             "Sun cream with high protection", "A compact umbrella", "Snacks for the long drive",
             "Offline maps on your phone", "Some local cash in coins", "Headphones that block noise",
             "A notebook and two pens", "Swimwear for the hotel pool", "Flip flops for the beach",
             "Laundry bag for dirty clothes", "Spare glasses or lenses", "Medicine you take daily",
             "Copies of hotel bookings", "Adapter plugs for sockets", "A light down jacket",
             "Hand sanitizer gel", "Tickets saved as screenshots", "Charging cable for the camera",
             "Small lock for the backpack"]
    # trafilatura (favor_precision) drops an article that is only a list: one short intro line.
    # Lines: title + intro + 32 items -> 94% bullet lines.
    items = rng.sample(items, len(items))
    html = "<ul>" + "".join(f"<li>{it}</li>" for it in items) + "</ul>"
    return "Packing list for a week away", ["Here is what goes into my bag before every trip."], html


def _gopher_too_many_end_ellipsis(rng, deck):
    lines = ["The new season of the cooking show starts next week and the first guest is a chef who",
             "Researchers found that people who walk every day tend to sleep better and",
             "The city council met on Tuesday to discuss plans for the new park by the river and",
             "Our reporter spent a day with the firefighters of the central station to learn how",
             "After three years of work the old bridge is open again for cars and bicycles, but",
             "The local football club has signed a young player from the second division who"]
    return "Top stories this week", [ln + " …" if i % 2 else ln + "..." for i, ln in enumerate(lines)], ""


def _gopher_below_alpha_threshold(rng, deck):
    # Figures, not words: each line a different phrasing so no n-gram repeats much.
    frames = ("In {y} the totals were {a} and {b}.", "Sales for {y}: {a} then {b}.", "{y} closed at {a} after {b}.",
              "Our {y} scores: {a} versus {b}.", "During {y} we logged {a} and later {b}.",
              "{y} budget: {a}, spent {b}.", "Figures from {y} show {a} against {b}.",
              "Readings in {y} reached {a} with {b}.", "{y} output was {a} per {b}.", "By {y} it grew {a} to {b}.",
              "Count for {y}: {a} plus {b}.", "Back in {y} rates hit {a} or {b}.")
    lines = []
    for i, year in enumerate(range(2011, 2023)):
        nums = lambda k: " ".join(f"{rng.uniform(10, 99):.1f}" for _ in range(k))  # noqa: E731
        lines.append(frames[i].format(y=year, a=nums(3), b=nums(3)))
    return "Annual figures", lines, ""


def _gopher_enough_stop_words(rng, deck):
    # Catalogue prose that never uses the, be, to, of, and, that, have, with (nor commas, which
    # would push the alphabetic-word ratio under 80% first).
    lines = ["This blue cotton shirt comes in medium size for a slim fit.",
             "Our red wool sweater is soft, warm and easy on sensitive skin.".replace(", warm and", " plus warm"),
             "These black leather boots keep your feet dry on rainy days.",
             "A grey denim jacket looks great over any summer dress.",
             "White linen trousers feel light even on very hot afternoons.",
             "This green rain coat packs into its own pocket for travel.",
             "Our brown canvas bag fits a laptop plus lunch for work.",
             "A yellow silk scarf makes a lovely gift for someone special.",
             "Navy swim shorts dry quickly after a swim in salty water.",
             "Pink cashmere gloves work on phone screens in cold weather.",
             "Every order ships free within two days across Europe."]
    return "New arrivals: clothing sale", lines, ""


# --- C4 ------------------------------------------------------------------------------------------

_LOREM = ("dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore "
          "magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea "
          "commodo consequat").split()


def _lorem_ipsum(rng, deck):
    # A template placeholder left in a real article; a few random lorem words keep it unique.
    paras = deck.take(5, max_chars=400)
    paras.insert(2, "Lorem ipsum " + " ".join(rng.sample(_LOREM, 9)) + ".")
    return "Draft: upcoming features", paras, ""


def _curly_bracket(rng, deck):
    paras = deck.take(5, max_chars=400)
    paras.insert(3, f'The settings file is a small object such as {{"debug": true, "retries": {rng.randint(1, 9)}}} '
                    "that the loader reads.")
    return "Configuring the service", paras, ""


def _too_few_sentences(rng, deck):
    # C4 counts sentences per line, so: title + three long one-sentence lines = 4 < 5, while the
    # ~95 words pass Gopher. Lines are over 100 characters, so numbers vary them per page (else
    # trafilatura would drop a line seen on more than 3 pages).
    r = rng.randint
    lines = [f"The annual report that the board presented on {rng.choice(('Monday', 'Thursday', 'Friday'))} covers "
             f"the results of all {r(5, 40)} departments over the last {r(6, 18)} months and compares them with "
             "the plans made at the start of the year.",
             "Most of the numbers are better than expected, although the costs of energy and transport have grown "
             f"faster than the income of the {r(2, 9)} largest divisions in the {rng.choice(('north', 'south', 'east', 'west'))} "
             "of the country.",
             f"The full document with all {r(10, 90)} tables can be requested from the office of the secretary and "
             f"will be discussed at the general meeting in {rng.choice(('spring', 'summer', 'autumn', 'winter'))}."]
    return "Annual report summary", lines, ""


# --- FineWeb -------------------------------------------------------------------------------------

def _line_punct_ratio(rng, deck):
    # Every line holds sentences but none ends with terminal punctuation (C4 still counts >= 5).
    lines = ["Great service and friendly staff. We will come back with the kids next summer for sure",
             "The rooms were clean. The breakfast was varied and fresh every single morning of our stay",
             "Parking is free. The beach is only five minutes away on foot from the main entrance",
             "Staff at the desk were helpful. They booked a boat trip and a table at a good restaurant",
             "Wifi was fast in the lobby. In the rooms it was slower but good enough for email",
             "The pool area gets busy after lunch. Go early in the morning to find a quiet spot",
             "Prices in the bar are high. The supermarket across the road sells the same drinks",
             "Overall a lovely stay. Would recommend this hotel to friends and family any time"]
    return "Guest reviews", lines, ""


def _short_line_ratio(rng, deck):
    # 5-6 short words and a period: <= 30 chars, and still >= 80% alphabetic tokens.
    lines = ["We sell fresh apples here.", "Big red tomatoes are ripe.", "Green beans sold by weight.",
             "Sweet corn on the cob.", "Ripe pears and dark plums.", "Local honey in glass jars.",
             "Warm bread baked each day.", "Free range eggs from hens.", "Soft goat cheese is back.",
             "Crisp lettuce and kale too.", "New potatoes come in bags.", "Wild mushrooms picked today.",
             "Cut flowers sold in bunches.", "Apple juice made on site.", "We open from eight to one.",
             "Cash and cards are fine.", "Come early for the best.", "See you all on Saturday."]
    return "Farm shop", lines + deck.take(1, max_chars=300), ""


def _char_dup_ratio(rng, deck):
    # One short sign-up line said twice: 2 % of the characters, far below Gopher's line limits.
    cta = f"Subscribe now and get the weekly digest in your inbox every {rng.choice(('Friday', 'Monday'))}."
    paras = deck.take(7, max_chars=400)
    paras.insert(2, cta)
    paras.append(cta)
    return "This week in programming", paras, ""


def _list_ratio(rng, deck):
    # Lines of exactly 3 words (C4 keeps them): newlines/words ~ 1/3 > 0.3. Half are long
    # (> 30 chars) so short_line_ratio stays < 0.67; five end with "." for punct and sentences.
    long = ["Comprehensive installation instructions", "Professional photography equipment",
            "Sustainable agricultural practices", "International shipping arrangements",
            "Experienced customer representatives", "Authentic handmade decorations",
            "Traditional mediterranean cuisine", "Affordable accommodation alternatives",
            "Personalized membership subscriptions", "Comfortable ergonomic furniture",
            "Independent investigative journalism", "Revolutionary battery technology",
            "Spectacular panoramic viewpoints", "Outstanding educational opportunities",
            "Competitive international tournaments", "Beautiful botanical illustrations",
            "Specialized veterinary consultations", "Reliable transportation connections",
            "Historical architectural landmarks", "Exclusive seasonal collections"]
    short = ["Salt and pepper", "Bread and butter", "Fish and chips", "Rock and roll", "Cats and dogs",
             "Tea with milk", "Rain and wind", "Pen and paper", "Salt the soup", "Open the door",
             "Close the gate", "Wash the car", "Read the book", "Call the shop", "Feed the cat",
             "Walk the dog", "Fix the roof", "Paint the wall", "Plant the seeds", "Cook the rice"]
    long, short = rng.sample(long, len(long)), rng.sample(short, len(short))
    lines = [x for pair in zip(long, short) for x in pair]
    for i in (3, 11, 19, 27, 35, 39):
        lines[i] += "."
    return "Index of topics", lines, ""
