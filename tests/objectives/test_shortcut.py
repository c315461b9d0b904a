"""The shortcut objective: exact Gaussian oracle, and each defect of the reference code."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from domains.toy import gaussian
from shortcutlib.objectives import common, flow_matching, shortcut
from shortcutlib.objectives.base import (
    ObjectiveContext,
    Targets,
    stage_index,
    weighted_mse,
)
from shortcutlib.objectives.flow_matching import FlowMatching
from shortcutlib.objectives.shortcut import Shortcut
from shortcutlib.sampling import euler_sample
from tests.objectives.gaussian_case import MU, ORACLE, SIGMA
from tests.objectives.gaussian_case import batch as gaussian_batch


def test_exact_gaussian_shortcut_composes():
    """The closed-form flow composes: two exact d-steps equal one exact 2d-step."""
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
    t = jnp.full((64,), 0.25)
    d = jnp.full((64,), 0.25)
    x_mid = x + d[:, None] * ORACLE(x, t, d)
    two = (ORACLE(x, t, d) + ORACLE(x_mid, t + d, d)) / 2
    np.testing.assert_allclose(two, ORACLE(x, t, 2 * d), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t_sampling", ["grid", "uniform", "logit_normal"])
def test_bootstrap_target_of_oracle_is_oracle(t_sampling):
    """With an exact model the self-consistency target equals its own 2d shortcut: loss 0 at the optimum.

    Holds exactly for every level whose half steps query d > 0. The finest level (size 1/M)
    is Heun's step of size 1/M on the instantaneous velocity (d = 0); check it is exactly that.
    """
    cfg = shortcut.Config(flow_rows="rest", bootstrap_fraction=1.0, M=8, t_sampling=t_sampling)
    tg = shortcut.Shortcut(cfg).targets(jax.random.PRNGKey(1), gaussian_batch(jax.random.PRNGKey(2), 512), ORACLE, ORACLE)
    pred = ORACLE(tg.x_t, tg.t, tg.d, None)
    coarse = np.asarray(tg.d) > 1 / 8
    assert 0 < coarse.sum() < len(coarse)
    np.testing.assert_allclose(np.asarray(tg.v_target)[coarse], np.asarray(pred)[coarse], rtol=1e-4, atol=1e-4)
    loss = weighted_mse(pred[coarse], Targets(*[a[coarse] for a in tg[:3]], None, tg.v_target[coarse], tg.weight[coarse]))
    assert float(loss) < 1e-9
    x, t, h = tg.x_t[~coarse], tg.t[~coarse], tg.d[~coarse]
    zero = jnp.zeros_like(h)
    v1 = ORACLE(x, t, zero, None)
    v2 = ORACLE(x + h[:, None] * v1, t + h, zero, None)
    np.testing.assert_allclose(np.asarray(tg.v_target)[~coarse], np.asarray((v1 + v2) / 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "objective",
    [
        Shortcut(shortcut.Config(bootstrap_fraction=0.0, t_sampling="uniform")),
        Shortcut(shortcut.Config(bootstrap_fraction=0.0, t_sampling="logit_normal")),
        FlowMatching(flow_matching.Config(t_sampling="logit_normal")),
    ],
    ids=["shortcut-uniform", "shortcut-logit-normal", "flow-matching-logit-normal"],
)
def test_flow_matching_part_is_unbiased_for_oracle_velocity(objective):
    """E[x1 - x0 | x_t] is the exact velocity: the residual of the FM target is uncorrelated with x_t."""
    tg = objective.targets(jax.random.PRNGKey(3), gaussian_batch(jax.random.PRNGKey(4), 200_000), ORACLE, ORACLE)
    assert np.all(np.asarray(tg.d) == 0)
    resid = np.asarray(tg.v_target - ORACLE(tg.x_t, tg.t, tg.d, None))
    features = np.concatenate([np.ones((len(resid), 1)), np.asarray(tg.x_t)], axis=1)
    coef = np.linalg.lstsq(features, resid, rcond=None)[0]
    assert np.abs(coef).max() < 0.02


def test_logit_normal_times():
    """sigmoid(mean + std N(0, 1)) has median sigmoid(mean), scaled into [0, t_max); a grid is exclusive."""
    t = np.asarray(common.sample_t(jax.random.PRNGKey(6), 100_000, logit_normal_params=(0.4, 1.0)))
    assert 0.0 < t.min() and t.max() < 1.0
    assert abs(np.median(t) - 1 / (1 + np.exp(-0.4))) < 0.01
    assert abs(np.mean(np.log(t / (1 - t))) - 0.4) < 0.02 and abs(np.std(np.log(t / (1 - t))) - 1.0) < 0.02
    t_max = jnp.linspace(0.1, 1.0, 1000)
    assert np.all(np.asarray(common.sample_t(jax.random.PRNGKey(7), 1000, t_max=t_max, logit_normal_params=(0.0, 1.0))) < t_max)
    with pytest.raises(ValueError, match="grid or logit-normal"):
        common.sample_t(jax.random.PRNGKey(8), 4, grid=8, logit_normal_params=(0.0, 1.0))


def test_sampler_with_oracle_reproduces_exact_flow_map():
    x0 = jax.random.normal(jax.random.PRNGKey(5), (256, 3))
    exact = gaussian.flow_map(x0, jnp.zeros(256), jnp.ones(256), MU, SIGMA)
    for n in (1, 2, 4, 128):
        x1 = euler_sample(ORACLE, x0, Shortcut(shortcut.Config(flow_budget=None)).sample_plan(n))
        np.testing.assert_allclose(x1, exact, rtol=1e-4, atol=1e-4)
    # Plain Euler on the instantaneous velocity (d = 0) is not exact in one step: the d input matters.
    euler1 = euler_sample(ORACLE, x0, FlowMatching().sample_plan(1))
    assert float(jnp.abs(euler1 - exact).max()) > 0.1


def test_every_level_is_trained_at_batch_32():
    """Reference: batch // 8 // 7 = 0 examples per level at batch 32, so only d = 1 is trained."""
    cfg = shortcut.Config(bootstrap_fraction=0.25, M=128, level_decay=1.0)  # 8 bootstrap examples, 8 equal shares
    tg = shortcut.Shortcut(cfg).targets(jax.random.PRNGKey(0), gaussian_batch(jax.random.PRNGKey(1), 32), ORACLE, ORACLE)
    boot_d = np.asarray(tg.d)[:8]
    np.testing.assert_allclose(np.sort(boot_d), np.sort(2.0 ** -np.arange(8)))


