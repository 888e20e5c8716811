"""The 25 IFEval instruction types (Zhou et al. 2023), written from the instruction descriptions.

Where the descriptions leave a choice open (what counts as a word, a sentence, a paragraph), the
choice is the one that reproduces the published reference verdicts; `reports/ifeval_agreement.md`
lists where it still differs and why.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from rm_lab.evaluate.instruction_base import RELATIONS, Checker, Kwarg

# ----------------------------------------------------------------------------------------------
# text helpers


def compare(count: int, relation: str, n: int) -> bool:
    return count < n if relation == "less than" else count >= n


_WORD = re.compile(r"\w+")


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


# Capitalised-word tokens: hyphen/dot-joined runs stay one token ("COVID-19", "U.S"); an apostrophe
# splits a contraction in two ("DON'T" -> DON, T), as a treebank tokenizer would.
_CAP_TOKEN = re.compile(r"\w+(?:[-.]\w+)*")


def count_capital_words(text: str) -> int:
    return sum(1 for w in _CAP_TOKEN.findall(text) if w.isupper())


# Sentence boundaries, as a trained Punkt splitter draws them (what the reference counts with):
# a run of . ! ? ends a sentence only when whitespace or closing punctuation follows it ("3.14",
# "site.com" and "end.</p>" do not). A period after a number, an abbreviation, an initial or in an
# ellipsis ends one only when the next word could start a sentence: a number before a lowercase word
# is a list marker ("1. buy milk"), and "Dr. Smith" / "J. Smith" run on. Newlines alone never split:
# a list of fragments without stops is one sentence.
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "prof", "capt", "cpt", "lt", "jr", "sr", "inc", "ltd", "co",
    "vs", "etc", "mt", "ph.d", "e.g", "i.e", "a.m", "p.m", "u.s", "u.k", "approx", "jan", "feb",
    "aug", "sept", "oct", "nov", "dec", "gen", "gov", "sen", "rep", "rev", "fig", "est",
}
# Capitalised words that are common enough to start a sentence after an abbreviation or initial.
_STARTERS = {
    "a", "an", "and", "as", "at", "but", "for", "he", "her", "his", "how", "however", "i", "if", "in",
    "it", "its", "let", "many", "my", "no", "now", "on", "our", "please", "she", "so", "some", "that",
    "the", "their", "there", "these", "they", "this", "those", "to", "we", "what", "when", "where",
    "while", "who", "why", "with", "you", "your", "also", "after", "before", "each", "one", "here",
}
_CANDIDATE = re.compile(r"[.!?]+(?=[?!)\"';}\]*:@({\[]|\s|$)")
_CLOSERS = re.compile(r"[\"'”’)\]}]*")
_NEXT_WORD = re.compile(r"[\s\"'“‘(\[{*]*([^\s\"'”’)\]}*]*)")


def split_sentences(text: str) -> list[str]:
    out: list[str] = []
    start = 0
    for m in _CANDIDATE.finditer(text):
        run = m.group(0)
        nxt = _NEXT_WORD.match(text, m.end()).group(1)
        if not nxt:
            continue  # nothing follows: the tail below closes the last sentence
        if run.endswith(".") and not run.endswith(("?.", "!.")):
            prev = re.search(r"(\S*)$", text[start:m.start()]).group(1).lstrip("\"'“‘([{*_")
            low = prev.lower()
            starter = nxt[:1].isupper() and re.sub(r"\W.*", "", nxt.lower()) in _STARTERS
            if len(run) > 1 or low in _ABBREVIATIONS or re.fullmatch(r"[A-Z]|([a-zA-Z]\.)+[a-zA-Z]", prev):
                if not starter:
                    continue
            elif re.fullmatch(r"[\d.,]+", prev) and not prev[-1:] in ",.":
                if nxt[:1].islower():
                    continue
        end = _CLOSERS.match(text, m.end()).end()
        piece = text[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return out


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


@lru_cache(maxsize=1)
def _language_factory():
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()  # our own instance: seeded without touching langdetect's global
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(0)
    return factory


@lru_cache(maxsize=4096)
def detect_language(text: str) -> str | None:
    """ISO 639-1 code of `text`, or None when it has no letters to judge by."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _language_factory().create()
    detector.append(text)
    try:
        return detector.detect()
    except LangDetectException:
        return None


def language_codes() -> tuple[str, ...]:
    return tuple(_language_factory().get_lang_list())


def _is_language(text: str, code: str) -> bool:
    found = detect_language(text)
    return found is None or found == code  # undetectable text is given the benefit of the doubt


# ----------------------------------------------------------------------------------------------
# checkers: fn(response, kwargs, prompt) -> bool


def _keywords_existence(r, kw, _p):
    low = r.lower()
    return all(k.lower() in low for k in kw["keywords"])


def _keyword_frequency(r, kw, _p):
    n = len(re.findall(re.escape(kw["keyword"]), r, flags=re.IGNORECASE))
    return compare(n, kw["relation"], kw["frequency"])


