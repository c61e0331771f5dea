"""`summary.md`: the final-epoch numbers of a results directory as Markdown tables, mean +- 95% CI over seeds."""

from __future__ import annotations

import functools
import typing
from pathlib import Path

import numpy as np

from normbench.config import AfterTraining, Config
from normbench.core.axes import EPOCH, swept_columns
from normbench.core.diagnostics import DIAGNOSTICS
from normbench.core.grid import unread_fields
from normbench.data import load
from normbench.errors import UserError
from normbench.models import norm_positions
from normbench.reports.labels import norm_label
from normbench.reports.layer_figures import RELATIVE, fluctuation_settings, relative_fluctuation, setting_label
from normbench.results.claims import (
    EXPECTED_SIGN,
    FAMILY_ERROR,
    Finding,
    evaluate_all,
    holm,
    p_text,
    paper_note,
    reported,
    tune,
)
from normbench.results.diagnostics import read_diagnostics
from normbench.results.matched_loss import LOSS_MATCH, REFERENCE, matched_contrasts
from normbench.results.stats import final_epoch, mean_ci, norm_batch
from normbench.results.store import atomic_write, read_meta
from normbench.results.tuning import beyond, edge_steps, own_grids, step_rule

ACCURACIES = {
    "train_acc": "train acc",
    "train_acc_batch_stats": "train acc, batch stats",
    "test_acc": "test acc",
    "test_acc_batch_stats": "test acc, batch stats",
    "test_acc_precise": "test acc, PreciseBN",
    "test_acc_example_weighted": "test acc, example-weighted",
}


def _pm(values, scale=100.0) -> str:
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).all():
        return "-"
    mean, ci = mean_ci(values * scale)
    return f"{mean:.1f}" if np.isnan(ci) else f"{mean:.1f} ± {ci:.1f}"


def _text(value) -> str:
    return str(value) if isinstance(value, str) else f"{value:g}"


def _groups(final, keys):
    rows = list(zip(*(final[k] for k in keys)))
    return sorted(set(rows), key=lambda r: tuple((str(v) if isinstance(v, str) else -float(v)) for v in r))