def test_small_batches_cover_all_levels_over_steps():
    cfg = shortcut.Config(bootstrap_fraction=0.25, M=128, level_decay=1.0)
    seen = set()
    for i in range(40):
        tg = shortcut.Shortcut(cfg).targets(jax.random.PRNGKey(i), gaussian_batch(jax.random.PRNGKey(1), 8), ORACLE, ORACLE)
        seen.update(np.asarray(tg.d)[:2].tolist())
    assert seen == set((2.0 ** -np.arange(8)).tolist())


def test_default_shares_favour_coarse_sizes_and_reach_the_finest():
    """Default level_decay 0.5 at batch 256: at least half of the 32 bootstrap examples on d = 1
    (share 128/255), and the finest size (share 1/255) still gets examples over a few dozen steps."""
    cfg = shortcut.Config()
    n, levels = shortcut.bootstrap_size(256, cfg.bootstrap_fraction), shortcut.num_levels(cfg.M)
    assert n == 32
    counts = sum(np.bincount(np.asarray(shortcut.assign_levels(jax.random.PRNGKey(i), n, levels, cfg.level_decay)), minlength=levels)
                 for i in range(80))
    assert counts[0] >= 80 * 16 and np.all(np.diff(counts) <= 0) and counts[-1] > 0, counts


