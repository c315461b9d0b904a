"""Merging rows of earlier paper-table invocations: which flow-matching row times each row."""

import json
import math

from benchmarks.paper_table import MethodResult, merge_results


def row(objective: str, steps_per_sec: float, fm_steps_per_sec: float = math.nan) -> MethodResult:
    return MethodResult(objective, objective, 100, steps_per_sec, 1.0, 1.0, fm_steps_per_sec=fm_steps_per_sec)


def write(path, rows: list[MethodResult]) -> str:
    path.write_text(json.dumps([vars(r) for r in rows], default=float))
    return str(path)


def test_each_row_is_timed_against_its_own_or_the_nearest_earlier_flow_matching(tmp_path):
    first = write(tmp_path / "a.json", [row("flow_matching", 20.0), row("consistency", 10.0)])
    without_fm = write(tmp_path / "b.json", [row("progressive", 5.0)])
    fresh = [row("flow_matching", 50.0, 50.0), row("shortcut", 40.0, 50.0)]
    rows = {r.objective: r for r in merge_results([first, without_fm], fresh)}
    assert rows["consistency"].fm_steps_per_sec == 20.0  # its own file's flow matching
    assert rows["progressive"].fm_steps_per_sec == 20.0  # the file before it, not this invocation's
    assert rows["shortcut"].fm_steps_per_sec == 50.0
    assert rows["flow_matching"].steps_per_sec == 50.0  # rerun rows replace merged ones


def test_rows_run_without_flow_matching_use_the_last_merged_one(tmp_path):
    merged = write(tmp_path / "a.json", [row("flow_matching", 20.0), row("shortcut", 10.0)])
    rows = merge_results([merged], [row("shortcut", 16.0)])
    assert [r.objective for r in rows] == ["shortcut", "flow_matching"]  # the table's order
    assert rows[0].steps_per_sec == 16.0 and rows[0].fm_steps_per_sec == 20.0
