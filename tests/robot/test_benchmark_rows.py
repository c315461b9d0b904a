"""benchmarks/robot_policies.py: refreshing one method's row keeps the others only when the settings match."""

import pytest

from benchmarks.robot_policies import (
    changed_settings,
    combine_seeds,
    extra_scales,
    merge_methods,
    parse_scales,
    render,
    scaled_key,
    success_cell,
)

SETTINGS = dict(
    overrides=["domain=robot"],
    num_train_episodes=9,
    action_noise=0.1,
    episodes=100,
    train={"steps": 1, "batch_size": 8, "lr": 1e-3, "schedule": "cosine", "warmup_steps": 0, "ema_decay": 0.99},
    model={"name": "mlp"},
    windows={"obs_horizon": 2, "horizon": 16, "action_horizon": 4},
    norm={"obs_norm": "meanstd", "action_norm": "meanstd"},
)


def row(success: float) -> dict:
    return {"success@1": success, "train_s": 10.0, "eval_s": 2.0, "steps_per_sec": 1.0}


def entry(methods: dict, command: str, finished: str, **changes) -> dict:
    return dict(SETTINGS, **changes, methods=methods, wall_s=20.0, command=command, finished=finished,
                expert_success=1.0, data_s=0.0)


FULL = entry({"shortcut": row(0.1), "flow_matching": row(0.2), "bc": row(0.3)}, "--tasks reacher", "T1")


def test_refreshed_row_replaces_only_its_method():
    merged = merge_methods(FULL, entry({"shortcut": row(0.9)}, "--tasks reacher --methods shortcut", "T2"))
    assert list(merged["methods"]) == ["shortcut", "flow_matching", "bc"]
    assert [merged["methods"][m]["success@1"] for m in merged["methods"]] == [0.9, 0.2, 0.3]
    assert merged["wall_s"] == 20.0 + 2 * 12.0
    text = render({"reacher": merged}, "test machine", "robot_policies", {}, [])
    assert "Rows flow matching, MSE BC from an earlier run with the same settings: `python benchmarks/robot_policies.py --tasks reacher` (T1)" in text
    assert "Rows shortcut" not in text
    assert "| reacher | 100% | 100 | 1 | 90% |" in text


def test_rows_keep_their_origin_over_two_refreshes():
    once = merge_methods(FULL, entry({"shortcut": row(0.9)}, "--methods shortcut", "T2"))
    twice = merge_methods(once, entry({"bc": row(0.5)}, "--methods bc", "T3"))
    origins = {m: r["per_seed"]["0"]["origin"]["finished"] for m, r in twice["methods"].items()}
    assert origins == {"shortcut": "T2", "flow_matching": "T1", "bc": "T3"}


def seeded(values: dict[str, float], command: str, finished: str) -> dict:
    """A row as a run of several seeds stores it: success@1 per seed."""
    per_seed = {seed: dict(row(v), origin={"command": command, "finished": finished}) for seed, v in values.items()}
    return combine_seeds(per_seed, {"_target_": "x"})


def test_seeds_average_and_report_their_std():
    sc = seeded({"0": 0.1, "1": 0.3, "2": 0.2}, "--seeds 0 1 2", "T1")
    assert sc["success@1"] == pytest.approx(0.2) and sc["train_s"] == 30.0 and sc["steps_per_sec"] == 1.0
    assert success_cell(sc, "success@1") == "20 ± 10%"
    assert success_cell(sc, "success@4") == "–" and success_cell(None, "success@1") == "–"
    assert success_cell(row(0.25), "success@1") == "25%"