@pytest.mark.parametrize("decay", [1.0, 0.7, 0.5])
@pytest.mark.parametrize("n", [8, 32, 45])
def test_level_allocation_is_stratified(decay, n):
    """Every batch gives level j floor or ceil of n * share_j examples."""
    levels = 8
    expected = n * shortcut.level_shares(levels, decay)
    np.testing.assert_allclose(expected.sum(), n)
    assert expected[0] >= expected[-1]
    for i in range(20):
        key = jax.random.PRNGKey(i)
        counts = np.bincount(np.asarray(shortcut.assign_levels(key, n, levels, decay)), minlength=levels)
        assert counts.sum() == n and len(counts) == levels
        assert np.all(counts >= np.floor(expected - 1e-6)) and np.all(counts <= np.ceil(expected + 1e-6)), (counts, expected)


def test_level_shares_follow_the_formula():
    np.testing.assert_allclose(shortcut.level_shares(8, 0.5), 0.5 ** np.arange(8) / (2 - 0.5**7))
    np.testing.assert_allclose(shortcut.level_shares(8, 1.0), np.full(8, 1 / 8))
    with pytest.raises(ValueError, match="level_decay"):
        shortcut.level_shares(8, 0.0)


def test_parts_use_disjoint_examples_and_cover_the_batch():
    """Reference: first eighth used by both parts, last eighth by neither."""
    b = 32
    x1 = jnp.arange(b, dtype=jnp.float32)[:, None] * jnp.ones((1, 3)) * 1000.0
    zero_model = lambda x, t, d, c: jnp.zeros_like(x)  # noqa: E731
    cfg = shortcut.Config(flow_rows="rest", bootstrap_fraction=0.25, M=4)
    tg = shortcut.Shortcut(cfg).targets(jax.random.PRNGKey(0), {"x": x1, "cond": None}, zero_model, zero_model)
    # x_t = (1-t) x0 + t x1 with |x0| ~ 1 identifies the source example (t > 0 except at t = 0).
    # Use the FM target v = x1 - x0 instead: it names the example for FM rows.
    fm_examples = np.round(np.asarray(tg.v_target)[8:, 0] / 1000.0).astype(int)
    assert sorted(fm_examples.tolist()) == list(range(8, 32))
    assert tg.x_t.shape[0] == b
    np.testing.assert_array_equal(np.asarray(tg.d)[8:], 0.0)
    assert np.all(np.asarray(tg.d)[:8] > 0)


def test_flow_rows_all_keeps_the_whole_batch_at_d0():
    """flow_rows="all": every example gets a flow-matching row, the bootstrap rows come on top."""
    b = 32
    x1 = jnp.arange(b, dtype=jnp.float32)[:, None] * jnp.ones((1, 3)) * 1000.0
    zero_model = lambda x, t, d, c: jnp.zeros_like(x)  # noqa: E731
    cfg = shortcut.Config(bootstrap_fraction=0.25, M=4, flow_rows="all")
    tg = shortcut.Shortcut(cfg).targets(jax.random.PRNGKey(0), {"x": x1, "cond": None}, zero_model, zero_model)
    assert tg.x_t.shape[0] == b + 8 and tg.weight.shape == (b + 8,)
    assert np.all(np.asarray(tg.d)[:8] > 0)
    np.testing.assert_array_equal(np.asarray(tg.d)[8:], 0.0)
    fm_examples = np.round(np.asarray(tg.v_target)[8:, 0] / 1000.0).astype(int)
    assert fm_examples.tolist() == list(range(b))
    # The bootstrap rows draw their own noise: x_t / t - x1 is the scaled noise, never the flow rows'.
    flow_noise = np.asarray(x1 - tg.v_target[8:])[:8]
    boot_x_t, boot_t = np.asarray(tg.x_t)[:8], np.asarray(tg.t)[:8]
    keep = boot_t < 1
    boot_noise = (boot_x_t - boot_t[:, None] * np.asarray(x1)[:8]) / (1 - boot_t)[:, None]
    assert np.abs(flow_noise[keep] - boot_noise[keep]).min() > 1e-3


