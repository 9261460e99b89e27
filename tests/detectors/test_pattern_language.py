"""The temporal-pattern language: TOML text compiled to patterns, and its error messages."""

from __future__ import annotations

import dataclasses

import pytest

from convergence.detectors.pattern_language import (
    DEFAULT_PATTERNS,
    MAX_STEPS,
    SAME_ATTRIBUTES,
    SIGNALS,
    Pattern,
    SkipStrategy,
    Step,
    compile_patterns,
)
from convergence.schema import SourceKind

# ------------------------------------------------------------------------ compiling


def test_default_patterns_compile() -> None:
    [p] = compile_patterns(DEFAULT_PATTERNS)
    assert p.name == "social-news-market"
    assert p.skip is SkipStrategy.SKIP_TILL_NEXT_MATCH and p.same == ("region",)
    assert [(s.kind, s.signal, s.within_s) for s in p.steps] == [
        (SourceKind.OSINT_SOCIAL, "burst", None),
        (SourceKind.OSINT_NEWS, "burst", 600.0),
        (SourceKind.MARKET_VOLUME, "burst", 1800.0),
    ]


def test_empty_text_compiles_to_nothing() -> None:
    assert compile_patterns("# no patterns yet\n") == []


def test_extra_signals_can_be_allowed() -> None:
    text = DEFAULT_PATTERNS.replace('signal = "burst"\nwithin_s = 600', 'signal = "spike"\nwithin_s = 600')
    with pytest.raises(ValueError, match="'spike' is not a known signal"):
        compile_patterns(text)
    [p] = compile_patterns(text, signals=(*SIGNALS, "spike"))
    assert p.steps[1].signal == "spike"


_STEP2 = '[[pattern.step]]\nkind = "osint_news"\nsignal = "burst"\nwithin_s = 60\n'


def _one(head: str = 'name = "p"', step1: str = 'kind = "osint_social"\nsignal = "burst"',
         rest: str = _STEP2) -> str:
    return f"[[pattern]]\n{head}\n[[pattern.step]]\n{step1}\n{rest}"


BAD_TEXT = {
    "toml syntax": ("[[pattern]]\nname = \n", r"not valid TOML: .*line 2"),
    "top-level key": ('[[patterns]]\nname = "x"\n', r"unknown top-level key 'patterns'"),
    "pattern not tables": ("pattern = 3\n", r"'pattern' must be an array of tables"),
    "step before pattern": ('[[pattern.step]]\nkind = "sensor"\n', r"array of tables"),
    "unknown pattern field": (_one('name = "p"\nskp = "strict_contiguity"'),
                              r"pattern #1 'p', skp \(line 3\): unknown field 'skp' "
                              r"\(did you mean 'skip'\?\)"),
    "missing name": (_one('description = "no name"'), r"pattern #1 \(line 1\): name is missing"),
    "empty name": (_one('name = "  "'), r"pattern #1, name \(line 2\): must be a non-empty string"),
    "name not a string": (_one("name = 7"), r"must be a non-empty string, got 7"),
    "duplicate name": (_one() + "\n" + _one(), r"pattern #2 'p', name \(line 12\): duplicate "
                                               r"name; pattern #1 already uses it"),
    "description type": (_one('name = "p"\ndescription = 1'), r"description .*must be a string"),
    "unknown skip": (_one('name = "p"\nskip = "greedy"'),
                     r"skip \(line 3\): 'greedy' is not a skip strategy; use one of "
                     r"strict_contiguity, skip_till_next_match, skip_till_any_match"),
    "same not a list": (_one('name = "p"\nsame = "region"'), r"same .*list of attribute names"),
    "same unknown": (_one('name = "p"\nsame = ["country"]'),
                     r"'country' is not a station attribute; use one of region, group"),
    "same twice": (_one('name = "p"\nsame = ["region", "region"]'), r"lists an attribute twice"),
    "no steps": ('[[pattern]]\nname = "p"\n', r"'p' \(line 1\): has no steps; add \[\[pattern.step\]\]"),
    "step not tables": ('[[pattern]]\nname = "p"\nstep = 1\n', r"step must be an array of tables"),
    "one step": (_one(rest=""), r"needs 2 to 16 steps .*got 1"),
    "too many steps": (_one(rest=_STEP2 * MAX_STEPS), r"needs 2 to 16 steps .*got 17"),
    "unknown step field": (_one(step1='kind = "osint_social"\nsignal = "burst"\nwithin = 5'),
                           r"step 1, within \(line 6\): unknown field 'within' "
                           r"\(did you mean 'within_s'\?\)"),
    "missing kind": (_one(step1='signal = "burst"'),
                     r"step 1 \(line 3\): kind is missing; use one of osint_news, osint_social, "
                     r"market_price, market_volume, sensor"),
    "unknown kind": (_one(step1='kind = "weather"\nsignal = "burst"'),
                     r"step 1, kind \(line 4\): 'weather' is not a source kind; use one of "
                     r"osint_news, osint_social, market_price, market_volume, sensor"),
    "kind not a string": (_one(step1='kind = 1\nsignal = "burst"'), r"1 is not a source kind"),
    "missing signal": (_one(step1='kind = "osint_social"'), r"step 1 \(line 3\): signal is missing; "
                       r"use one of anomalous, burst, change_level"),
    "unknown signal": (_one(step1='kind = "osint_social"\nsignal = "bust"'),
                       r"step 1, signal \(line 5\): 'bust' is not a known signal \(did you mean "
                       r"'burst'\?\); use one of anomalous, burst, change_level, change_variance, "
                       r"periodicity_break"),
    "window on first step": (_one(step1='kind = "osint_social"\nsignal = "burst"\nwithin_s = 5'),
                             r"step 1, within_s \(line 6\): the first step starts a match"),
    "missing window": (_one(rest='[[pattern.step]]\nkind = "osint_news"\nsignal = "burst"\n'),
                       r"step 2 \(line 6\): within_s is missing; every step after the first "
                       r"needs a window"),
    "negative window": (_one(rest=_STEP2.replace("60", "-5")),
                        r"step 2, within_s \(line 9\): must be a finite number of seconds > 0, "
                        r"got -5"),
    "zero window": (_one(rest=_STEP2.replace("60", "0")), r"seconds > 0, got 0"),
    "infinite window": (_one(rest=_STEP2.replace("60", "inf")), r"seconds > 0, got inf"),
    "window a string": (_one(rest=_STEP2.replace("60", '"10 min"')),
                        r"must be a number of seconds, got '10 min'"),
    "window a bool": (_one(rest=_STEP2.replace("60", "true")), r"must be a number of seconds"),
}


