"""The benchmark's computed goals: statistics over seeds and each goal's verdict."""

import json

from benchmarks.paper_table import RunResult, goals, stats

STEPS = [1, 2, 4, 8, 16, 32, 64, 128]


def runs(method: str, curves: list[list[float]]) -> list[RunResult]:
    return [RunResult(method, seed, 100, 1.0, 1.0, {f"swd@{n}": v for n, v in zip(STEPS, curve)} | {"flow_rmse@1": 0.2, "flow_rmse@128": 0.15})
            for seed, curve in enumerate(curves)]


def test_stats_are_mean_and_sample_std_over_seeds():
    results = runs("shortcut", [[1.0] * 8, [3.0] * 8])
    assert stats(results, "shortcut", "swd@4") == (2.0, 2.0 ** 0.5, 2)
    assert stats(results, "flow_matching", "swd@4")[2] == 0


def test_goals_name_the_budgets_that_miss():
    shortcut = runs("shortcut", [[0.10, 0.09, 0.08, 0.08, 0.08, 0.08, 0.090, 0.090], [0.10, 0.09, 0.08, 0.08, 0.08, 0.08, 0.094, 0.094]])
    flow = runs("flow_matching", [[1.0, 0.5, 0.2, 0.07, 0.08, 0.08, 0.090, 0.091], [1.0, 0.5, 0.2, 0.07, 0.08, 0.08, 0.090, 0.091]])
    lines = goals(shortcut + flow, ["shortcut", "flow_matching"], "toy2d", {"shortcut": 1.05, "flow_matching": 1.0})
    text = "\n".join(lines)
    assert "**not met** at [8]." in text  # worse than flow matching at 8; 64 and 128 within a seed std
    assert "non-increasing in the budget within one seed std: **not met** (32->64, 64->128)" not in text
    assert "= 1.25 (goal at most 1.3): **met**" in text
    assert "1.05" in text and "1.33x" in text


def test_goals_of_a_variant_row_are_its_own():
    """A shortcut variant gets the same goals from its own numbers, named by its label; the library-wide
    one-step comparison with the paper's settings stays with the default row."""
    flow = runs("flow_matching", [[1.0, 0.5, 0.2, 0.07, 0.08, 0.08, 0.090, 0.091]] * 2)
    variant = runs("shortcut_quarter", [[0.2, 0.09, 0.08, 0.08, 0.08, 0.08, 0.090, 0.090]] * 2)
    paper = runs("shortcut_paper", [[0.5] * 8] * 2)
    methods = ["shortcut_quarter", "flow_matching", "shortcut_paper"]
    text = "\n".join(goals(variant + flow + paper, methods, "toy2d", {}, row="shortcut_quarter"))
    assert "- Shortcut, 1/4 bootstrap swd@1 / its best budget = 2.50 (goal at most 1.3): **not met**" in text
    assert "**not met** at [8]." in text and "Best one-step row" not in text


def test_goals_say_why_none_are_computed_without_a_shortcut_row():
    flow = runs("flow_matching", [[1.0, 0.5, 0.2, 0.07, 0.08, 0.08, 0.090, 0.091]])
    (line,) = goals(flow, ["flow_matching"], "toy2d", {})
    assert "None computed" in line and "`shortcut`" in line


def test_run_folders_change_with_any_resolved_setting():
    from benchmarks.paper_table import settings_tag

    base = ["domain=toy2d", "train.steps=400"]
    assert settings_tag(base) == settings_tag(list(base))
    # The same override list over a different default (here spelled out) names another folder.
    assert settings_tag(base) != settings_tag([*base, "train.ema_decay=0.9"])
    assert settings_tag(base) == settings_tag([*base, "train.ema_decay=0.999"])  # the default itself: same settings


def test_report_without_a_timing_phase_says_so(tmp_path):
    from benchmarks.paper_table import write_report

    results = runs("shortcut", [[0.1] * 8]) + runs("flow_matching", [[0.2] * 8])
    md = write_report(results, ["flow_matching", "shortcut"], "toy2d", "quick", "cmd", [], {}, tmp_path, "t")
    text = md.read_text()
    assert "– (not timed)" in text and "nan" not in text and "(not timed by this command)" in text
    assert "step time / flow matching" not in text  # no step-time goal without a measured ratio


def test_a_timed_report_names_the_machine_that_timed_it(tmp_path):
    from dataclasses import replace

    from benchmarks.common import machine_description
    from benchmarks.paper_table import write_report

    results = [replace(r, machine="machine A") for r in runs("shortcut", [[0.1] * 8]) + runs("flow_matching", [[0.2] * 8])]
    text = write_report(results, ["flow_matching", "shortcut"], "toy2d", "quick", "cmd", [], {"flow_matching": 1.0, "shortcut": 1.2},
                        tmp_path, "t").read_text()
    assert "Machine: machine A." in text  # where the runs were trained
    assert f"one interleaved timing run on {machine_description()}, median of blocks" in text  # where they were timed
    assert "| Shortcut | 1.20x |" in text