def test_bootstrap_weight_scales_the_self_consistency_rows_only():
    """Rows of weight w count w times in the weighted mean: the loss equals that of the batch with each
    bootstrap row repeated w times."""
    x1 = jax.random.normal(jax.random.PRNGKey(3), (32, 3))
    half = lambda x, t, d, c: 0.5 * jnp.ones_like(x)  # noqa: E731
    cfg = shortcut.Config(bootstrap_fraction=0.25, M=4, bootstrap_weight=3.0)
    objective = shortcut.Shortcut(cfg)
    tg = objective.targets(jax.random.PRNGKey(0), {"x": x1, "cond": None}, half, half)
    boot = np.asarray(tg.d) > 0
    np.testing.assert_array_equal(np.asarray(tg.weight), np.where(boot, 3.0, 1.0))
    repeat = np.concatenate([np.repeat(np.flatnonzero(boot), 3), np.flatnonzero(~boot)])
    repeated = Targets(*(None if f is None else f[repeat] for f in tg))._replace(weight=jnp.ones(len(repeat)))
    np.testing.assert_allclose(float(weighted_mse(jnp.zeros_like(tg.x_t), tg)),
                               float(weighted_mse(jnp.zeros_like(repeated.x_t), repeated)), rtol=1e-6)
    with pytest.raises(ValueError, match="bootstrap_weight=0"):
        shortcut.Config(bootstrap_weight=0)


def test_bootstrap_weight_sizes_weighs_only_the_coarsest_sizes():
    x1 = jax.random.normal(jax.random.PRNGKey(3), (64, 3))
    half = lambda x, t, d, c: 0.5 * jnp.ones_like(x)  # noqa: E731
    for sizes, coarsest_d in ((1, 1.0), (2, 0.5)):
        cfg = shortcut.Config(bootstrap_fraction=0.5, M=8, bootstrap_weight=4.0, bootstrap_weight_sizes=sizes)
        tg = shortcut.Shortcut(cfg).targets(jax.random.PRNGKey(0), {"x": x1, "cond": None}, half, half)
        d, weight = np.asarray(tg.d), np.asarray(tg.weight)
        assert (d >= coarsest_d).any() and ((d > 0) & (d < coarsest_d)).any()  # both kinds of rows are present
        np.testing.assert_array_equal(weight, np.where(d >= coarsest_d, 4.0, 1.0))
    with pytest.raises(ValueError, match="bootstrap_weight_sizes=0"):
        shortcut.Config(bootstrap_weight_sizes=0)


def test_parts_use_independent_noise():
    """Reference: the same noise key for both parts. Equal data rows must not get equal noise."""
    x1 = jnp.zeros((16, 3))
    cfg = shortcut.Config(flow_rows="rest", bootstrap_fraction=0.5, M=2, t_sampling="uniform")
    zero_model = lambda x, t, d, c: jnp.zeros_like(x)  # noqa: E731
    tg = shortcut.Shortcut(cfg).targets(jax.random.PRNGKey(0), {"x": x1, "cond": None}, zero_model, zero_model)
    noise_fm = -np.asarray(tg.v_target)[8:]  # v = x1 - x0 = -x0
    x_boot, t_boot = np.asarray(tg.x_t)[:8], np.asarray(tg.t)[:8]
    noise_boot = x_boot / (1 - t_boot)[:, None]
    assert np.abs(noise_fm - noise_boot).min() > 1e-3


def test_bootstrap_uses_ema_or_live_weights():
    live = lambda x, t, d, c: jnp.ones_like(x)  # noqa: E731
    ema = lambda x, t, d, c: 2 * jnp.ones_like(x)  # noqa: E731
    batch = gaussian_batch(jax.random.PRNGKey(0), 16)
    for use_ema, expected in ((True, 2.0), (False, 1.0)):
        cfg = shortcut.Config(bootstrap_fraction=0.5, bootstrap_ema=use_ema)
        tg = shortcut.Shortcut(cfg).targets(jax.random.PRNGKey(0), batch, live, ema)
        np.testing.assert_allclose(np.asarray(tg.v_target)[:8], expected)