def test_added_seeds_join_the_stored_seed_zero():
    first = entry({"shortcut": seeded({"0": 0.1}, "--tasks reacher", "T1"), "bc": seeded({"0": 0.3}, "--tasks reacher", "T1")},
                  "--tasks reacher", "T1")
    more = entry({"shortcut": seeded({"1": 0.3, "2": 0.5}, "--seeds 1 2 --methods shortcut", "T2")},
                 "--seeds 1 2 --methods shortcut", "T2")
    merged = merge_methods(first, more)
    sc = merged["methods"]["shortcut"]
    assert list(sc["per_seed"]) == ["0", "1", "2"] and sc["success@1"] == pytest.approx(0.3)
    assert success_cell(sc, "success@1") == "30 ± 20%"
    text = render({"reacher": merged}, "test machine", "robot_policies", {}, [])
    assert "| reacher | 100% | 100 | sc 3, BC 1 | 30 ± 20% |" in text  # the seeds each row rests on
    assert "Rows shortcut seed 0, MSE BC from an earlier run with the same settings: `python benchmarks/robot_policies.py --tasks reacher` (T1)" in text
    # A changed objective drops the stored seeds instead of mixing settings.
    changed = dict(more["methods"]["shortcut"], objective={"_target_": "y"})
    assert list(merge_methods(first, dict(more, methods={"shortcut": changed}))["methods"]["shortcut"]["per_seed"]) == ["1", "2"]


def test_objective_settings_added_later_join_at_their_default():
    from benchmarks.robot_policies import same_objective
    from shortcutlib.config import as_dict, compose_config

    current = as_dict(compose_config(["objective=shortcut"]).objective)
    stored = {k: v for k, v in current.items() if not k.startswith("adaptive")}  # stored before the adaptive weight
    assert same_objective(stored, current, "shortcut")
    assert not same_objective(stored, dict(current, adaptive_p=1.0), "shortcut")  # added, not at its default
    assert not same_objective(current, dict(current, bootstrap_fraction=0.25), "shortcut")  # changed
    assert not same_objective(current, stored, "shortcut")  # removed


def test_different_settings_replace_the_whole_task():
    changed = entry({"shortcut": row(0.9)}, "--methods shortcut", "T2", episodes=50)
    merged = merge_methods(FULL, changed)
    assert list(merged["methods"]) == ["shortcut"] and "kept_rows" not in merged
    assert changed_settings(FULL, changed) == ["episodes"] and changed_settings(FULL, FULL) == []


def test_scaled_noise_rows_get_their_own_table():
    shortcut = dict(row(0.9), **{scaled_key("success@1", 0.0): 1.0, scaled_key("success@4", 0.0): 0.97})
    fm = dict(row(0.8), **{scaled_key("success@1", 0.5): 0.85})
    results = {"reacher": entry({"shortcut": shortcut, "flow_matching": fm, "bc": row(0.3)}, "--tasks reacher", "T1")}
    assert extra_scales(results) == [0.0, 0.5]
    text = render(results, "test machine", "robot_policies", {}, [])
    zero_table = text.split("scaled by 0 ")[1].split("\n\n")[1].splitlines()
    assert zero_table[0].startswith("| task | sc@1 x0 | sc@2 x0 | sc@4 x0 |")
    assert zero_table[2] == "| reacher | 100% | – | 97% | – | – | – | – | – | 30% |"
    half_table = text.split("scaled by 0.5")[1].split("\n\n")[1].splitlines()
    assert half_table[2] == "| reacher | – | – | – | – | 85% | – | – | – | 30% |"


def test_noise_scales_parse_without_plain_sampling():
    assert parse_scales("0,1,0.5") == [0.0, 0.5] and parse_scales("") == []
    with pytest.raises(ValueError, match=">= 0"):
        parse_scales("-1")


def test_goals_compare_the_one_step_policy_at_its_better_mode():
    from benchmarks.robot_policies import goals

    shortcut = {"success@1": 0.10, "success@1|noise=0": 0.14, "success@128": 0.0, "success@128|noise=0": 0.14}
    flow = {"success@1": 0.16, "success@4|noise=0": 0.20, "success@128": 0.04}
    lines = goals("ogbench_cube_single", {"shortcut": shortcut, "flow_matching": flow})
    assert lines == [
        "- ogbench_cube_single: one-step shortcut 14% ≥ flow matching's best budget 20% − 3: **not met**.",
        "- ogbench_cube_single: one-step shortcut 14% ≥ 0.95 × its 128-step 14%: **met**.",
        "- ogbench_cube_single: one-step shortcut 14% ≥ published GCBC 6%: **met**.",
    ]
    # The published numbers are on the play datasets: noisy-data rows are not compared with them.
    assert goals("ogbench_cube_single [noisy]", {"shortcut": shortcut, "flow_matching": flow}, "noisy") == [
        line.replace("ogbench_cube_single", "ogbench_cube_single [noisy]") for line in lines[:2]]
    assert goals("reacher", {"bc": {"success@1": 0.5}}) == []