def _forbidden_words(r, kw, _p):
    return not any(re.search(r"\b" + re.escape(w) + r"\b", r, flags=re.IGNORECASE)
                   for w in kw["forbidden_words"])


def _letter_frequency(r, kw, _p):
    return compare(r.lower().count(kw["letter"].lower()), kw["let_relation"], kw["let_frequency"])


def _response_language(r, kw, _p):
    return _is_language(r, kw["language"])


def _number_sentences(r, kw, _p):
    return compare(count_sentences(r), kw["relation"], kw["num_sentences"])


def _number_words(r, kw, _p):
    return compare(count_words(r), kw["relation"], kw["num_words"])


def divider_paragraphs(r: str) -> list[str] | None:
    """Paragraphs separated by the markdown divider `***`; None when a middle one is empty."""
    parts = re.split(r"\s?\*\*\*\s?", r)
    kept = []
    for i, p in enumerate(parts):
        if p.strip():
            kept.append(p)
        elif 0 < i < len(parts) - 1:
            return None
    return kept


def _number_paragraphs(r, kw, _p):
    paras = divider_paragraphs(r)
    return paras is not None and len(paras) == kw["num_paragraphs"]


_LEADING_QUOTES = "\"'“‘«"
_WORD_END = set(".,?!'\"")


def first_word(paragraph: str) -> str:
    tokens = paragraph.split()
    if not tokens:
        return ""
    word = tokens[0].lstrip(_LEADING_QUOTES)
    out = []
    for ch in word:
        if ch in _WORD_END:
            break
        out.append(ch)
    return "".join(out).lower()


def _nth_paragraph_first_word(r, kw, _p):
    paras = [p.strip() for p in re.split(r"\n\n", r)]
    nonblank = [p for p in paras if p]
    if len(nonblank) != kw["num_paragraphs"]:
        return False
    return first_word(nonblank[kw["nth_paragraph"] - 1]) == kw["first_word"].strip().lower()


def _number_placeholders(r, kw, _p):
    return len(re.findall(r"\[[^\n\]]*\]", r)) >= kw["num_placeholders"]


def _postscript(r, kw, _p):
    marker = kw["postscript_marker"].strip().lower()
    letters = [re.escape(c) for c in marker.replace(" ", "")]
    # "P.S." also matches "P. S." / "PS:"-free variants that keep the dots; the marker may sit at the
    # start of any line, possibly behind markdown emphasis or a heading mark.
    pattern = r"\s?".join(letters)
    return re.search(r"(?m)^[\s*_#>]*" + pattern, r.lower()) is not None


def bullet_lines(r: str) -> int:
    n = 0
    for line in r.split("\n"):
        s = line.lstrip()
        if s.startswith("-") or (s.startswith("*") and len(s) > 1 and s[1] != "*"):
            n += 1
    return n


def _number_bullet_lists(r, kw, _p):
    return bullet_lines(r) == kw["num_bullets"]


CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _constrained_response(r, kw, _p):
    return any(opt in r for opt in CONSTRAINED_OPTIONS)


def count_highlights(r: str) -> int:
    n = 0
    for pattern in (r"\*[^\n*]*\*", r"\*\*[^\n*]*\*\*"):
        n += sum(1 for m in re.findall(pattern, r) if m.strip("*").strip())
    return n


def _number_highlighted_sections(r, kw, _p):
    return count_highlights(r) >= kw["num_highlights"]


def _multiple_sections(r, kw, _p):
    heads = re.findall(r"\s?" + re.escape(kw["section_spliter"].strip()) + r"\s?\d+\s?", r)
    return len(heads) >= kw["num_sections"]


_FENCE_OPEN = re.compile(r"^```(?:json)?", re.IGNORECASE)


def _json_format(r, kw, _p):
    text = _FENCE_OPEN.sub("", r.strip())
    text = re.sub(r"```$", "", text).strip()
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _title(r, kw, _p):
    return any(t.strip("<>").strip() for t in re.findall(r"<<[^\n]+>>", r))


def _two_responses(r, kw, _p):
    parts = r.split("******")
    answers = []
    for i, part in enumerate(parts):
        if part.strip():
            answers.append(part.strip())
        elif 0 < i < len(parts) - 1:
            return False
    return len(answers) == 2 and answers[0] != answers[1]


def _repeat_prompt(r, kw, prompt):
    target = kw.get("prompt_to_repeat") or prompt
    return r.strip().lower().startswith(target.strip().lower())


def _end_checker(r, kw, _p):
    return r.strip().strip('"').lower().endswith(kw["end_phrase"].strip().lower())


def _capital_word_frequency(r, kw, _p):
    return compare(count_capital_words(r), kw["capital_relation"], kw["capital_frequency"])


def _english_capital(r, kw, _p):
    return r.isupper() and _is_language(r, "en")


def _english_lowercase(r, kw, _p):
    return r.islower() and _is_language(r, "en")


def _no_comma(r, kw, _p):
    return "," not in r


def _quotation(r, kw, _p):
    s = r.strip()
    return len(s) > 1 and s[0] == '"' and s[-1] == '"'