def test_clipping_of_intermediate_and_target():
    big = lambda x, t, d, c: 100 * jnp.ones_like(x)  # noqa: E731
    batch = gaussian_batch(jax.random.PRNGKey(0), 16)
    cfg = shortcut.Config(bootstrap_fraction=0.5, clip_target=4.0, clip_intermediate=4.0)
    tg = shortcut.Shortcut(cfg).targets(jax.random.PRNGKey(0), batch, big, big)
    np.testing.assert_allclose(np.asarray(tg.v_target)[:8], 4.0)
    unclipped = shortcut.Shortcut(dataclasses.replace(cfg, clip_target=None)).targets(jax.random.PRNGKey(0), batch, big, big)
    np.testing.assert_allclose(np.asarray(unclipped.v_target)[:8], 100.0)


def test_t_on_grid_of_target_step():
    cfg = shortcut.Config(flow_rows="rest", bootstrap_fraction=1.0, M=16, t_sampling="grid")
    tg = shortcut.Shortcut(cfg).targets(jax.random.PRNGKey(0), gaussian_batch(jax.random.PRNGKey(0), 256), ORACLE, ORACLE)
    t, d = np.asarray(tg.t), np.asarray(tg.d)
    np.testing.assert_allclose(np.round(t / d) * d, t, atol=1e-6)
    assert np.all(t + d <= 1 + 1e-6)


def test_bootstrap_cfg_baked_into_finest_level_only():
    """Guided velocity v_u + w (v_c - v_u) at the finest level; plain conditional velocity elsewhere."""

    def model(x, t, d, c):
        return jnp.where((c == 10)[:, None], 1.0, 3.0) * jnp.ones_like(x)

    x1 = jnp.zeros((32, 3))
    cond = jnp.arange(32, dtype=jnp.int32) % 10
    cfg = shortcut.Config(flow_rows="rest", bootstrap_fraction=1.0, M=4, bootstrap_cfg_scale=2.0)
    tg = shortcut.Shortcut(cfg, ObjectiveContext(num_classes=10)).targets(jax.random.PRNGKey(0), {"x": x1, "cond": cond}, model, model)
    finest = np.asarray(tg.d) == 0.25
    v = np.asarray(tg.v_target)[:, 0]
    np.testing.assert_allclose(v[finest], 1.0 + 2.0 * (3.0 - 1.0))
    np.testing.assert_allclose(v[~finest], 3.0)


def test_label_dropout_uses_null_token():
    cond = jnp.zeros((4096,), jnp.int32)
    dropped = common.drop_labels(jax.random.PRNGKey(0), cond, 0.1, 10)
    frac = float(jnp.mean(dropped == 10))
    assert 0.08 < frac < 0.12
    assert set(np.unique(np.asarray(dropped)).tolist()) == {0, 10}


def test_finest_level_queries_the_instantaneous_velocity_on_its_training_grid():
    """The d = 0 level trains t on multiples of 1/M; the finest bootstrap level must not ask it
    about other times (two Euler half steps would query t + 1/2M)."""
    M = 8
    seen = []

    def spy(x, t, d, c):
        seen.append((np.asarray(t), np.asarray(d)))
        return ORACLE(x, t, d, c)

    cfg = shortcut.Config(bootstrap_fraction=1.0, M=M, level_decay=1.0, t_sampling="grid")
    shortcut.Shortcut(cfg).targets(jax.random.PRNGKey(0), gaussian_batch(jax.random.PRNGKey(1), 256), spy, spy)
    t = np.concatenate([t[d == 0] for t, d in seen])
    assert len(t) > 0
    np.testing.assert_allclose(np.round(t * M), t * M, atol=1e-5)


