"""Topics of world v2: what users talk about, the slots their turns are built from, and the hidden lexicon.

Each topic has slot fillers (`things`, `activities`) that user turns are assembled from, and a hidden
`lexicon` of words a reply that engages with the topic tends to use. The lexicon is part of the hidden
engagement function only: the reward model never receives it (nor the context's topic) as an input,
so it has to learn relevance from the text of the conversation and the reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

WORD_RE = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class Topic:
    name: str
    things: tuple[str, ...]  # noun phrases a user turn mentions ("a sourdough loaf")
    activities: tuple[str, ...]  # gerund phrases ("baking bread")
    lexicon: tuple[str, ...]  # hidden: words an on-topic reply uses (slot words are added below)


_T = [
    Topic("cooking", ("a sourdough loaf", "a spicy curry", "homemade pasta", "a chocolate cake", "tomato soup",
                      "fluffy pancakes", "a roast chicken", "vegetable stew"),
          ("baking bread", "cooking dinner", "trying a new recipe", "making soup"),
          ("cook", "recipe", "kitchen", "oven", "bake", "flavor", "flavour", "taste", "spice", "ingredient", "meal",
           "dinner", "delicious", "simmer", "garlic", "salt", "pan", "dish", "sauce", "chef", "dough", "flour",
           "crispy", "tasty", "butter")),
    Topic("travel", ("a trip to Lisbon", "a train ride through the Alps", "a beach hostel", "a road trip",
                     "a cheap flight to Rome", "a hiking trail in Norway", "a night market in Bangkok"),
          ("packing for a trip", "planning a holiday", "travelling alone", "exploring a new city"),
          ("trip", "travel", "journey", "suitcase", "passport", "flight", "hotel", "map", "explore", "abroad",
           "luggage", "ticket", "destination", "adventure", "tourist", "itinerary", "sightseeing", "border",
           "souvenir", "local")),
    Topic("pets", ("my new puppy", "my old cat", "a rescue dog", "my hamster", "a parrot that talks",
                   "my goldfish", "a stray kitten"),
          ("walking the dog", "training my puppy", "adopting a cat", "taking my cat to the vet"),
          ("pet", "dog", "puppy", "cat", "kitten", "leash", "vet", "fur", "paw", "tail", "treat", "bark", "meow",
           "walk", "adopt", "cuddle", "breed", "collar", "purr", "animal")),
    Topic("work", ("my annoying boss", "a big presentation", "a job interview", "my new coworker",
                   "a deadline on Friday", "a promotion", "an endless meeting"),
          ("working late", "looking for a new job", "asking for a raise", "starting a new job"),
          ("work", "job", "boss", "office", "meeting", "deadline", "career", "colleague", "coworker", "project",
           "promotion", "interview", "salary", "manager", "shift", "team", "overtime", "resume", "task",
           "workplace")),
    Topic("exams", ("my chemistry exam", "a maths test", "my final exams", "an essay due tomorrow",
                    "a history quiz", "my driving test", "a statistics exam"),
          ("studying all night", "revising for finals", "cramming for a test", "writing my thesis"),
          ("exam", "study", "test", "grade", "revise", "revision", "class", "teacher", "homework", "notes",
           "school", "university", "quiz", "pass", "fail", "textbook", "lecture", "score", "subject",
           "student")),
    Topic("music", ("a new album", "my guitar", "a jazz concert", "piano lessons", "a song stuck in my head",
                    "a vinyl record", "a karaoke night"),
          ("learning guitar", "playing piano", "going to a concert", "singing in a choir"),
          ("music", "song", "album", "band", "guitar", "piano", "melody", "concert", "lyrics", "sing", "tune",
           "rhythm", "chord", "playlist", "drum", "stage", "singer", "listen", "note", "jazz")),
    Topic("sports", ("a football match", "my tennis game", "the marathon", "a basketball game",
                     "my swimming lessons", "a cycling race", "a yoga class"),
          ("training for a marathon", "playing football", "going to the gym", "learning to swim"),
          ("team", "match", "game", "score", "goal", "coach", "training", "practice", "win", "lose", "race",
           "player", "gym", "fitness", "muscle", "run", "league", "champion", "tournament", "stamina")),
    Topic("movies", ("a horror movie", "the new superhero film", "an old black and white film",
                     "a documentary about whales", "a romantic comedy", "a sci-fi series", "an animated film"),
          ("watching movies", "binge watching a series", "going to the cinema", "writing a film review"),
          ("movie", "film", "cinema", "actor", "scene", "plot", "director", "series", "episode", "character",
           "ending", "sequel", "screen", "popcorn", "trailer", "drama", "comedy", "watch", "cast", "story")),
    Topic("weather", ("a huge thunderstorm", "the first snow", "a heatwave", "endless rain", "a foggy morning",
                      "a rainbow", "a windy day"),
          ("walking in the rain", "waiting out a storm", "enjoying the sunshine", "shovelling snow"),
          ("weather", "rain", "storm", "snow", "sun", "sunshine", "cloud", "wind", "thunder", "cold", "warm",
           "heat", "forecast", "umbrella", "fog", "season", "sky", "temperature", "breeze", "lightning")),
    Topic("sleep", ("my insomnia", "a weird dream", "a nightmare", "my new mattress", "a long nap",
                    "my noisy neighbours at night", "my sleep schedule"),
          ("sleeping badly", "waking up early", "falling asleep", "taking naps"),
          ("sleep", "dream", "bed", "night", "tired", "rest", "nap", "pillow", "insomnia", "awake", "bedtime",
           "morning", "alarm", "nightmare", "relax", "snore", "exhausted", "blanket", "routine", "yawn")),
    Topic("friendship", ("my best friend", "a friend who ignores me", "an old school friend",
                         "a fight with my friend", "a new friend group", "my roommate"),
          ("making new friends", "meeting old friends", "planning a party", "apologising to a friend"),
          ("friend", "friendship", "together", "trust", "party", "talk", "laugh", "support", "hang", "loyal",
           "share", "company", "lonely", "apologise", "apologize", "fight", "forgive", "honest", "care",
           "bond")),
    Topic("space", ("the full moon", "a meteor shower", "the planet Mars", "a telescope I bought",
                    "the space station", "a solar eclipse", "black holes"),
          ("stargazing", "watching a rocket launch", "reading about galaxies", "looking through a telescope"),
          ("space", "star", "planet", "moon", "orbit", "galaxy", "rocket", "telescope", "astronaut", "universe",
           "comet", "meteor", "gravity", "mars", "sky", "eclipse", "cosmic", "light", "night", "sun")),
    Topic("gardening", ("my tomato plants", "a rose bush", "my herb garden", "a vegetable patch",
                        "my houseplants", "sunflowers", "an apple tree"),
          ("planting seeds", "weeding the garden", "growing vegetables", "repotting plants"),
          ("garden", "plant", "seed", "soil", "grow", "flower", "bloom", "water", "leaf", "root", "compost",
           "weed", "harvest", "sun", "pot", "herb", "prune", "sprout", "green", "dig")),
    Topic("games", ("a new video game", "a chess match", "a board game night", "an online tournament",
                    "a puzzle game", "a boss fight I keep losing", "a card game"),
          ("playing video games", "streaming my games", "playing chess", "building a gaming pc"),
          ("game", "play", "level", "boss", "player", "win", "lose", "controller", "quest", "score", "team",
           "strategy", "chess", "puzzle", "console", "round", "character", "respawn", "loot", "multiplayer")),
    Topic("books", ("a fantasy novel", "a mystery book", "a poetry collection", "a biography", "my book club",
                    "a comic series", "a very long novel"),
          ("reading before bed", "writing a story", "joining a book club", "reading poetry"),
          ("book", "read", "reading", "novel", "chapter", "author", "story", "page", "library", "plot", "write",
           "writer", "poem", "poetry", "character", "ending", "shelf", "series", "genre", "fiction")),
    Topic("family", ("my little brother", "my grandmother's birthday", "a family dinner", "my parents",
                     "my sister's wedding", "my cousins visiting", "my dad's cooking"),
          ("visiting my parents", "planning a family trip", "looking after my siblings",
           "calling my grandma"),
          ("family", "mom", "mum", "dad", "parent", "brother", "sister", "grandma", "grandmother", "cousin",
           "home", "visit", "love", "together", "wedding", "birthday", "childhood", "kids", "relative",
           "holiday")),
]

TOPICS: dict[str, Topic] = {t.name: t for t in _T}
TOPIC_NAMES: tuple[str, ...] = tuple(TOPICS)

STOPWORDS = frozenset("""
a about above after again all also am an and any are aren't as at be because been before being below between
both but by can can't could did didn't do does doesn't doing don't down during each few for from further had
hadn't has hasn't have haven't having he her here hers herself him himself his how i i'd i'll i'm i've if in
into is isn't it it's its itself just let's me more most my myself no nor not now of off on once only or other
our ours ourselves out over own same she should so some such than that that's the their theirs them themselves
then there there's these they they're this those through to too under until up very was wasn't we we're were
weren't what what's when where which while who whom why will with won't would you you're your yours yourself
yeah yes hey hi hello oh ok okay really so well today got get going go went like think know want tell thing
things something anything one lot much bit way make made still even ever never always been kind sort
""".split())


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A crude suffix-stripper, enough that 'baking', 'baked' and 'bake' meet."""
    w = word.lower().strip("'")
    for suf in ("ing", "ed", "es", "s"):
        if len(w) >= len(suf) + 3 and w.endswith(suf) and not w.endswith("ss"):
            w = w[: -len(suf)]
            break
    return w[:-1] if len(w) > 3 and w.endswith("e") else w


def words(text: str) -> list[str]:
    return WORD_RE.findall(str(text or "").lower())


def content_stems(text: str) -> set[str]:
    """Stems of the content words of a text (stopwords and 1–2 letter words dropped)."""
    return {stem(w) for w in words(text) if w not in STOPWORDS and len(w) > 2}


def _lexicon_stems(t: Topic) -> frozenset[str]:
    slot_words = " ".join(t.things + t.activities)
    return frozenset({stem(w) for w in t.lexicon} | content_stems(slot_words))


LEXICON_STEMS: dict[str, frozenset[str]] = {name: _lexicon_stems(t) for name, t in TOPICS.items()}


def topic_hits(text: str, topic: str) -> int:
    """Distinct hidden-lexicon stems of `topic` in `text`."""
    lex = LEXICON_STEMS.get(topic)
    return len(content_stems(text) & lex) if lex else 0


def infer_topic(text: str) -> str | None:
    """The topic whose lexicon the text overlaps most (None when none): for contexts without a hidden topic."""
    stems = content_stems(text)
    best, hits = None, 0
    for name in TOPIC_NAMES:
        h = len(stems & LEXICON_STEMS[name])
        if h > hits:
            best, hits = name, h
    return best
