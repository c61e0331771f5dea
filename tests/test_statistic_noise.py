"""The noise of a batch statistic per layer (`mean_noise`, `var_noise`, `positions` of diagnostics.csv): the
variance over groups of g examples of the group's mean and variance against a NumPy float64 computation, a
traced g against a static one, the Gaussian references it is read against (1/(g x positions) for independent
values, 1/g for images whose positions move as one), the real models' pre-norm values, old tables without the
columns, and the statistic_noise figure."""

import dataclasses
import functools
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import study_text, tiny_config

from normbench.cli import main
from normbench.config import ModelConfig
from normbench.core.diagnostics import LATER_COLUMNS, layer_diagnostics, statistic_noise
from normbench.errors import UserError
from normbench.models import build_model
from normbench.models.probes import record
from normbench.norms import NORMS, BatchStats
from normbench.reports.layer_figures import statistic_noise_figure
from normbench.results.diagnostics import read_diagnostics
from normbench.results.stats import mean_ci

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "transformer_norms"


class Reveal(nn.Module):
    """Shows its input (batch, height, width, channels) to the diagnostics as layer 1's pre-norm values, and each
    example's mean over its positions as layer 2's (one position)."""

    @nn.compact
    def __call__(self, x, train: bool):
        record(self, 0, x, x)
        record(self, 1, x.mean((1, 2)), x)
        return x


@functools.partial(jax.jit, static_argnums=1)
def noise(batches, group_size):
    return statistic_noise(Reveal(), {}, batches, group_size)


