"""benchmarks/robot_policies.py: refreshing one method's row keeps the others only when the settings match."""

import pytest

from benchmarks.robot_policies import (
    extra_scales,
    merge_methods,
    parse_scales,
    render,
    scaled_key,
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
    assert merged["kept_rows"] == [{"methods": ["flow_matching", "bc"], "command": "--tasks reacher", "finished": "T1"}]
    text = render({"reacher": merged}, "test machine", "robot_policies", {}, [])
    assert "Rows flow matching, MSE BC from an earlier run" in text and "--methods shortcut" in text


def test_rows_keep_their_origin_over_two_refreshes():
    once = merge_methods(FULL, entry({"shortcut": row(0.9)}, "--methods shortcut", "T2"))
    twice = merge_methods(once, entry({"bc": row(0.5)}, "--methods bc", "T3"))
    origins = {m: g["finished"] for g in twice["kept_rows"] for m in g["methods"]}
    assert origins == {"shortcut": "T2", "flow_matching": "T1"}


def test_different_settings_replace_the_whole_task():
    merged = merge_methods(FULL, entry({"shortcut": row(0.9)}, "--methods shortcut", "T2", episodes=50))
    assert list(merged["methods"]) == ["shortcut"] and "kept_rows" not in merged


def test_scaled_noise_rows_get_their_own_table():
    shortcut = dict(row(0.9), **{scaled_key("success@1", 0.0): 1.0, scaled_key("success@4", 0.0): 0.97})
    fm = dict(row(0.8), **{scaled_key("success@1", 0.5): 0.85})
    results = {"reacher": entry({"shortcut": shortcut, "flow_matching": fm, "bc": row(0.3)}, "--tasks reacher", "T1")}
    assert extra_scales(results) == [0.0, 0.5]
    text = render(results, "test machine", "robot_policies", {}, [])
    zero_table = text.split("scaled by 0 ")[1].split("\n\n")[1].splitlines()
    assert zero_table[0].startswith("| task | sc@1 x0 | sc@4 x0 |")
    assert zero_table[2] == "| reacher | 100% | 97% | – | – | – | – | 30% |"
    half_table = text.split("scaled by 0.5")[1].split("\n\n")[1].splitlines()
    assert half_table[2] == "| reacher | – | – | – | 85% | – | – | 30% |"


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
    assert goals("reacher", {"bc": {"success@1": 0.5}}) == []