def final_table(final) -> list[str]:
    keys = ["model", "norm", "protocol", "norm_batch", "init_scale", "learning_rate", *swept_columns(final)]
    lines = [
        "| " + " | ".join(keys + list(ACCURACIES.values()) + ["diverged"]) + " |",
        "|" + "---|" * (len(keys) + len(ACCURACIES) + 1),
    ]
    for group in _groups(final, keys):
        rows = np.all([final[k] == v for k, v in zip(keys, group)], axis=0)
        cells = [_text(v) for v in group]
        cells += [_pm(final[m][rows & (final["diverged"] == 0)]) for m in ACCURACIES]
        cells.append(f"{int(final['diverged'][rows].sum())}/{int(rows.sum())}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def statistic_values(positions: tuple[int, ...] | None, batch: int) -> str:
    """The values one batch statistic holds at each normalized layer: the batch times the positions per example
    (`normbench.models.norm_positions`; None where the input shape is not known)."""
    if positions is None:
        return "-"
    return " / ".join(str(batch * p) for p in positions)


def batch_drop_table(final, config: Config, input_shape=None) -> list[str]:
    """Per model, protocol and norm: test accuracy at the largest and smallest norm batch, the drop between
    them, its CI taken over the per-seed differences (a seed's runs share init and data order), and how many
    values a batch statistic then holds."""
    keys = ["model", "protocol", "norm", "init_scale", *swept_columns(final)]
    header = [*keys, "test acc, largest batch", "test acc, smallest batch", "drop (points)",
              "values per statistic by layer (images x positions, not independent), largest -> smallest batch",
              "seeds (left out: diverged)"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]

    @functools.cache  # one trace of a model's shapes, and none for a study with one batch size
    def positions(model):
        return None if input_shape is None else norm_positions(model, config.model, tuple(input_shape))

    for group in _groups(final, keys):
        rows = np.all([final[k] == v for k, v in zip(keys, group)], axis=0)
        sizes = np.unique(final["norm_batch"][rows])
        if len(sizes) < 2:
            continue
        large, small = (rows & (final["norm_batch"] == b) for b in (sizes.max(), sizes.min()))
        # Pairs of runs by seed, among the seeds whose runs at both sizes did not diverge.
        alive = final["diverged"] == 0
        seeds = np.intersect1d(final["seed"][large & alive], final["seed"][small & alive])
        large, small = (rows & np.isin(final["seed"], seeds) for rows in (large, small))
        order_large, order_small = np.argsort(final["seed"][large]), np.argsort(final["seed"][small])
        acc_large, acc_small = final["test_acc"][large][order_large], final["test_acc"][small][order_small]
        named = " | ".join(_text(v) for v in group)
        model = group[keys.index("model")]
        values = [statistic_values(positions(model), int(b)) for b in (sizes.max(), sizes.min())]
        dropped = len(np.unique(final["seed"][rows])) - len(seeds)
        lines.append(
            f"| {named} | {_pm(acc_large)} ({sizes.max()}) | {_pm(acc_small)} ({sizes.min()}) | "
            f"{_pm(acc_large - acc_small)} | {' -> '.join(values)} | {len(seeds)} ({dropped}) |"
        )
    return lines if len(lines) > 2 else []


def claims_section(columns, config: Config) -> list[str]:
    if not config.report.claims:
        return []
    results = evaluate_all(config.report.claims, columns)
    family = max((r.family for r in results if isinstance(r, Finding)), default=0)
    stated = len(config.report.claims)
    claims = f"{family} claim{'s' * (family != 1)} of this study"
    claims += "" if family == stated else f" that these runs decide (of {stated})"
    lines = [
        "## Headline comparisons",
        "",
        "Each contrast is computed per seed (runs that share a seed share their initial weights and minibatch "
        "order), then averaged; its 95% interval is Student t over seeds. The claims are judged as one family: "
        "each one's two-sided paired t test (the t statistic its interval inverts) gives a p-value, adjusted by "
        f"Holm-Bonferroni over the {claims}, and a claim is significant where its adjusted p is below "
        f"{FAMILY_ERROR:g} (family-wise error {FAMILY_ERROR:.0%}). The interval is not adjusted: one that excludes 0 "
        "can belong to a claim that is not significant after the correction, and its line says so.",
        "",
    ]
    if any(EXPECTED_SIGN.search(paper_note(text)[0]) for text in config.report.claims):
        lines[-2] += (" A claim ending in `< 0` or `> 0` carries the sign that its reference (the paper the study "
                      "follows) reports, and says whether these runs agree with it, do not show it, or show the "
                      "opposite.")  # fmt: skip
    return lines + [f"- {_claim_line(text, r)}" for text, r in zip(config.report.claims, results)] + [""]


def _claim_line(text: str, result) -> str:
    """A claim's finding, or why these runs cannot decide it (a sweep narrowed with --set may lack its runs):
    the summary of a finished sweep never fails on a claim. After what the paper says, when the claim gives it."""
    claim, paper = paper_note(text)
    found = result.line() if isinstance(result, Finding) else f"`{claim}`: not evaluated: {result.reason}"
    return f"The paper: {paper} Here: {found}" if paper else found


# How summary.md marks a chosen value still at an edge of its grid (`tuning_section`).
LIMIT_REACHED, NOT_EXTENDED = "(edge: extension limit reached)", "(edge: not extended)"


def tuning_section(choices, config: Config) -> list[str]:
    """Per configuration: each tuned axis's grid as searched and its chosen value, which says when it still sits at
    an edge of that grid, and whether the run extended the grid there as far as it may
    (`normbench.results.tuning`)."""
    if not choices:
        return []
    group = [k for k, _ in choices[0].group]
    tuned = [k for k, _ in choices[0].chosen]
    own, limit = own_grids(config), config.report.tune_extensions
    rows = []
    for choice in choices:
        added, steps = beyond(choice, own), edge_steps(choice, own)
        searched = [", ".join(f"_{_text(v)}_" if v in added[axis] else _text(v) for v in tried)
                    for axis, tried in choice.tried]  # fmt: skip
        chosen = [_text(v) + _edge_mark([n for (a, _), n in steps.items() if a == axis], limit)
                  for axis, v in choice.chosen]  # fmt: skip
        rows.append([_text(v) for _, v in choice.group] + searched + chosen + [f"{100 * choice.val_acc:.1f}"])
    rules = "; ".join(f"{axis} {step_rule(axis)}" for axis in tuned)
    intro = (
        f"{', '.join(tuned)} chosen per configuration by the final validation accuracy averaged over seeds (a "
        "diverged run counting as 0), never by the test set; every other table reports the runs at these values. "
        "Where a configuration chose the smallest or largest value of its grid, the run trained the next value "
        f"beyond it ({rules}) for that configuration and chose again, at most report.tune_extensions = {limit} "
        "step(s) each way; `searched` lists every value tried, those beyond the config's own grid in italics. "
        f"A value marked {LIMIT_REACHED} is still the smallest or largest tried after the last step allowed: a wider "
        "grid might choose another."
    )
    if any(NOT_EXTENDED in cell for row in rows for cell in row):
        intro += (f" {NOT_EXTENDED} marks an edge that these runs did not extend as far as report.tune_extensions "
                  "allows (results written before extensions, or a report revised without retraining): rerun the "
                  "study to extend it.")  # fmt: skip
    header = group + [f"searched {t}" for t in tuned] + [f"chosen {t}" for t in tuned] + ["val acc"]
    lines = [
        "## Chosen on the validation set",
        "",
        intro,
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def _edge_mark(steps: list[int], limit: int) -> str:
    """A chosen value's mark, from the steps taken beyond each edge of its axis's grid that it sits at."""
    if not steps:
        return ""
    return f" {LIMIT_REACHED}" if min(steps) >= limit else f" {NOT_EXTENDED}"


def fluctuation_section(layers, config: Config) -> list[str]:
    """Per configuration of a norm with batch statistics and per layer: the distance of the batch statistics
    from the running ones (`normbench.core.diagnostics.batch_fluctuation`), averaged over the recorded epochs
    after training began and at the last, mean ± 95% CI over seeds."""
    keys, settings = fluctuation_settings(layers, config.report.tune)
    if not settings or np.isnan(layers["var_fluctuation"]).all():
        return []
    trained = np.unique(layers[EPOCH][layers[EPOCH] >= 1])
    last = int(trained.max())
    # One recorded epoch after init is its own last: its columns once, not as a window and again as the last epoch.
    windows = [(layers[EPOCH] >= 1, _span(trained))] + ([(layers[EPOCH] == last, f"epoch {last}")]
                                                         if len(trained) > 1 else [])  # fmt: skip
    header = ["configuration", "layer", *(f"{stat}, {span}" for _, span in windows for stat in ("μ", "σ²"))]
    over = "over the recorded epochs after init, or at the last" if len(trained) > 1 else f"at epoch {last}"
    power = " PowerNorm's σ² is its quadratic mean ψ², and it keeps no μ (-)." if _ran_power(layers) else ""
    lines = [
        "## Batch-statistic fluctuation per layer (Shen et al., 2020, Figure 2)",
        "",
        f"(1/d) ||μ_B - μ|| and (1/d) ||σ²_B - σ²|| between a batch's statistics and the running ones over the d "
        f"channels of each layer, averaged over {config.train.precise_bn_examples} training examples' batches at "
        f"each recorded epoch, the weights frozen; then {over}; mean ± 95% CI over seeds.{power} "
        "Layers count from the input. `batch_fluctuation.png` draws them per layer at the recorded epochs after init: "
        "at init the running statistics are still their initial values (mean 0, variance 1), and the distance from "
        "those is not a fluctuation.",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    for setting in settings:
        rows = np.all([layers[k] == v for k, v in zip(keys, setting)], axis=0)
        for layer in np.unique(layers["layer"][rows]):
            at = rows & (layers["layer"] == layer)
            cells = [setting_label(keys, setting), str(layer)]
            for epochs, _ in windows:
                cells += [_distance(layers, at & epochs, field) for field in ("mean_fluctuation", "var_fluctuation")]
            lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _span(epochs: np.ndarray) -> str:
    return f"epoch {epochs.min()}" if len(epochs) == 1 else f"epochs {epochs.min()}-{epochs.max()}"


def _ran_power(layers) -> bool:
    """Whether the study ran PowerNorm, whose σ² column is its quadratic mean ψ² and which keeps no μ."""
    return "power" in set(layers["norm"])


def _distance(layers, rows, field) -> str:
    """Mean ± 95% CI over seeds of a field's per-seed mean over `rows`' epochs."""
    per_seed = [np.mean(layers[field][rows & (layers["seed"] == s)]) for s in np.unique(layers["seed"][rows])]
    if np.isnan(per_seed).all():
        return "-"
    mean, ci = mean_ci(np.asarray(per_seed))
    return f"{mean:.3g}" if np.isnan(ci) else f"{mean:.3g} ± {ci:.2g}"


def relative_fluctuation_section(layers, config: Config) -> list[str]:
    """The fluctuation table's distances over their layer's scale (`layer_figures.RELATIVE`), beside that scale,
    averaged over the recorded epochs after init: whether a deeper layer's statistics stray more than its values'
    scale grows."""
    keys, settings = fluctuation_settings(layers, config.report.tune)
    trained = layers[EPOCH] >= 1
    if not settings or not trained.any() or np.isnan(layers["var_fluctuation"]).all():
        return []
    epochs = np.unique(layers[EPOCH][trained])
    span = _span(epochs)
    over = "averaged per seed over the recorded epochs after init" if len(epochs) > 1 else f"at {span}"
    relative = {**layers, **{field: relative_fluctuation(layers, field) for field in RELATIVE}}
    header = ["configuration", "layer", f"std, {span}", f"μ / std, {span}", f"σ² / std², {span}"]
    lines = [
        "## Batch-statistic fluctuation over the layer's scale",
        "",
        "The distances above are in the units of each layer's pre-norm values, whose scale grows with depth where "
        "blocks add to a residual stream. Here each is divided by that scale at its epoch: (1/d) ||μ_B - μ|| by the "
        "standard deviation of the layer's pre-norm values over the first training batch (std, `pre_std` in "
        f"diagnostics.csv), (1/d) ||σ²_B - σ²||{' (PowerNorm: of ψ²)' if _ran_power(layers) else ''} by its "
        f"square; then {over}; mean ± 95% CI over seeds.",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    for setting in settings:
        rows = np.all([layers[k] == v for k, v in zip(keys, setting)], axis=0) & trained
        for layer in np.unique(layers["layer"][rows]):
            at = rows & (layers["layer"] == layer)
            cells = [_distance(relative, at, field) for field in ("pre_std", *RELATIVE)]
            lines.append("| " + " | ".join([setting_label(keys, setting), str(layer), *cells]) + " |")
    return lines + [""]


def matched_loss_section(columns) -> list[str]:
    """The loss-landscape probes of each norm against the plain network's at matched training loss
    (`normbench.results.matched_loss`), where the claims compare them at one epoch."""
    found = matched_contrasts(columns)
    if not found:
        return []
    plain = norm_label(REFERENCE)
    keys = [k for k, _ in found[0].setting]
    header = [*keys, "norm", "probe", f"ratio to {plain}, 95% CI", "log ratio, 95% CI", "p, Holm over the rows",
              "epochs matched per seed", f"{plain}'s epoch - the norm's (median)"]  # fmt: skip
    lines = [
        "## Landscape probes at matched training loss",
        "",
        "At one epoch the networks' training losses differ, and the probes shrink with the loss: a contrast at one "
        "epoch mixes the norm's effect with the loss level. Here each epoch of a norm's run is paired with the "
        f"epoch of the plain network's run ({plain}) of the same seed whose training loss (`train_loss`, the mean "
        "over the epoch whose first step is probed) is closest, where the two are within a factor "
        f"{LOSS_MATCH:g}; per seed, the mean over its pairs of log(probe) - log(the plain network's probe); then "
        "the mean over seeds with its Student-t 95% interval, and their exp: the ratio of the norm's probe to the "
        "plain network's at the same training loss. The intervals are not adjusted for the number of rows; each "
        "row's p-value (its two-sided paired t test of a zero log ratio) is, Holm-adjusted over the table's rows.",
        "",
        "| " + " | ".join(header) + " |",
        "|---" * len(header) + "|",
    ]
    tested = [i for i, contrast in enumerate(found) if np.isfinite(contrast.p)]
    adjusted = dict(zip(tested, holm([found[i].p for i in tested])))
    for i, contrast in enumerate(found):
        ratio, low, high = contrast.ratio()
        interval = not np.isnan(contrast.half_width)
        log_low, log_high = (contrast.log_ratio + s * contrast.half_width for s in (-1, 1))
        fewest, most = min(contrast.pairs, default=0), max(contrast.pairs, default=0)
        pairs = str(most) if fewest == most else f"{fewest}-{most}"
        pairs += f", {contrast.dropped} seed(s) left out" if contrast.dropped else ""
        cells = [_text(v) for _, v in contrast.setting] + [norm_label(contrast.norm), f"`{contrast.metric}`"]
        cells += [
            f"{ratio:.2f}" + (f" [{low:.2f}, {high:.2f}]" if interval else ""),
            f"{contrast.log_ratio:+.2f}" + (f" [{log_low:+.2f}, {log_high:+.2f}]" if interval else ""),
            p_text(adjusted[i]) if i in adjusted else "-",
            pairs,
            f"{contrast.lag:+g}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _left_out(config: Config) -> str:
    """The words for the evaluations after training that the config leaves out, if it leaves out any."""
    left_out = [name for name in typing.get_args(AfterTraining) if name not in config.train.after_training]
    return f"that train.after_training leaves out ({', '.join(left_out)}), or that " if left_out else "or that "


def summary_markdown(columns: dict[str, np.ndarray], config: Config, input_shape=None, layers=None) -> str:
    """The summary of a sweep's metrics; `layers`, its layer diagnostics when it recorded them."""
    columns, choices = tune(columns, config.report.tune)
    final = final_epoch(columns)
    final["norm_batch"] = norm_batch(final)
    n_seeds = len(np.unique(final["seed"]))
    lines = [
        f"# {config.name}",
        "",
        f"Final epoch ({int(columns['epoch'].max())}); accuracies in percent, mean ± 95% CI (Student t) over "
        f"{n_seeds} seeds. `norm_batch` is the number of examples each batch statistic sees: the SGD batch, "
        "the ghost group under the ghost protocol, one device's examples under per_device and all devices' "
        "under sync. `train acc` and `test acc` evaluate norms with running statistics on "
        "those running averages; `batch stats` normalizes each batch (as large as the training batches, in "
        "ghost groups as in training) by its own statistics, so `train acc, batch stats` is the training set "
        "as training normalized it and its gap to `train acc` the train/test mismatch; `PreciseBN` uses "
        "statistics recomputed over training batches after training; `example-weighted` mixes each test "
        "example's own moments, with the weight 1/`norm_batch` it had in training, into the running ones "
        f"(Summers & Dinneen, 2020). `-`: a mode the norm does not have, {_left_out(config)}the runs predate. "
        "Runs whose loss went non-finite are counted under `diverged` and left out of every mean.",
        "",
    ]
    lines += claims_section(columns, config) + matched_loss_section(columns) + tuning_section(choices, config)
    if layers is not None:
        layers = reported(layers, columns, choices)
        lines += fluctuation_section(layers, config) + relative_fluctuation_section(layers, config)
    drop = batch_drop_table(final, config, input_shape)
    if drop:
        lines += ["## Accuracy lost between the largest and the smallest batch", "", *drop, ""]
    lines += ["## Every configuration", "", *unread_note(final, config), *final_table(final), ""]
    return "\n".join(lines)


def unread_note(final, config: Config) -> list[str]:
    """A sentence for each norm whose runs trained a swept field it never reads at one value (`unread_fields`):
    each of its rows stands for every value. Results trained before that rule hold every value and need none."""
    notes = []
    for norm in dict.fromkeys(config.sweep.norms):
        rows = final["norm"] == norm
        unread = {key: value for key, value in unread_fields(config, norm).items()
                  if rows.any() and len(np.unique(final[key][rows])) == 1}  # fmt: skip
        if unread:
            at = ", ".join(f"{key} = {_text(value)}" for key, value in unread.items())
            notes.append(f"`{norm}` reads no {' or '.join(unread)}: its runs trained once, at {at}, and each row of "
                         "them stands for every value (a run at another would repeat it bit for bit).")  # fmt: skip
    return [" ".join(notes), ""] if notes else []


def write_summary(out: Path, columns: dict[str, np.ndarray], config: Config,
                  input_shape: tuple[int, ...] | None = None) -> Path:  # fmt: skip
    """summary.md in `out`; one example's `input_shape` (else `input_shape_of(out, config)`) sizes the batch
    statistics."""
    path = Path(out) / "summary.md"
    layers = read_diagnostics(Path(out) / DIAGNOSTICS) if config.train.diagnostics_at else None
    atomic_write(path, summary_markdown(columns, config, input_shape or input_shape_of(out, config), layers))
    return path


def input_shape_of(out: Path, config: Config) -> tuple[int, ...] | None:
    """One example's shape: as config.json records it, else as the config's data source gives it (results written
    before config.json recorded it), else None where that data is not at hand."""
    recorded = read_meta(out).get("input_shape")
    return tuple(recorded) if recorded else data_input_shape(config)


def data_input_shape(config: Config) -> tuple[int, ...] | None:
    """One example's shape as the config's data source gives it, or None where that data is not at hand."""
    try:
        return load(config.data).train_x.shape[1:]
    except UserError:
        return None
