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


def _digits_run(fd: float) -> dict:
    return {"results": {"1nfe": {"fd": fd, "class_acc": 0.99}, "2nfe": {"fd": fd / 2, "class_acc": 0.99}}}


def test_a_1nfe_bar_reads_the_mean_over_draws_where_the_run_was_scored_on_them() -> None:
    """Teacher 1.0 on the recipe's draw, 2.0 as a mean. Run a: 1.8 on its draw (1.8x, over the bar) but 2.6 as a mean
    (1.3x): its draw is reported, the verdict is the mean's, in the next row. Run b, never re-scored: its draw's verdict."""
    table = load_script("results_table")
    runs = {"fm (digits)": {"results": {"heun50": {"fd": 1.0}, "euler50": {"fd": 1.1}}}, "a (default)": _digits_run(1.8), "b (default)": _digits_run(1.2)}
    draws = {"draws": 2, "runs": {"fm": {"generators": {"heun50": {"mean": 2.0}, "euler50": {"mean": 2.2}}},
                                  "a": {"generators": {"1nfe": {"mean": 2.6}}}, "c": {"generators": {"1nfe": {"mean": 3.2}}}}}
    lines = table.bar_lines(runs, {}, {"fd_draws": draws})
    a = lines.index(f"| a 1-NFE FD / FM 50-step FD (digits) | 1.8 | {table.DRAWN_TARGET} | - |")
    assert lines[a + 1] == "| a 1-NFE FD / FM 50-step FD (digits), each the mean of 2 noise draws | 1.3 | <= 1.5 | yes |"
    assert "| b 1-NFE FD / FM 50-step FD (digits) | 1.2 | <= 1.5 | yes |" in lines
    assert "| c 1-NFE FD / FM 50-step FD (digits), each the mean of 2 noise draws | 1.6 | <= 1.5 | **no** |" in lines
    assert sum("each the mean" in line for line in lines) == 2  # a's mean row is not repeated among the others'
    no_teacher = {"draws": 2, "runs": {k: v for k, v in draws["runs"].items() if k != "fm"}}
    assert "| a 1-NFE FD / FM 50-step FD (digits) | 1.8 | <= 1.5 | **no** |" in table.bar_lines(runs, {}, {"fd_draws": no_teacher})