def test_goals_count_the_seeds_behind_a_mean():
    from benchmarks.robot_policies import goals

    def over_seeds(cells: dict[str, list[float]]) -> dict:
        per_seed = {str(i): {key: values[i] for key, values in cells.items()} for i in range(3)}
        return combine_seeds(per_seed, {"_target_": "x"})

    # Sampled one-step is the shortcut's better mode on the means (0.2 > 0.1); flow matching's best
    # cell is its deterministic 4 steps. Seed by seed: 0.3 vs 0.1, 0.2 vs 0.2, 0.1 vs 0.3.
    shortcut = over_seeds({"success@1": [0.3, 0.2, 0.1], "success@1|noise=0": [0.1, 0.1, 0.1],
                           "success@128": [0.1, 0.1, 0.2]})
    flow = over_seeds({"success@1": [0.0, 0.0, 0.0], "success@4|noise=0": [0.1, 0.2, 0.3]})
    lines = goals("scene", {"shortcut": shortcut, "flow_matching": flow})
    assert lines[0] == ("- scene: one-step shortcut 20% ≥ flow matching's best budget 20% − 3: **met** "
                        "(by seed: ahead on 1, level on 1, behind on 1).")
    assert lines[1] == ("- scene: one-step shortcut 20% ≥ 0.95 × its 128-step 13.3%: **met** "
                        "(by seed: ahead on 2, level on 0, behind on 1).")
    assert lines[2] == "- scene: one-step shortcut 20% ≥ published GCBC 5%: **met**."


def test_header_names_the_machine_of_every_row():
    from benchmarks.robot_policies import machines_line

    rows = {"reacher": dict(FULL, machine="A"), "cube_single": dict(FULL, machine="B"), "pointmaze_large": FULL}
    assert machines_line(rows, "C") == "Machines: A (reacher); C (pointmaze_large); B (cube_single)."
    assert machines_line({"reacher": dict(FULL, machine="A")}, "C") == "Machine: A."
    assert machines_line({}, "C") == "Machine: C."


def test_a_row_whose_seeds_ran_on_two_machines_names_both():
    from benchmarks.robot_policies import machines_line

    def run(seed: str, command: str, finished: str, machine: str) -> dict:
        methods = {m: seeded({seed: 0.1}, command, finished) for m in ("shortcut", "flow_matching", "bc")}
        if machine == "B":  # a run that names its machine in each seed's origin; "A" ran before origins did
            for row_ in methods.values():
                row_["per_seed"][seed]["origin"]["machine"] = machine
        return entry(methods, command, finished, machine=machine)

    merged = merge_methods(run("0", "--seeds 0", "T1", "A"), run("1", "--seeds 1", "T2", "B"))
    assert merged["machine"] == "B"  # the latest run's; the seeds keep their own
    assert {m: {s: r["origin"]["machine"] for s, r in row_["per_seed"].items()} for m, row_ in merged["methods"].items()} == {
        m: {"0": "A", "1": "B"} for m in ("shortcut", "flow_matching", "bc")}
    assert machines_line({"cube_single": merged, "reacher": dict(FULL, machine="B")}, "C") == (
        "Machines: B (reacher, cube_single seed 1); A (cube_single seed 0).")  # in the tables' task order
    one_method = merge_methods(merged, entry({"bc": seeded({"2": 0.1}, "--seeds 2 --methods bc", "T3")}, "--seeds 2 --methods bc",
                                             "T3", machine="A"))
    assert machines_line({"cube_single": one_method}, "C") == (
        "Machines: A (cube_single shortcut seed 0 / flow matching seed 0 / MSE BC seeds 0, 2); B (cube_single seed 1).")
