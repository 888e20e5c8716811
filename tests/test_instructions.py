"""Hand-written passing and failing responses for every instruction type, and the registry's errors."""

from __future__ import annotations

import pytest

from rm_lab.evaluate.checkers_character import count_emoji
from rm_lab.evaluate.checkers_ifeval import count_capital_words, count_sentences, count_words
from rm_lab.evaluate.instructions import (IFEVAL_IDS, REGISTRY, InstructionError, check, check_many,
                                          loose_variants, validate_kwargs)
from rm_lab.schema import RecordError

IFEVAL_TYPES = {
    "change_case:capital_word_frequency", "change_case:english_capital", "change_case:english_lowercase",
    "combination:repeat_prompt", "combination:two_responses", "detectable_content:number_placeholders",
    "detectable_content:postscript", "detectable_format:constrained_response",
    "detectable_format:json_format", "detectable_format:multiple_sections",
    "detectable_format:number_bullet_lists", "detectable_format:number_highlighted_sections",
    "detectable_format:title", "keywords:existence", "keywords:forbidden_words", "keywords:frequency",
    "keywords:letter_frequency", "language:response_language",
    "length_constraints:nth_paragraph_first_word", "length_constraints:number_paragraphs",
    "length_constraints:number_sentences", "length_constraints:number_words", "punctuation:no_comma",
    "startend:end_checker", "startend:quotation",
}

EN = ("The weather today is lovely and the sun is shining over the quiet little town where we live, "
      "so we are going for a long walk in the park this afternoon.")

# (instruction_id, kwargs, response, expected verdict in strict mode)
CASES = [
    # keywords
    ("keywords:existence", {"keywords": ["apple", "Pie"]}, "An APPLE pie, baked.", True),
    ("keywords:existence", {"keywords": ["apple", "pie"]}, "An apple tart.", False),
    ("keywords:existence", {"keywords": ["café"]}, "Meet me at the CAFÉ.", True),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}, "Cat and cat.", True),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}, "One cat.", False),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"}, "One cat.", True),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"}, "cat CAT", False),
    ("keywords:forbidden_words", {"forbidden_words": ["war"]}, "Peace, not warfare.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["war"]}, "No more WAR!", False),
    ("keywords:forbidden_words", {"forbidden_words": ["war", "fight"]}, "They fight.", False),
    ("keywords:letter_frequency", {"letter": "q", "let_frequency": 2, "let_relation": "at least"},
     "Quick quiz", True),
    ("keywords:letter_frequency", {"letter": "q", "let_frequency": 2, "let_relation": "at least"},
     "Quick fix", False),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 1, "let_relation": "less than"},
     "no such letter", True),
    ("keywords:letter_frequency", {"letter": "!", "let_frequency": 3, "let_relation": "at least"},
     "Wow! Yes! Go!", True),
    # language
    ("language:response_language", {"language": "de"},
     "Das Wetter ist heute sehr schön und wir gehen am Nachmittag im Park spazieren.", True),
    ("language:response_language", {"language": "de"}, EN, False),
    ("language:response_language", {"language": "hi"},
     "आज मौसम बहुत अच्छा है और हम दोपहर में पार्क में टहलने जा रहे हैं।", True),
    ("language:response_language", {"language": "en"}, "12345 67890", True),  # nothing to judge by
    # length constraints
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "One. Two!", True),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "One. Two! Three?", False),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"},
     "Dr. Smith earned 3.5 points at example.com today.", True),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"},
     "- milk\n- eggs\n- bread", False),  # newlines alone do not end sentences
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First part.\n***\nSecond part.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\n\nSecond.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "A\n***\n***\nB", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 1}, "***\nOnly one.\n***", True),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"}, "one two three four five", True),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"}, "one, two; three-four", False),
    ("length_constraints:number_words", {"num_words": 3, "relation": "less than"}, "naïve café", True),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"}, "First we eat.\n\n\"Then, we sleep.", True),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"}, "First we eat.\n\nAfter that we sleep.", False),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"}, "A.\n\nThen b.\n\nC.", False),
    # detectable content
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [address].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], hello.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\n\nP.S. Bring cake.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\n\nPostscript: cake.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\n**P.P.S** more cake", True),
    # detectable format
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "Intro\n* one\n- two", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two\n* three", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "**bold** line\n* one\n* two", True),
    ("detectable_format:constrained_response", {}, "Having thought: My answer is maybe.", True),
    ("detectable_format:constrained_response", {}, "my answer is yes", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and ** **", False),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nintro\nSECTION 2\nbody", True),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nintro\nSection 2\nbody", False),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True),
    ("detectable_format:json_format", {}, '{"a": 1} trailing words', False),
    ("detectable_format:title", {}, "<<A Day Out>>\nWe went.", True),
    ("detectable_format:title", {}, "<< >>\nWe went.", False),
    ("detectable_format:title", {}, "<A Day Out>\nWe went.", False),
    # combination
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.", True),
    ("combination:two_responses", {}, "Same.\n******\nSame.", False),
    ("combination:two_responses", {}, "One.\n******\n\n******\nTwo.", False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "write a POEM. Roses are red.", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "Sure! Write a poem.", False),
    # start / end
    ("startend:end_checker", {"end_phrase": "Any questions?"}, "That is all. any questions?\n", True),
    ("startend:end_checker", {"end_phrase": "Any questions?"}, "Any questions? Bye.", False),
    ("startend:quotation", {}, '  "Wrapped in quotes."  ', True),
    ("startend:quotation", {}, '"Only the start.', False),
    ("startend:quotation", {}, '"', False),
    # change case
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "This is VERY, VERY important.", True),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "This is Very important.", False),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "NASA and the ESA and the JAXA", False),
    ("change_case:english_capital", {}, EN.upper(), True),
    ("change_case:english_capital", {}, EN.upper()[:-1] + "x", False),
    ("change_case:english_capital", {}, "DAS WETTER IST HEUTE SEHR SCHÖN UND WIR GEHEN AM NACHMITTAG SPAZIEREN.",
     False),
    ("change_case:english_lowercase", {}, EN.lower(), True),
    ("change_case:english_lowercase", {}, EN, False),
    # punctuation
    ("punctuation:no_comma", {}, "No commas here at all.", True),
    ("punctuation:no_comma", {}, "One, comma.", False),
    # character instructions of the world
    ("character:end_with_question", {}, "Shall we go?  \n", True),
    ("character:end_with_question", {}, "Shall we go? Yes.", False),
    ("character:end_with_question", {}, "¿Vamos? 🙂", False),
    ("character:no_lists", {}, "A plain reply. It has -dashes- and 3.5 numbers.", True),
    ("character:no_lists", {}, "Options:\n- tea\n- coffee", False),
    ("character:no_lists", {}, "Steps:\n1. boil\n2) pour", False),
    ("character:no_lists", {}, "Picks:\n• tea", False),
    ("character:max_emoji", {"max": 2}, "Hi 😀 there 👍🏽", True),
    ("character:max_emoji", {"max": 2}, "Hi 😀😀😀", False),
    ("character:max_emoji", {"max": 0}, "No emoji ☺️", False),
    ("character:stay_in_character", {"keywords": ["ahoy", "matey"]}, "AHOY, friend!", True),
    ("character:stay_in_character", {"keywords": ["sea"]}, "A seasoned sailor.", False),
    ("character:stay_in_character", {"keywords": ["crème brûlée"]}, "I love Crème Brûlée.", True),
]