def numpy_noise(values: np.ndarray, g: int) -> tuple[float, float]:
    """The definition, in float64: `values` (batches, examples, positions, channels) cut into groups of g
    consecutive examples of a batch; over the groups, the unbiased variance of their means and of their biased
    variances, per channel over the population's variance (squared), mean over channels."""
    batches, examples, positions, channels = values.shape
    groups = values.astype(np.float64).reshape(batches * examples // g, g * positions, channels)
    population = values.astype(np.float64).reshape(-1, channels)
    var = population.var(0)
    return (groups.mean(1).var(0, ddof=1) / var).mean(), (groups.var(1).var(0, ddof=1) / var**2).mean()


def hand_built(rng, batches=3, examples=8, positions=(2, 3), channels=4) -> np.ndarray:
    """Values with structure at every level a statistic can see: per channel a scale and offset, per image a
    shift shared by its positions, per position its own part."""
    shape = (batches, examples, *positions, channels)
    image = rng.normal(size=(batches, examples, 1, 1, channels))
    own = rng.standard_t(5, size=shape)
    return ((image + 0.7 * own) * np.float32([1, 3, 0.5, 2]) + np.float32([1, -2, 0, 5])).astype(np.float32)


SIZES = (1, 2, 4, 8)


@pytest.fixture(scope="module")
def hand_built_noise():
    """The hand-built values and their noise at each of `SIZES`, a static group size each."""
    values = hand_built(np.random.default_rng(0))
    return values, {g: noise(values, g) for g in SIZES}


def test_noise_is_the_variance_over_groups_of_their_statistics_against_numpy(hand_built_noise):
    values, static = hand_built_noise
    per_example = values.mean((2, 3))[:, :, None, :]
    for g in SIZES:
        mean_noise, var_noise = static[g]
        conv = numpy_noise(values.reshape(3, 8, 6, 4), g)
        dense = numpy_noise(per_example, g)
        np.testing.assert_allclose(mean_noise, [conv[0], dense[0]], rtol=2e-5)
        # one value per statistic (the second layer at g = 1) has no variance: its noise is exactly 0
        np.testing.assert_allclose(var_noise, [conv[1], dense[1]], rtol=2e-4, atol=1e-9)


def test_a_traced_group_size_gives_what_a_static_one_does(hand_built_noise):
    values, static = hand_built_noise
    traced = jax.jit(jax.vmap(lambda g: statistic_noise(Reveal(), {}, values, g)))(jnp.asarray(SIZES, jnp.int32))
    for i, g in enumerate(SIZES):
        np.testing.assert_allclose(traced[0][i], static[g][0], rtol=1e-6)
        np.testing.assert_allclose(traced[1][i], static[g][1], rtol=1e-6, atol=1e-12)


def gaussian_noise(values, sizes):
    return jax.jit(jax.vmap(lambda g: statistic_noise(Reveal(), {}, values, g)))(jnp.asarray(sizes, jnp.int32))


def test_independent_positions_give_the_noise_of_g_x_positions_values():
    """iid Gaussian values: Var(mu_B)/sigma^2 = 1/n and Var(sigma^2_B)/sigma^4 = 2(n - 1)/n^2 for n = g x 16.
    With 1024 examples the fewest groups (g = 16) are 64 per channel, the 16 channels independent: the relative
    standard error of the first is sqrt(2/63/16) = 4.5% there, of the second below 6% (chi-square's kurtosis)."""
    rng = np.random.default_rng(2)
    values = rng.normal(size=(8, 128, 4, 4, 16)).astype(np.float32) * 3 + 1
    sizes = np.array([1, 4, 16])
    mean_noise, var_noise = gaussian_noise(jnp.asarray(values), sizes)
    n = sizes * 16
    np.testing.assert_allclose(mean_noise[:, 0], 1 / n, rtol=0.2)
    np.testing.assert_allclose(var_noise[:, 0], 2 * (n - 1) / n**2, rtol=0.25)
    # each example's mean over its positions is one value per example: the noise of g values
    np.testing.assert_allclose(mean_noise[:, 1], 1 / sizes, rtol=0.2)


def test_positions_that_share_one_value_give_the_noise_of_g_values():
    """Every position of an image holds the image's value: a statistic of g x 16 values holds g independent ones,
    so the noise is 1/g (and 2(g - 1)/g^2), 16 times the independent-values reference."""
    rng = np.random.default_rng(3)
    image = rng.normal(size=(8, 128, 1, 1, 16)).astype(np.float32) - 4
    values = np.broadcast_to(image, (8, 128, 4, 4, 16))
    sizes = np.array([1, 4, 16])
    mean_noise, var_noise = gaussian_noise(jnp.asarray(values), sizes)
    np.testing.assert_allclose(mean_noise[:, 0], 1 / sizes, rtol=0.2)
    np.testing.assert_allclose(var_noise[1:, 0], 2 * (sizes[1:] - 1) / sizes[1:] ** 2, rtol=0.25)
    assert var_noise[0, 0] < 1e-10  # one image's positions alone do not vary


def test_one_group_has_no_variance_over_groups_and_a_constant_channel_is_left_out():
    values = hand_built(np.random.default_rng(4), batches=1)
    assert np.isnan(np.asarray(noise(values, 8))).all()
    constant = values.copy()
    constant[..., 2] = 7.0
    mean_noise, _ = noise(constant, 2)
    kept = numpy_noise(np.delete(values, 2, -1).reshape(1, 8, 6, 3), 2)[0]
    np.testing.assert_allclose(mean_noise[0], kept, rtol=2e-5)


@pytest.mark.slow
def test_layer_diagnostics_measure_the_noise_of_each_layers_pre_norm_values_under_ghost_groups():
    """The CNN's layers on 8x8 images (16, 4 and 1 positions), BatchNorm over ghost groups of 2, the noise for
    groups of 2: against NumPy on the pre-norm values each batch's forward pass sows, which later layers compute
    from the earlier ones normalized over those groups."""
    norm = NORMS["batch"].make(tiny_config().norm, BatchStats(group_size=2))
    model = build_model("cnn", ModelConfig(channels=(3, 4, 5)), norm, 3)
    rng = np.random.default_rng(5)
    batches = jnp.asarray(rng.random((3, 8, 8, 8, 1), np.float32))
    variables = model.init(jax.random.PRNGKey(0), batches[0], train=False)
    diagnose = jax.jit(lambda v, xs: layer_diagnostics(model, v["params"], v["batch_stats"], xs[0],
                                                       jnp.zeros(8, jnp.int32), model, xs, 2))  # fmt: skip
    d = diagnose(variables, batches)
    np.testing.assert_array_equal(d.positions, [16, 4, 1])
    sown = [model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])[1] for x in batches]
    for layer in range(3):
        pre = np.stack([np.asarray(s["intermediates"]["pre_norm"][layer]) for s in sown])
        expected = numpy_noise(pre.reshape(3, 8, -1, pre.shape[-1]), 2)
        np.testing.assert_allclose([d.mean_noise[layer], d.var_noise[layer]], expected, rtol=1e-4)


def written_before_the_noise(out: Path) -> Path:
    """A copy of the committed study as normbench wrote it before it measured the noise: diagnostics.csv without
    those columns, and no manifest (such a run wrote none)."""
    shutil.copytree(COMMITTED, out)
    rows = [line.split(",") for line in (out / "diagnostics.csv").read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name not in LATER_COLUMNS]
    assert len(keep) == len(rows[0]) - len(LATER_COLUMNS)
    (out / "diagnostics.csv").write_text("".join(",".join(row[i] for i in keep) + "\n" for row in rows))
    (out / "manifest.json").unlink()
    return out


def test_a_table_written_before_the_noise_reads_back_with_nan(tmp_path):
    columns = read_diagnostics(written_before_the_noise(tmp_path / "study") / "diagnostics.csv")
    assert all(np.isnan(columns[c]).all() for c in LATER_COLUMNS)
    assert np.isfinite(columns["var_fluctuation"]).any()
    with pytest.raises(UserError, match="written before normbench measured it"):
        statistic_noise_figure(columns, tiny_config())