def test_the_shared_setting_line_prints_the_setting_that_wins(tmp_path):
    from benchmarks.paper_table import write_report

    results = runs("shortcut", [[0.1] * 8]) + runs("flow_matching", [[0.2] * 8])
    overrides = ["domain=toy2d", "train.steps=5000", "train.batch_size=64", "train.steps=20000"]
    text = write_report(results, ["flow_matching", "shortcut"], "toy2d", "quick", "cmd", overrides, {}, tmp_path, "t").read_text()
    assert "`domain=toy2d train.batch_size=64 train.steps=20000`" in text
    assert "train.steps=5000" not in text


def test_sampling_only_rows_change_no_training_setting():
    from benchmarks.common import compose_config
    from benchmarks.paper_table import BY_KEY, METHODS
    from shortcutlib.config import as_dict

    rows = [m for m in METHODS if m.samples_of]
    assert rows
    for row in rows:
        source = BY_KEY[row.samples_of]
        assert row.overrides == source.overrides and row.sampling and not source.samples_of
        trained = as_dict(compose_config(["domain=toy2d", "out_dir=.", *source.overrides]))
        sampled = as_dict(compose_config(["domain=toy2d", "out_dir=.", *row.overrides, *row.sampling]))
        for override in row.sampling:  # only the named sampler settings differ
            section, key = override.split("=")[0].split(".")
            assert trained[section].pop(key) != sampled[section].pop(key)
        assert trained == sampled


def test_a_sampling_only_row_samples_its_source_weights(tmp_path):
    from benchmarks.paper_table import BY_KEY, COMMON, SETTINGS, run_dir_of, run_method

    settings = [*SETTINGS["toy2d"]["quick"], *COMMON]
    row = BY_KEY["shortcut_adaptive_shortcut_queries"]  # flow_budget=null: d = 1/n where the source queries d = 0
    result = run_method(row, 0, settings, "quick", tmp_path, fresh=False)
    source_dir = run_dir_of(BY_KEY[row.samples_of], 0, settings, "quick", tmp_path)
    source = json.loads((source_dir / "result.json").read_text())
    assert not list(run_dir_of(row, 0, settings, "quick", tmp_path).glob("checkpoints*"))  # nothing trained for the row
    assert result.total_steps == source["total_steps"] and result.train_wall_s == source["train_wall_s"]
    for n in (1, 2, 4, 8):  # below the source's flow budget (16) both query d = 1/n: the same samples
        assert result.metrics[f"swd@{n}"] == source["metrics"][f"swd@{n}"]
    assert all(result.metrics[f"swd@{n}"] != source["metrics"][f"swd@{n}"] for n in (16, 128))


def test_stored_runs_with_the_current_settings_are_taken_instead_of_training(tmp_path):
    from dataclasses import replace

    from benchmarks.common import flatten
    from benchmarks.paper_table import BY_KEY, COMMON, SETTINGS, resolved_settings, run_method, stored_run

    settings = [*SETTINGS["toy2d"]["quick"], *COMMON]
    method = BY_KEY["flow_matching"]
    overrides = [*settings, *method.overrides]
    current = flatten(resolved_settings(overrides))
    before_adaptive = {k: v for k, v in current.items() if k != "objective.adaptive_p"}  # stored before the setting existed
    run = RunResult("flow_matching", 0, 40, 1.0, 1.0, {"swd@1": 0.5}, before_adaptive, "machine A", "cmd A")
    assert run_method(method, 0, settings, "quick", tmp_path, fresh=False, stored=[run]) == run
    assert not any(tmp_path.iterdir())  # nothing trained
    assert stored_run([run], method, 1, overrides) is None  # another seed
    assert stored_run([replace(run, settings={**current, "train.lr": 1.0})], method, 0, overrides) is None  # a changed setting
    assert stored_run([replace(run, settings={**before_adaptive, "objective.adaptive_p": 1.0})], method, 0, overrides) is None
    assert stored_run([replace(run, settings={**current, "objective.retired": 1})], method, 0, overrides) is None  # a removed one
    # the settings decide, not the row a run was stored under: taken under this row's name
    elsewhere = replace(run, method="flow_matching_pseudo_huber", settings=current)
    assert stored_run([elsewhere], method, 0, overrides) == replace(elsewhere, method="flow_matching")
    assert stored_run([elsewhere, run], method, 0, overrides) == run  # its own row's run first
    assert stored_run([replace(elsewhere, settings={**current, "objective.adaptive_p": 0.5})], method, 0, overrides) is None