def test_flow_grid_decouples_the_d0_times_from_the_finest_size():
    """With M = 8 and flow_grid = 64 the d = 0 rows train t on the 1/64 grid (not only on multiples of
    1/8), the finest trained size is 1/8, and its Heun query still lands on a time the d = 0 rows train."""
    seen = []

    def spy(x, t, d, c):
        seen.append((np.asarray(t), np.asarray(d)))
        return ORACLE(x, t, d, c)

    cfg = shortcut.Config(bootstrap_fraction=0.25, M=8, flow_grid=64, level_decay=1.0, t_sampling="grid")
    tg = shortcut.Shortcut(cfg).targets(jax.random.PRNGKey(0), gaussian_batch(jax.random.PRNGKey(1), 512), spy, spy)
    t, d = np.asarray(tg.t), np.asarray(tg.d)
    flow_t = t[d == 0]
    np.testing.assert_allclose(np.round(flow_t * 64), flow_t * 64, atol=1e-5)
    assert np.any(np.abs(np.round(flow_t * 8) - flow_t * 8) > 1e-3)
    assert np.isclose(d[d > 0].min(), 1 / 8)
    heun_t = np.concatenate([tt[dd == 0] for tt, dd in seen])
    np.testing.assert_allclose(np.round(heun_t * 64), heun_t * 64, atol=1e-5)
    with pytest.raises(ValueError, match="flow_grid=12: must be a multiple of M"):
        shortcut.Config(M=8, flow_grid=12)


def test_baked_guidance_costs_a_null_label_pass_on_the_finest_rows_only():
    """With guidance baked in, the teacher sees the bootstrap rows once per half step, plus a
    null-label pass on the (few) finest rows; not a guided pair on every row."""
    rows = []

    def spy(x, t, d, c):
        rows.append(x.shape[0])
        return jnp.ones_like(x)

    n, M = 64, 128
    for decay in (0.5, 1.0):
        rows.clear()
        cfg = shortcut.Config(bootstrap_fraction=1.0, M=M, level_decay=decay, bootstrap_cfg_scale=1.5)
        batch = {"x": jnp.zeros((n, 3)), "cond": jnp.zeros((n,), jnp.int32)}
        shortcut.Shortcut(cfg, ObjectiveContext(num_classes=10)).targets(jax.random.PRNGKey(0), batch, spy, spy)
        finest = shortcut.guided_rows(n, shortcut.num_levels(M), decay)
        assert finest == int(np.ceil(n * shortcut.level_shares(shortcut.num_levels(M), decay)[-1]))
        assert sum(rows) == 2 * (n + finest), rows


def test_guidance_is_applied_once_when_baked_into_the_targets():
    """An oracle at the objective's fixed point: conditional velocity 1 and unconditional 0 at
    d = 0, the baked guided velocity 1.5 at every d > 0 (0 without a label). Sampling with
    guidance 1.5 must move 1.5 at every budget, not 1.5 * 1.5."""

    def fixed_point(x, t, d, c):
        labelled = (c != 10)[:, None]
        return jnp.where(labelled, jnp.where((d > 0)[:, None], 1.5, 1.0), 0.0) * jnp.ones_like(x)

    objective = shortcut.Shortcut(shortcut.Config(bootstrap_cfg_scale=1.5), ObjectiveContext(num_classes=10))
    x0 = jnp.zeros((4, 2))
    labels = jnp.arange(4, dtype=jnp.int32)
    for n in (1, 4, 128):
        x1 = euler_sample(fixed_point, x0, objective.sample_plan(n, cfg_scale=1.5), labels, num_classes=10)
        np.testing.assert_allclose(x1, 1.5, rtol=1e-5)


@pytest.mark.parametrize("flow_budget", [None, shortcut.Config().flow_budget, 128])
def test_every_budget_on_the_gaussian_oracle(flow_budget):
    """Budgets below flow_budget query d = 1/n and reproduce the exact flow map (3 is no trained
    size: d is continuous); from flow_budget on, the instantaneous velocity is integrated with plain Euler,
    whose error shrinks with the step (and vanishes with it)."""
    objective = shortcut.Shortcut(shortcut.Config(flow_budget=flow_budget))
    x0 = jax.random.normal(jax.random.PRNGKey(5), (256, 3))
    exact = gaussian.flow_map(x0, jnp.zeros(256), jnp.ones(256), MU, SIGMA)
    errors = {}
    for n in (1, 3, 64, 128, 200):
        plan = objective.sample_plan(n)
        served_by_flow = flow_budget is not None and n >= flow_budget
        assert plan.d == ((0.0,) * n if served_by_flow else (1.0 / n,) * n)
        errors[n] = float(jnp.abs(euler_sample(ORACLE, x0, plan) - exact).max())
        if not served_by_flow:
            assert errors[n] < 1e-4, (n, errors[n])
    if flow_budget is not None:
        assert 1e-4 < errors[200] < errors[128] < 0.05
        euler = FlowMatching().sample_plan(128)
        np.testing.assert_allclose(euler_sample(ORACLE, x0, objective.sample_plan(128)), euler_sample(ORACLE, x0, euler))


