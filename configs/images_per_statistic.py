"""Images per BatchNorm statistic: how BN's accuracy depends on how many images each batch statistic sees, with the
optimization held fixed, next to LayerNorm and GroupNorm (the question of the Group Normalization paper's Figure 1,
Wu & He 2018, at a scale a 2-core CPU runs in under an hour), and the mechanism measured.

    normbench run configs/images_per_statistic.py   # writes runs/images_per_statistic/

Protocol `ghost`: every step is SGD on a batch of 128 images, and BN computes its statistics over ghost groups of g
consecutive images of it, g in {1, 2, 4, 8, 16, 32, 128}, vmapped in one program: the statistic's size is the only
thing that changes with g (Hoffer et al., 2017; Summers & Dinneen, 2020). LayerNorm and GroupNorm (4 groups) read
no batch statistic and train once, at 128: the batch-independent references.

Two arms:
- `mlp`: 784-100x3-10, a BN statistic over g values. g = 2 is degenerate (two values: every BN output is +-1) and
  g = 1 undefined (one value: every output is beta); both are trained, drawn and marked as such.
- `cnn`: 3x3 stride-2 convs of 8, 16, 32 channels, global average pooling; a BN statistic over g images x 196, 49,
  16 positions. g = 1 normalizes each image by its own statistics in training and by the population's at test.

Norms: BN; Batch Renorm (Ioffe, 2017) with its paper's hold and ramp schedule in fractions of the run (r_max 1 and
d_max 0 for the first 1/32 of the steps, then up to 3 and 5); GN; LN. He init, ReLU. Data: each seed draws its own
3,000 training and 1,000 validation images from mnist5k's 4,000 (`data.resample`), so the intervals include the
data's variance; the test set is mnist5k's 1,000 test images. Training, the same for every arm, norm and g: SGD with
momentum 0.9, weight decay 1e-4, batch 128, 460 steps (20 passes, 4 epochs of 5 passes), a linear warmup over the
first 5% then a cosine decay to 0; the rate tuned per arm, norm and g on the validation split over 0.4, 0.8, 1.6
(extended by factors of 2 for each configuration whose choice sits at an edge, up to 3 steps each way,
`report.tune_extensions`), 10 seeds.

The mechanism, for every run with running statistics, after training:
- the train/test mismatch: accuracy on the same training images in train mode (ghost groups of g, as training saw
  them: `train_acc_batch_stats`) and in eval mode (running averages: `train_acc`);
- evaluation four ways: running averages (`test_acc`), PreciseBN (`test_acc_precise`), test batches normalized in
  groups of g (`test_acc_batch_stats`), and Summers & Dinneen's example weighting with weight 1/g
  (`test_acc_example_weighted`);
- per layer, the noise of the batch statistics at g, Var(mu_B)/sigma^2 and Var(sigma^2_B)/sigma^4, beside 1/g (what
  g independent images give) and 1/(g x positions) (what independent values would give): diagnostics.csv,
  `statistic_noise.png`.

How it differs from the GN paper: MNIST digits and a 3-layer CNN or MLP, not ImageNet and ResNet-50; one device,
BN's statistics over ghost groups of one SGD batch of 128, where the paper's images per GPU also set each GPU's share
of a batch of 32 x 8; 460 steps at batch 128 for every g, where the paper's batch size changes the SGD batch too; the
rate tuned per g on a validation split, where the paper scales one rate linearly.

Work: 8 cells of 30 or 210 runs, then the tuning extensions' rounds (what they cost: README's table of studies).

Expected (results/images_per_statistic/summary.md: test accuracy, paired over the 10 seeds, 95% intervals, verdicts
Holm-adjusted over the 66 claims):
- MLP: BN(g) - BN(128) is -83.3 points at g = 1 (undefined) and -45.3 at g = 2 (degenerate), -1.7 [-2.3, -1.2] at
  g = 4 (significant), and not significant from g = 8 on; BN beats GN by 1.3-1.7 points at g = 8 to 32 (significant).
- CNN: -34.4 [-38.0, -30.8] at g = 1; -0.4 [-1.0, +0.1] at g = 2, not significant; from g = 4 on no change is
  significant after the correction; BN beats GN by 1.7-2.3 points at g = 4 to 32 (significant).
- The CNN's loss at g = 1 is the train/test mismatch: 99.2% train accuracy in train mode, 63.2% on running averages;
  test images normalized by their own statistics gain +32.9 [+29.2, +36.6] over running averages. PreciseBN never
  differs from running averages significantly.
- Noise: g x Var(mu_B)/sigma^2 is 0.99-1.03 in the MLP's first layer and 0.012-0.015, 0.004 and 0.023-0.039 in the
  CNN's three: its statistics are as noisy as about 70, 250 and 30 independent values per image, not 1.
Every tuned rate is inside its searched grid except the MLP's BN and Batch Renorm at g <= 2, where the extension
limit stops the search at 0.05 (summary.md says so). A wider search, in one grid from 0.003125 to 0.8, chooses 0.025
for BN at g = 2 and 0.0125 for Batch Renorm, and gives BN(2) - BN(128) = -45.24 [-49.03, -41.45] (docs/studies.md).
"""