def test_a_run_stored_before_a_setting_existed_has_the_objectives_default_not_the_domains():
    """Fashion-MNIST sets the shortcut's bootstrap_weight to 4 (configs/domain_objective/): a run that
    predates the setting was made at the objective's own default, 1, so it is not a run of the default row."""
    from benchmarks.common import flatten
    from benchmarks.paper_table import BY_KEY, SETTINGS, resolved_settings, stored_run

    method = BY_KEY["shortcut"]
    overrides = [*SETTINGS["fmnist"]["quick"], *method.overrides]
    current = flatten(resolved_settings(overrides))
    assert current["objective.bootstrap_weight"] == 4.0
    before = {k: v for k, v in current.items() if k != "objective.bootstrap_weight"}
    run = RunResult("shortcut", 0, 20, 1.0, 1.0, {"fd_fmnist@1": 30.0}, before, "machine A", "cmd A")
    assert stored_run([run], method, 0, overrides) is None
    weight_1 = [*overrides, "objective.bootstrap_weight=1"]
    assert stored_run([run], method, 0, weight_1) == run  # the same run is one of the weight-1 row


def test_the_paper_row_keeps_the_papers_settings_on_every_domain():
    """A domain's defaults for the shortcut (configs/domain_objective/) never reach the paper-settings row."""
    from benchmarks.common import flatten
    from benchmarks.paper_table import BY_KEY, SETTINGS, resolved_settings

    for domain, budgets in SETTINGS.items():
        paper = flatten(resolved_settings([*budgets["quick"], *BY_KEY["shortcut_paper"].overrides]))
        assert (paper["objective.bootstrap_fraction"], paper["objective.bootstrap_weight"], paper["objective.adaptive_p"]) == (0.25, 1.0, 0.0), domain
        assert (paper["objective.level_decay"], paper["objective.bootstrap_ema"], paper["objective.flow_rows"]) == (1.0, True, "rest"), domain
        assert paper["objective.flow_warmup"] == 0.0, domain


def test_stored_results_name_their_commands_and_machines(tmp_path):
    from dataclasses import replace

    from benchmarks.paper_table import load_stored, write_report

    old = runs("flow_matching", [[0.2] * 8])[0]
    payload = {"machine": "machine A", "command": "cmd A",
               "runs": [vars(old) | {"settings": {"train.lr": 1.0}}, vars(old) | {"seed": 1}]}  # the second recorded no settings
    (tmp_path / "old.json").write_text(json.dumps(payload))
    (stored,) = load_stored([str(tmp_path / "old.json")])
    assert (stored.seed, stored.machine, stored.command) == (0, "machine A", "cmd A")
    new = [replace(r, machine="machine B", command="cmd B") for r in runs("shortcut", [[0.1] * 8])]
    new.append(replace(stored, seed=1, train_wall_s=3.0, machine="machine B", command="cmd B"))
    text = write_report([stored, *new], ["flow_matching", "shortcut"], "toy2d", "quick", "cmd B", [], {}, tmp_path, "t").read_text()
    assert "Machines: machine A (Flow matching seed 0); machine B (Shortcut seed 0; Flow matching seed 1)." in text
    assert "- `cmd A`: Flow matching seed 0" in text and "`cmd B`:" not in text
    assert "| Flow matching | – (not timed) | 1 / 3 |" in text and "| Shortcut | – (not timed) | 1 |" in text  # one mean per machine


def test_runs_scored_by_different_evaluators_are_named():
    from dataclasses import replace

    from benchmarks.paper_table import evaluators_differ

    here = [replace(r, metrics={**r.metrics, "fd_floor": 2.4374}) for r in runs("shortcut", [[0.1] * 8, [0.1] * 8])]
    assert evaluators_differ(here, "fd") is None
    elsewhere = replace(here[0], seed=2, metrics={**here[0].metrics, "fd_floor": 2.5428})
    assert evaluators_differ([*here, elsewhere], "fd") == "floor 2.4374: Shortcut seeds 0, 1; floor 2.5428: Shortcut seed 2"
    # Runs that name their judge are told apart by it, even at equal floors; runs that do not, by the floor alone.
    named = [replace(here[0], evaluator="a" * 40), replace(here[1], evaluator="b" * 40)]
    assert evaluators_differ(named, "fd") == "judge aaaaaaaaaaaa: Shortcut seed 0; judge bbbbbbbbbbbb: Shortcut seed 1"
    assert evaluators_differ([named[0], here[1]], "fd") is None


def test_a_run_names_the_judge_that_scored_it(tmp_path):
    from benchmarks.paper_table import judge_of

    assert judge_of(tmp_path) == ""  # no classifier evaluation (toy2d, digits)
    (tmp_path / "fd.json").write_text(json.dumps({"evaluator": "classifier", "judge_sha1": "c" * 40, "fd_fmnist@1": 3.0}))
    assert judge_of(tmp_path) == "c" * 40