@pytest.mark.parametrize("case", sorted(BAD_TEXT))
def test_every_invalid_text_gets_a_clear_message(case: str) -> None:
    text, message = BAD_TEXT[case]
    with pytest.raises(ValueError, match=message):
        compile_patterns(text)


def test_text_must_be_a_string() -> None:
    with pytest.raises(ValueError, match="must be a str"):
        compile_patterns(b"[[pattern]]")  # type: ignore[arg-type]


# ------------------------------------------------------------- values and defaults


def test_the_vocabulary_is_the_documented_one() -> None:
    assert list(SIGNALS) == ["burst", "change_level", "change_variance", "periodicity_break",
                             "anomalous"]
    assert SAME_ATTRIBUTES == ("region", "group") and MAX_STEPS == 16
    assert [s.value for s in SkipStrategy] == ["strict_contiguity", "skip_till_next_match",
                                               "skip_till_any_match"]


def test_patterns_come_back_in_file_order_with_defaults_filled_in() -> None:
    text = _one('name = "first"\nsame = ["group", "region"]\nskip = "skip_till_any_match"') + "\n" + \
        _one('name = "second"')
    first, second = compile_patterns(text)
    assert (first.name, first.skip, first.same) == ("first", SkipStrategy.SKIP_TILL_ANY_MATCH,
                                                    ("group", "region"))
    assert second == Pattern(name="second", steps=(Step(SourceKind.OSINT_SOCIAL, "burst", None),
                                                   Step(SourceKind.OSINT_NEWS, "burst", 60.0)),
                             skip=SkipStrategy.SKIP_TILL_NEXT_MATCH, same=(), description="")


def test_windows_become_floats_and_fractions_are_kept() -> None:
    [p] = compile_patterns(_one(rest=_STEP2.replace("60", "0.5")))
    assert p.steps[1].within_s == 0.5
    [p] = compile_patterns(_one())
    assert p.steps[1].within_s == 60.0 and isinstance(p.steps[1].within_s, float)


def test_exactly_max_steps_compile() -> None:
    [p] = compile_patterns(_one(rest=_STEP2 * (MAX_STEPS - 1)))
    assert len(p.steps) == MAX_STEPS


def test_compiled_patterns_are_frozen() -> None:
    [p] = compile_patterns(DEFAULT_PATTERNS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.steps[0].signal = "anomalous"  # type: ignore[misc]


# ------------------------------------------------------------------ where mistakes are


def test_the_line_named_is_in_the_pattern_that_failed() -> None:
    # pattern #2 starts on line 11; its second step's window is on line 19
    text = _one() + "\n" + _one('name = "q"', rest=_STEP2.replace("60", "-1"))
    assert text.splitlines()[18] == "within_s = -1"
    with pytest.raises(ValueError, match=r"^pattern #2 'q', step 2, within_s \(line 19\): must be a "
                                         r"finite number of seconds > 0, got -1$"):
        compile_patterns(text)


def test_headers_written_with_spaces_still_get_line_numbers() -> None:
    text = _one().replace("[[pattern]]", "[[ pattern ]]").replace("[[pattern.step]]", "[[ pattern . step ]]")
    with pytest.raises(ValueError, match=r"step 2, signal \(line 8\): 'bust' is not a known signal"):
        compile_patterns(text.replace('signal = "burst"\nwithin_s', 'signal = "bust"\nwithin_s'))


def test_inline_tables_compile_but_their_mistakes_name_no_line() -> None:
    text = ('pattern = [{name = "p", step = [{kind = "osint_social", signal = "burst"}, '
            '{kind = "osint_news", signal = "burst", within_s = 5}]}]\n')
    [p] = compile_patterns(text)
    assert [s.within_s for s in p.steps] == [None, 5.0]
    with pytest.raises(ValueError) as info:
        compile_patterns(text.replace('signal = "burst", within_s', 'signal = "bust", within_s'))
    assert str(info.value).startswith("pattern #1 'p', step 2, signal: 'bust' is not a known signal "
                                      "(did you mean 'burst'?)")


def test_a_nan_window_is_refused() -> None:
    with pytest.raises(ValueError, match=r"within_s \(line 9\): must be a finite number of seconds > 0, "
                                         r"got nan"):
        compile_patterns(_one(rest=_STEP2.replace("60", "nan")))


@pytest.mark.parametrize("kind", ['["osint_news"]', "{ name = 1 }"])
def test_a_kind_that_is_not_a_string_is_a_clear_error(kind: str) -> None:
    with pytest.raises(ValueError, match=r"step 1, kind \(line 4\): .* is not a source kind"):
        compile_patterns(_one(step1=f'kind = {kind}\nsignal = "burst"'))