def test_adaptive_weight_gradient_is_that_of_log_error():
    """p = 1: the gradient of e / sg(e + c) is that of log(e + c); p = 1/2: that of 2 sqrt(e + c)."""
    from shortcutlib.objectives.base import adaptive_loss

    pred, target = jax.random.normal(jax.random.PRNGKey(0), (6, 3)), jax.random.normal(jax.random.PRNGKey(1), (6, 3))
    weight = jnp.array([1.0, 0.0, 2.0, 1.0, 0.5, 1.0])

    def err(p):
        return jnp.sum((p - target) ** 2, axis=1)

    for power, potential in ((1.0, lambda e: jnp.log(e + 0.01)), (0.5, lambda e: 2 * jnp.sqrt(e + 0.01))):
        ours = jax.grad(lambda p: adaptive_loss(p, target, power, 0.01, weight))(pred)
        expected = jax.grad(lambda p: jnp.sum(weight * potential(err(p))) / jnp.sum(weight))(pred)
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(jax.grad(lambda p: adaptive_loss(p, target, 1.0, 0.01, weight))(pred))[1] == 0)  # weight 0: no gradient


def test_adaptive_weight_option_of_flow_matching_and_shortcut():
    """adaptive_p = 0 (default) is the weighted MSE as before; p > 0 is the adaptive loss on the same targets."""
    from shortcutlib.config import ConfigError
    from shortcutlib.objectives.base import adaptive_loss

    x = gaussian_batch(jax.random.PRNGKey(4), 64)
    model = lambda x_t, t, d, cond: 0.5 * x_t  # noqa: E731
    for make, module, extra in ((FlowMatching, flow_matching, {}), (Shortcut, shortcut, {"adaptive_rows": "all"})):
        plain, adaptive = make(module.Config()), make(module.Config(adaptive_p=1.0, **extra))
        tg = plain.targets(jax.random.PRNGKey(3), x, model, model)
        pred = model(tg.x_t, tg.t, tg.d, None)
        np.testing.assert_allclose(plain.loss(model, tg), weighted_mse(pred, tg), rtol=1e-6)
        np.testing.assert_allclose(adaptive.loss(model, tg), adaptive_loss(pred, tg.v_target, 1.0, 0.01, tg.weight), rtol=1e-6)
        assert 0.5 < float(adaptive.loss(model, tg)) < 1.0  # e / (e + c) < 1 per row, near 1 where e >> c
        with pytest.raises(ConfigError, match="adaptive_p=-1"):
            module.Config(adaptive_p=-1)


def test_shortcut_adaptive_weight_on_the_flow_rows_only():
    """adaptive_rows="flow": d = 0 rows get e / sg(e + c); bootstrap rows e / mean over d = 0 rows of sg(e + c)."""
    from shortcutlib.objectives.base import adaptive_loss

    v, pred = jnp.zeros((4, 2)), jnp.array([[1.0, 0.0], [2.0, 0.0], [0.1, 0.0], [3.0, 0.0]])
    tg = Targets(v, jnp.zeros(4), jnp.array([0.0, 0.0, 0.25, 0.5]), None, v, jnp.ones(4))
    e = np.array([1.0, 4.0, 0.01, 9.0])
    shared = (1.01 + 4.01) / 2
    expected = np.mean([1.0 / 1.01, 4.0 / 4.01, 0.01 / shared, 9.0 / shared])
    np.testing.assert_allclose(adaptive_loss(pred, v, 1.0, 0.01, tg.weight, shared=tg.d > 0), expected, rtol=1e-6)
    # every row its own weight (adaptive_rows="all") is base.adaptive_loss
    np.testing.assert_allclose(adaptive_loss(pred, v, 1.0, 0.01, tg.weight), np.mean(e / (e + 0.01)), rtol=1e-6)
    assert Shortcut(shortcut.Config(adaptive_p=1.0)).loss(lambda *a: pred, tg) == adaptive_loss(pred, v, 1.0, 0.01, tg.weight, shared=tg.d > 0)