def test_the_report_names_the_judge_beside_the_floor(tmp_path):
    from dataclasses import replace

    from benchmarks.paper_table import write_report

    scored = [RunResult(m, 0, 100, 1.0, 1.0, {f"fd@{n}": 1.0 for n in STEPS} | {f"class_acc@{n}": 0.9 for n in STEPS} | {"fd_floor": 0.5})
              for m in ("flow_matching", "shortcut")]
    text = write_report(scored, ["flow_matching", "shortcut"], "digits", "quick", "cmd", [], {}, tmp_path, "t").read_text()
    assert "same sample size): 0.500.\n" in text  # no judge recorded: none named
    text = write_report([replace(r, evaluator="d" * 40) for r in scored], ["flow_matching", "shortcut"], "digits", "quick", "cmd", [], {},
                        tmp_path, "t").read_text()
    assert f"same sample size): 0.500. Scored by the classifier judge with weights SHA-1 {'d' * 40}." in text


def test_paired_differences_are_seed_by_seed_and_skip_unshared_seeds():
    from benchmarks.paired import paired_differences

    def run(method, seed, fd1, fd4):
        return {"method": method, "seed": seed, "metrics": {"fd@1": fd1, "fd@4": fd4, "class_acc@1": 0.9}}

    data = [run("a", 0, 3.0, 1.0), run("a", 1, 5.0, 2.0), run("a", 2, 9.0, 9.0), run("b", 0, 1.0, 1.5), run("b", 1, 4.0, 1.0)]
    assert paired_differences(data, "fd", "a", "b") == {1: [2.0, 1.0], 4: [-0.5, 1.0]}


def test_paired_reads_robot_rows_as_task_and_method_with_a_key_suffix():
    from benchmarks.paired import paired_differences, rows_and_runs

    def seeds(*pairs):
        return {"per_seed": {str(s): {"success@1": a, "success@1|noise=0": b, "success@4|noise=0": b} for s, (a, b) in enumerate(pairs)}}

    data = {"results": {"cube": {"methods": {"shortcut": seeds((0.2, 0.5), (0.4, 0.1))}},
                        "cube [p]": {"methods": {"shortcut": seeds((0.3, 0.25), (0.4, 0.3))}}}}
    rows, runs, metric = rows_and_runs(data)
    assert rows == ["cube [p]/shortcut", "cube/shortcut"] and metric == "success"

    def rounded(diffs):
        return {n: [round(d, 9) for d in values] for n, values in diffs.items()}

    assert rounded(paired_differences(runs, metric, "cube [p]/shortcut", "cube/shortcut")) == {1: [0.1, 0.0]}
    assert rounded(paired_differences(runs, metric, "cube [p]/shortcut", "cube/shortcut", "|noise=0")) == {1: [-0.25, 0.2], 4: [-0.25, 0.2]}


def test_a_run_stopped_by_a_signal_is_neither_evaluated_nor_recorded(tmp_path, monkeypatch):
    """A stopped run's partly trained weights must not become the row's result (a rerun resumes it)."""
    from types import SimpleNamespace

    import pytest

    from benchmarks import paper_table

    stopped = SimpleNamespace(result=SimpleNamespace(preempted=True), total_steps=40)
    monkeypatch.setattr(paper_table, "run_phases", lambda *args, **kwargs: stopped)
    settings = [*paper_table.SETTINGS["toy2d"]["quick"], *paper_table.COMMON]
    method = paper_table.BY_KEY["flow_matching"]
    with pytest.raises(SystemExit, match="stopped by a signal; rerun the same command"):
        paper_table.run_method(method, 0, settings, "quick", tmp_path, fresh=False)
    assert not (paper_table.run_dir_of(method, 0, settings, "quick", tmp_path) / "result.json").exists()


def test_the_step_time_of_a_staged_row_weighs_each_stage_by_its_steps(monkeypatch):
    """flow_warmup=0.5: half the steps at the first stage's time, half at the second's."""
    import benchmarks.paper_table as paper_table

    def fake_times(steps, states, batches, rounds):
        per_step = {"flow_matching": 2.0, "shortcut_flow_warmup_half#0": 2.0, "shortcut_flow_warmup_half#1": 3.0}
        assert set(steps) == set(per_step)
        return {key: [per_step[key]] * rounds for key in steps}, states

    monkeypatch.setattr(paper_table, "interleaved_step_times", fake_times)
    methods = [paper_table.BY_KEY["flow_matching"], paper_table.BY_KEY["shortcut_flow_warmup_half"]]
    ratios = paper_table.step_time_ratios(methods, paper_table.SETTINGS["toy2d"]["quick"], "quick", rounds=3, block=2)
    assert ratios == {"flow_matching": 1.0, "shortcut_flow_warmup_half": 1.25}
