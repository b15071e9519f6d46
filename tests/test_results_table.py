"""scripts/results_table.py keeps what it cannot regenerate: rows and sections of the last generated
README section whose sources are gone are carried, and regenerated rows replace their old values."""

from __future__ import annotations

from tests.recipe_checks import load_script

OLD = """Sources: a

### Bars

| bar | measured | target | met |
|---|---|---|---|
| x ratio | 1.5 | <= 1 | **no** |
| y ratio | 0.5 | <= 1 | yes |

### Study

| k | v |
|---|---|
| 1 | 2 |

### Runs

| run | sampler | metric | value |
|---|---|---|---|
| x | 1nfe | FD | 9 |
| y | 1nfe | FD | 3 |
| y | 2nfe | FD | 2 |"""

NEW = """Sources: b

### Bars

| bar | measured | target | met |
|---|---|---|---|
| x ratio | 0.9 | <= 1 | yes |

### Runs

| run | sampler | metric | value |
|---|---|---|---|
| x | 1nfe | FD | 4 |"""


def test_carry_forward_keeps_old_rows_and_sections_and_prefers_new_values() -> None:
    table = load_script("results_table")
    merged, carried = table.carry_forward(NEW, OLD)
    lines = merged.split("\n")
    assert lines[0] == "Sources: b"
    assert "| x ratio | 0.9 | <= 1 | yes |" in lines and "| x ratio | 1.5 | <= 1 | **no** |" not in lines
    assert lines.index("| y ratio | 0.5 | <= 1 | yes |") == lines.index("| x ratio | 0.9 | <= 1 | yes |") + 1
    assert "| x | 1nfe | FD | 4 |" in lines and "| x | 1nfe | FD | 9 |" not in lines
    assert lines[-2:] == ["| y | 1nfe | FD | 3 |", "| y | 2nfe | FD | 2 |"]
    assert lines.index("### Study") < lines.index("### Runs")  # a carried section keeps its old place
    assert carried == [("bar", "y ratio"), ("section", "Study"), ("run", "y | 1nfe"), ("run", "y | 2nfe")]
    assert table.carry_forward(NEW.replace("### Runs", "### Runs (3 steps)"), OLD)[1] == carried  # details and numbers in a heading may change


def test_carry_forward_of_an_identical_section_changes_nothing() -> None:
    table = load_script("results_table")
    assert table.carry_forward(OLD, OLD) == (OLD, [])


def test_a_carried_section_after_the_last_regenerated_one_is_set_off_by_a_blank_line() -> None:
    table = load_script("results_table")
    old = OLD + "\n\n### Timings\n\n| n | ms |\n|---|---|\n| 1 | 2 |"
    merged, carried = table.carry_forward(NEW, old)
    assert "| y | 2nfe | FD | 2 |\n\n### Timings\n\n| n | ms |" in merged
    assert ("section", "Timings") in carried


def test_worst_draw_counts_finds_each_runs_largest_ratio_to_the_teacher() -> None:
    """Ratios to the teacher's FD on the same draw, not raw FDs: run a is worst on draw 1 although its largest FD is on draw 0."""
    table = load_script("results_table")
    runs = {"fm": {"generators": {"heun50": {"fd": [1.0, 1.0, 1.0]}}},
            "a": {"generators": {"1nfe": {"fd": [3.0, 1.5, 1.0]}}},
            "b": {"generators": {"1nfe": {"fd": [2.0, 1.0, 1.0]}}},
            "c": {"generators": {"2nfe": {"fd": [9.0, 1.0, 1.0]}}}}
    assert table.worst_draw_counts(runs, [2.0, 0.5, 1.0]) == {1: 2}
    assert table.worst_draw_counts(runs, [1.0, 1.0, 1.0]) == {0: 2}