def _nth_paragraph_valid(kw: dict) -> str | None:
    if kw["nth_paragraph"] > kw["num_paragraphs"]:
        return f"nth_paragraph ({kw['nth_paragraph']}) <= num_paragraphs ({kw['num_paragraphs']})"
    return None


def _language_kwarg_valid(kw: dict) -> str | None:
    if kw["language"] not in language_codes():
        return f"a language code langdetect knows, one of {sorted(language_codes())}"
    return None


def _letter_valid(kw: dict) -> str | None:
    if len(kw["letter"]) != 1:
        return "a single character for 'letter'"
    return None


def _relation(name: str = "relation") -> Kwarg:
    return Kwarg(name, "str", choices=RELATIONS, doc="'less than' or 'at least'")


CHECKERS: tuple[Checker, ...] = (
    Checker("keywords:existence", "Include every one of the keywords (case-insensitive).",
            _keywords_existence, (Kwarg("keywords", "str_list"),)),
    Checker("keywords:frequency", "The keyword appears (case-insensitive) less than / at least N times.",
            _keyword_frequency, (Kwarg("keyword", "str"), Kwarg("frequency", "int", min=0), _relation())),
    Checker("keywords:forbidden_words", "None of the words appears as a whole word (case-insensitive).",
            _forbidden_words, (Kwarg("forbidden_words", "str_list"),)),
    Checker("keywords:letter_frequency", "The letter appears (any case) less than / at least N times.",
            _letter_frequency,
            (Kwarg("letter", "str"), Kwarg("let_frequency", "int", min=0), _relation("let_relation")),
            validate=_letter_valid),
    Checker("language:response_language", "The whole response is in the given language (ISO 639-1).",
            _response_language, (Kwarg("language", "str"),), validate=_language_kwarg_valid),
    Checker("length_constraints:number_sentences", "Less than / at least N sentences.",
            _number_sentences, (Kwarg("num_sentences", "int", min=0), _relation())),
    Checker("length_constraints:number_paragraphs",
            "Exactly N paragraphs, separated by the markdown divider ***.",
            _number_paragraphs, (Kwarg("num_paragraphs", "int", min=1),)),
    Checker("length_constraints:number_words", "Less than / at least N words.",
            _number_words, (Kwarg("num_words", "int", min=0), _relation())),
    Checker("length_constraints:nth_paragraph_first_word",
            "Exactly N paragraphs separated by blank lines; paragraph i starts with the given word.",
            _nth_paragraph_first_word,
            (Kwarg("num_paragraphs", "int", min=1), Kwarg("nth_paragraph", "int", min=1),
             Kwarg("first_word", "str")),
            validate=_nth_paragraph_valid),
    Checker("detectable_content:number_placeholders", "At least N placeholders in square brackets, like [name].",
            _number_placeholders, (Kwarg("num_placeholders", "int", min=0),)),
    Checker("detectable_content:postscript", "A postscript that starts with the marker (e.g. P.S.).",
            _postscript, (Kwarg("postscript_marker", "str"),)),
    Checker("detectable_format:number_bullet_lists", "Exactly N markdown bullet points (* or -).",
            _number_bullet_lists, (Kwarg("num_bullets", "int", min=0),)),
    Checker("detectable_format:constrained_response",
            "Contains one of 'My answer is yes.', 'My answer is no.', 'My answer is maybe.'.",
            _constrained_response),
    Checker("detectable_format:number_highlighted_sections",
            "At least N sections highlighted with markdown, *like this* or **like this**.",
            _number_highlighted_sections, (Kwarg("num_highlights", "int", min=0),)),
    Checker("detectable_format:multiple_sections",
            "At least N sections, each marked '<splitter> <number>' (e.g. SECTION 1).",
            _multiple_sections, (Kwarg("section_spliter", "str"), Kwarg("num_sections", "int", min=0))),
    Checker("detectable_format:json_format", "The whole response is valid JSON (a ``` fence is allowed).",
            _json_format),
    Checker("detectable_format:title", "A title in double angular brackets, like <<title>>.", _title),
    Checker("combination:two_responses", "Exactly two different responses separated by ******.",
            _two_responses),
    Checker("combination:repeat_prompt", "Starts by repeating the request word for word (any case).",
            _repeat_prompt, (Kwarg("prompt_to_repeat", "str", required=False,
                                   doc="defaults to the prompt passed to check()"),)),
    Checker("startend:end_checker", "Ends with the exact phrase (any case; a closing quote is allowed).",
            _end_checker, (Kwarg("end_phrase", "str"),)),
    Checker("change_case:capital_word_frequency", "Words in all capitals appear less than / at least N times.",
            _capital_word_frequency,
            (Kwarg("capital_frequency", "int", min=0), _relation("capital_relation"))),
    Checker("change_case:english_capital", "English, and all letters in capitals.", _english_capital),
    Checker("change_case:english_lowercase", "English, and all letters in lowercase.", _english_lowercase),
    Checker("punctuation:no_comma", "No commas at all.", _no_comma),
    Checker("startend:quotation", "The whole response is wrapped in double quotation marks.", _quotation),
)