@pytest.mark.slow
def test_normbench_plot_still_draws_a_study_written_before_the_noise(tmp_path):
    out = written_before_the_noise(tmp_path / "transformer_norms")
    assert main(["plot", str(out)]) == 0
    assert (out / "batch_fluctuation.png").stat().st_size > 20_000


def noise_table(tuned: bool):
    """Two models, two layers, three sizes, three seeds at the last of two epochs (and a stray earlier epoch),
    as diagnostics.csv orders its columns; with `tuned`, each size at the learning rate tuned for it."""
    rows = [
        (model, g, seed, epoch, layer)
        for model in ("mlp", "cnn")
        for g in (2, 4, 8)
        for seed in (0, 1, 2)
        for epoch in (0, 3)
        for layer in (1, 2)
    ]
    model, g, seed, epoch, layer = (np.array(column) for column in zip(*rows))
    positions = np.where(model == "cnn", 16.0 / layer, 1.0)
    mean_noise = (1 + 0.1 * seed) / (g * positions) + epoch
    return {
        "model": model,
        "norm": np.full(len(rows), "batch"),
        "protocol": np.full(len(rows), "ghost"),
        "batch_size": np.full(len(rows), 8),
        "ghost_size": g,
        "seed": seed,
        "learning_rate": 0.1 + (0.1 if tuned else 0.0) * g,
        "epoch": epoch,
        "layer": layer,
        "mean_noise": mean_noise,
        "var_noise": 2 * mean_noise,
        "positions": positions,
    }


@pytest.mark.parametrize("tuned", [False, True])
def test_the_figure_draws_each_layers_mean_over_seeds_with_its_interval_at_the_last_epoch(tuned):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = tiny_config()
    config = dataclasses.replace(config, report=dataclasses.replace(config.report, tune=("learning_rate",)))
    table = noise_table(tuned)
    fig = statistic_noise_figure(table, config)
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_title() for ax in axes[0]] == ["model mlp", "model cnn"]
    (measured,) = [line for line in axes[0, 1].lines if line.get_label() == "layer 2: 8 positions"]
    seeds = np.array([1.0, 1.1, 1.2]) / 8
    np.testing.assert_allclose(measured.get_xdata(), [2, 4, 8])
    np.testing.assert_allclose(measured.get_ydata(), [3 + seeds.mean() / g for g in (2, 4, 8)])
    band = axes[0, 1].collections[1].get_paths()[0].vertices  # layer 2's: mean ± half-width at each g
    mean, half = mean_ci(3 + seeds / 2)
    assert np.isclose(band[:, 1], mean + half).any() and np.isclose(band[:, 1], mean - half).any()
    references = [line for line in axes[1, 1].lines if line.get_linestyle() == ":"]
    np.testing.assert_allclose(references[1].get_ydata(), [2 * (n - 1) / n**2 for n in (16, 32, 64)])
    assert not [line for line in axes[0, 0].lines if line.get_linestyle() == ":"]  # the MLP's have one position
    plt.close(fig)


@pytest.mark.slow
def test_a_ghost_study_records_the_noise_of_each_group_size_and_draws_it(tmp_path):
    config = tmp_path / "ghost.py"
    config.write_text(
        study_text(
            train="TrainConfig(epochs=1, eval_batch_size=16, precise_bn_examples=64, diagnostics_at=(1,))",
            sweep='SweepConfig(models=("mlp", "cnn"), norms=("batch",), protocols=("ghost",), '
            "batch_sizes=(1, 4, 16), seeds=(0, 1))",
            figures='("statistic_noise",)',
        )
    )
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 0
    columns = read_diagnostics(out / "diagnostics.csv")
    cnn, mlp = columns["model"] == "cnn", columns["model"] == "mlp"
    for layer, positions in zip((1, 2, 3), (196, 49, 16)):
        assert set(columns["positions"][cnn & (columns["layer"] == layer)]) == {positions}
    assert set(columns["positions"][mlp]) == {1}
    # BatchNorm over one example outputs its bias: after the MLP's first layer no value varies, and no noise is
    # measured there
    erased = mlp & (columns["ghost_size"] == 1) & (columns["layer"] > 1)
    assert np.isnan(columns["mean_noise"][erased]).all() and np.isfinite(columns["mean_noise"][~erased]).all()
    # 64 examples in groups of 1 and of 16: 16 times the noise, give or take the sampling of 4 groups
    for model, layer in {(m, n) for m, n in zip(columns["model"], columns["layer"]) if (m, n) != ("mlp", 2)}:
        at = (columns["model"] == model) & (columns["layer"] == layer)
        ones, sixteens = (columns["mean_noise"][at & (columns["ghost_size"] == g)] for g in (1, 16))
        assert (ones > 3 * sixteens).all()
    assert (out / "statistic_noise.png").stat().st_size > 20_000