@pytest.mark.parametrize(
    "make",
    [
        lambda fraction: Shortcut(shortcut.Config(bootstrap_fraction=0.0, t_sampling="uniform", plug_in_fraction=fraction)),
        lambda fraction: FlowMatching(flow_matching.Config(plug_in_fraction=fraction)),
    ],
    ids=["shortcut", "flow-matching"],
)
def test_plug_in_velocity_on_the_d0_rows(make):
    """plug_in_fraction=1: every d = 0 row regresses the batch's marginal velocity, per class when labelled,
    closer to the exact velocity than x1 - x0; 0 keeps the conditional velocity and every other draw."""
    data = gaussian_batch(jax.random.PRNGKey(4), 512)
    key = jax.random.PRNGKey(3)
    plugged = make(1.0).targets(key, data, ORACLE, ORACLE)
    conditional = make(0.0).targets(key, data, ORACLE, ORACLE)
    for field in ("x_t", "t", "d", "weight"):
        np.testing.assert_array_equal(np.asarray(getattr(plugged, field)), np.asarray(getattr(conditional, field)))
    x0 = (conditional.x_t - conditional.t[:, None] * data["x"]) / (1 - conditional.t[:, None])
    np.testing.assert_allclose(np.asarray(conditional.v_target), np.asarray(data["x"] - x0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(plugged.v_target), np.asarray(common.plug_in_velocity(plugged.x_t, plugged.t, data["x"])),
                               rtol=1e-5, atol=1e-5)
    exact = ORACLE(plugged.x_t, plugged.t, plugged.d, None)
    assert float(jnp.mean((plugged.v_target - exact) ** 2)) < 0.5 * float(jnp.mean((conditional.v_target - exact) ** 2))

    labels = jnp.arange(512) % 4
    labelled = make(1.0).with_context(num_classes=4).targets(key, {**data, "cond": labels}, ORACLE, ORACLE)
    same = labels[:, None] == labels[None, :]
    np.testing.assert_allclose(np.asarray(labelled.v_target),
                               np.asarray(common.plug_in_velocity(labelled.x_t, labelled.t, data["x"], same)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="plug_in_fraction=1.5"):
        make(1.5)


def test_flow_warmup_stages():
    """flow_warmup: the first share of the phase's steps trains the d = 0 rows alone, with the very draws of the
    later steps' d = 0 rows; the stage switch is where the share ends, and without it there is one stage."""
    objective = Shortcut(shortcut.Config(flow_warmup=0.5)).with_context(total_steps=10)
    stages = objective.stages()
    assert [start for start, _ in stages] == [0, 5] and stages[1][1] is objective
    assert [stage_index(stages, step) for step in (0, 4, 5, 9)] == [0, 0, 1, 1]
    warmup = stages[0][1]
    data = gaussian_batch(jax.random.PRNGKey(4), 64)
    key = jax.random.PRNGKey(3)
    alone, full = warmup.targets(key, data, ORACLE, ORACLE), objective.targets(key, data, ORACLE, ORACLE)
    assert alone.x_t.shape[0] == 64 and not np.any(np.asarray(alone.d))
    d0_rows = np.asarray(full.d) == 0
    assert d0_rows.sum() == 64 and (~d0_rows).sum() == 8
    for a, b in zip(alone[:3] + alone[4:6], full[:3] + full[4:6]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[d0_rows])

    assert Shortcut(shortcut.Config()).with_context(total_steps=10).stages()[0][0] == 0
    assert len(Shortcut(shortcut.Config()).with_context(total_steps=10).stages()) == 1
    with pytest.raises(ValueError, match="flow_warmup=1"):
        shortcut.Config(flow_warmup=1.0)
