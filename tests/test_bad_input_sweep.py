"""The bad-input sweep's table (tests/benchmarks/bad_input_sweep.py, docs/reliability.md "Bad inputs,
counted"), without running a command: every case has a stage, an installed command and, where a test
covers it, a test file that exists; the tests' own tables of broken rows and prompt tables are all in it."""

from __future__ import annotations

from pathlib import Path

from benchmarks import bad_input_sweep as sweep

TESTS = Path(__file__).parent


def test_every_case_names_a_stage_a_command_and_a_test_that_exists():
    cases = sweep.all_cases()
    assert {c.stage for c in cases} == set(sweep.STAGES)
    assert len({(c.name, c.command) for c in cases}) == len(cases)  # no case twice
    for c in cases:
        assert c.command in sweep.SCRIPTS and c.expect in (1, 2), c
        assert not c.test or (TESTS / c.test).is_file(), c.test
    assert sum(c.test == "" for c in cases) <= len(cases) // 10  # beyond the tests: the few the sweep adds


def test_the_tests_tables_of_broken_inputs_are_all_swept():
    import test_annotations
    import test_prompts

    cases = sweep.all_cases()
    prompts = [c for c in cases if c.name.startswith("QA-prompt table: ")]
    assert sorted(c.name.removeprefix("QA-prompt table: ") for c in prompts) == sorted(test_prompts.BAD)
    rows = sweep.parametrized(test_annotations.test_bad_row_names_file_row_and_value)
    files = sweep.parametrized(test_annotations.test_bad_file)
    assert sum(c.name.startswith("a row with ") for c in cases) == len(rows)
    kinds = {"truncated JSON", "a JSON object, not a list", "a row that is not an object"}
    assert len(files) == len(kinds) and kinds <= {c.name for c in cases}
    assert sum(c.name == "unknown option --zzz" for c in cases) == len(sweep.SCRIPTS)