from normbench.config import Config, DataConfig, ModelConfig, NormConfig, ReportConfig, SweepConfig, TrainConfig

SIZES = (1, 2, 4, 8, 16, 32, 128)
ARMS = ("mlp", "cnn")


def claims() -> tuple[str, ...]:
    """Per arm and g: BN(g) - BN(128), GN - BN(g), and each evaluation mode against running averages at g."""
    out = []
    for model in ARMS:
        for g in SIZES[:-1]:
            at = f"test_acc, model={model}, protocol=ghost"
            out.append(f"{at}, norm=batch: ghost_size={g} - ghost_size=128")
            out.append(f"{at}: norm=group ghost_size=128 - norm=batch ghost_size={g}")
        for g in SIZES:
            at = f"test_acc, model={model}, norm=batch, ghost_size={g}"
            for mode in ("test_acc_precise", "test_acc_batch_stats", "test_acc_example_weighted"):
                out.append(f"{at}: metric={mode} - metric=test_acc")
    return tuple(out)


def get_config() -> Config:
    return Config(
        name="images_per_statistic",
        data=DataConfig(source="mnist5k", n_train=3000, n_val=1000, resample=True),
        model=ModelConfig(hidden=(100, 100, 100), channels=(8, 16, 32), init="he"),
        norm=NormConfig(momentum=0.9, num_groups=4),
        train=TrainConfig(
            epochs=4,
            min_steps=460,
            momentum=0.9,
            weight_decay=1e-4,
            schedule="cosine",
            warmup_fraction=0.05,
            precise_bn_examples=2048,
            test_every=4,
            diagnostics_at=(4,),
            # 210 CNN runs evaluating 1,000 images each at once would hold ~7 GiB of activations; 250 hold 1/4.
            eval_batch_size=250,
            # One seed's runs at a time, as the committed results were trained: XLA may sum in another order for a
            # grid of another size, so their last bits depend on it. What it costs: `benchmarks/chunk_size.py`.
            chunk_size=1,
        ),
        sweep=SweepConfig(
            models=ARMS,
            norms=("batch", "batch_renorm", "group", "layer"),
            protocols=("ghost",),
            batch_sizes=SIZES,
            init_scales=(1.0,),
            seeds=tuple(range(10)),
            learning_rates=(0.4, 0.8, 1.6),
        ),
        # The MLP's LayerNorm chose 0.1 at two steps below the grid: a third step lets it leave the edge.
        report=ReportConfig(tune=("learning_rate",), tune_extensions=3, claims=claims()),
        figures=("images_per_statistic", "bn_eval_modes", "statistic_noise"),
    )