@pytest.mark.parametrize("iid,kwargs,response,expected", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_case(iid, kwargs, response, expected):
    assert check(iid, response, kwargs) is expected


def test_every_type_has_passing_and_failing_cases():
    seen = {(iid, exp) for iid, _, _, exp in CASES}
    for iid in REGISTRY:
        assert (iid, True) in seen and (iid, False) in seen, iid


def test_registry_holds_the_25_ifeval_types_and_the_character_ones():
    assert set(IFEVAL_IDS) == IFEVAL_TYPES
    assert {"character:end_with_question", "character:no_lists", "character:max_emoji",
            "character:stay_in_character"} <= set(REGISTRY)
    for c in REGISTRY.values():
        assert c.description


# instructions an empty text would satisfy if emptiness were not ruled out first
EMPTY_SATISFIES = {
    "length_constraints:number_words": {"num_words": 5, "relation": "less than"},
    "length_constraints:number_sentences": {"num_sentences": 5, "relation": "less than"},
    "keywords:forbidden_words": {"forbidden_words": ["x"]},
    "keywords:frequency": {"keyword": "x", "frequency": 1, "relation": "less than"},
    "keywords:letter_frequency": {"letter": "x", "let_frequency": 1, "let_relation": "less than"},
    "change_case:capital_word_frequency": {"capital_frequency": 1, "capital_relation": "less than"},
    "detectable_format:number_bullet_lists": {"num_bullets": 0},
    "language:response_language": {"language": "en"},
    "punctuation:no_comma": {},
    "character:no_lists": {},
    "character:max_emoji": {"max": 3},
}


@pytest.mark.parametrize("iid", sorted(EMPTY_SATISFIES))
@pytest.mark.parametrize("loose", [False, True])
def test_empty_response_follows_nothing(iid, loose):
    kw = EMPTY_SATISFIES[iid]
    assert check(iid, "", kw, loose=loose) is False
    assert check(iid, "  \n ", kw, loose=loose) is False
    text = "The sun is shining and we walk." if iid.startswith("language") else "Fine."
    assert check(iid, text, kw, loose=loose) is True  # the same kwargs pass a real text


def test_loose_forgives_preamble_sign_off_and_asterisks():
    resp = "Sure, here it is:\n\"all in quotes\"\nHope it helps"
    assert not check("startend:quotation", resp)
    assert check("startend:quotation", resp, loose=True)
    bold = "Intro line\n**SECTION** 1 text\n**SECTION** 2 text"
    assert not check("detectable_format:multiple_sections", bold, {"section_spliter": "SECTION", "num_sections": 2})
    assert check("detectable_format:multiple_sections", bold, {"section_spliter": "SECTION", "num_sections": 2},
                 loose=True)
    # loose is never stricter than strict
    for iid, kw, response, expected in CASES:
        if expected:
            assert check(iid, response, kw, loose=True)


def test_loose_variants():
    v = loose_variants("a\n*b*\nc")
    assert v[:4] == ["a\n*b*\nc", "*b*\nc", "a\n*b*", "*b*"]
    assert v[4:] == ["a\nb\nc", "b\nc", "a\nb", "b"]


def test_markdown_and_case():
    assert check("keywords:existence", "**Paris** is lovely", {"keywords": ["paris"]})
    assert check("detectable_format:number_highlighted_sections", "*a* *b* *c*", {"num_highlights": 3})
    assert not check("detectable_format:number_highlighted_sections", "* a\n* b", {"num_highlights": 1})
    assert check("combination:repeat_prompt", "  WRITE A POEM. ok", prompt="Write a poem.")


def test_counters():
    assert count_words("Hello, world! naïve 3.5") == 5
    assert count_sentences("Mr. Smith went to Washington. He liked it!") == 2
    assert count_sentences("Wait... The end.") == 2
    assert count_sentences("1. buy milk\n2. get eggs") == 1
    assert count_sentences("It costs 3.50 dollars. Cheap.") == 2
    assert count_capital_words("I SAID DON'T, COVID-19 rules") == 5  # I, SAID, DON, T, COVID-19
    assert count_emoji("👨‍👩‍👧 🇫🇷 ❤️ 👍🏽 x") == 4
    assert count_emoji("plain text ©") == 0


def test_check_many_matches_check():
    ids = ["punctuation:no_comma", "keywords:existence", "character:max_emoji"]
    kws = [{}, {"keywords": ["tea"]}, {"max": 1}]
    resp = "Tea time 🍵"
    assert check_many(ids, kws, resp) == [check(i, resp, k) for i, k in zip(ids, kws)] == [True, True, True]
    assert check_many(ids, kws, "Coffee, please 🍵🍵") == [False, False, False]


# -------------------------------------------------------------------------------------------------
# errors: unknown ids and kwargs that do not fit are loud, never silent passes


def test_unknown_id_is_an_error():
    with pytest.raises(InstructionError, match="keywords:existance"):
        check("keywords:existance", "x", {"keywords": ["x"]})
    with pytest.raises(InstructionError):
        check_many(["punctuation:no_comma", "nope:nope"], [{}, {}], "x")


@pytest.mark.parametrize("iid,kwargs,fragment", [
    ("length_constraints:number_words", {"num_words": "many", "relation": "at least"}, "num_words"),
    ("length_constraints:number_words", {"num_words": -1, "relation": "at least"}, ">= 0"),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at most"}, "less than"),
    ("length_constraints:number_words", {"num_words": 5}, "relation"),
    ("length_constraints:number_words", {"num_words": True, "relation": "at least"}, "integer"),
    ("punctuation:no_comma", {"num_words": 5}, "no kwargs"),
    ("keywords:forbidden_words", {"forbidden_words": "war"}, "list"),
    ("keywords:forbidden_words", {"forbidden_words": []}, "non-empty"),
    ("keywords:existence", {"keywords": ["ok", ""]}, "non-empty"),
    ("keywords:letter_frequency", {"letter": "ab", "let_frequency": 1, "let_relation": "at least"}, "single"),
    ("language:response_language", {"language": "klingon"}, "language code"),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "a"}, "nth_paragraph"),
    ("character:max_emoji", {"max": 1.5}, "integer"),
    ("character:max_emoji", {}, "required"),
    ("character:stay_in_character", {"keywords": "pirate"}, "list"),
    ("character:end_with_question", {"max": 1}, "no kwargs"),
])
def test_bad_kwargs_are_errors(iid, kwargs, fragment):
    with pytest.raises(InstructionError) as e:
        check(iid, "Some response.", kwargs)
    msg = str(e.value)
    assert iid in msg and fragment in msg
    assert isinstance(e.value, ValueError) and isinstance(e.value, RecordError)


def test_repeat_prompt_needs_something_to_repeat():
    with pytest.raises(InstructionError, match="prompt_to_repeat"):
        check("combination:repeat_prompt", "hello")


def test_check_many_length_mismatch():
    with pytest.raises(InstructionError, match="one kwargs entry per instruction"):
        check_many(["punctuation:no_comma"], [{}, {}], "x")


def test_validate_kwargs_normalises():
    assert validate_kwargs("length_constraints:number_words",
                           {"num_words": 300.0, "relation": "at least", "keyword": None}) == \
        {"num_words": 300, "relation": "at least"}
    assert validate_kwargs("punctuation:no_comma", None) == {}
    with pytest.raises(InstructionError, match="object"):
        validate_kwargs("punctuation:no_comma", ["x"])
