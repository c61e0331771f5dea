"""The small-batch study: BatchNorm's accuracy against its batch size, next to LayerNorm and GroupNorm
(the Group Normalization paper's Figure 1, Wu & He 2018, at a scale a 2-core CPU runs in about 46 minutes).

    normbench run configs/small_batch.py   # writes runs/small_batch/

Model: a 3-block CNN (3x3 stride-2 convs of 8, 16, 32 channels, then global average pooling), He init;
GroupNorm with 4 groups. Data: 3,000 training images of the embedded mnist5k, the next 1,000 held out for
validation, its 1,000 test images for the test. Training, the same for every norm and batch: SGD with momentum
0.9, weight decay 1e-4, 15 epochs and at least 1,380 steps (`train.min_steps`): batches of 2, 8 and 32 take
22,500, 5,625 and 1,395 steps; batch 128, whose 15 passes would be 345 steps, takes 4 passes an epoch (1,380
steps), where 345 left LN and GN unconverged (train accuracy 96-98%). A linear warmup over the first 5% of the
steps then a cosine decay to 0; learning rate r x batch / 256 (the linear scaling rule of Goyal et al., 2017) with
r in {0.8, 1.6, 3.2, 6.4} tuned per norm and batch size on the validation set (`report.tune`), 5 seeds.
- `sgd` protocol: the SGD batch is BN's batch, 2, 8, 32 or 128 (one compiled program per batch size);
- `ghost` protocol: SGD batch 128, BN statistics over ghost groups of 2 ... 128 examples (vmapped): the
  statistic's size changes, the optimization does not.
A BN statistic in this CNN holds examples x positions values: 196, 49 and 16 positions per example in its three
layers, so batch 2 normalizes over 392, 98 and 32 values, not 2 (the MLP's batch-2 BN, two values per
statistic, is a degenerate case of its own, left out here). BN is evaluated three ways: running averages
(momentum 0.9), the test batch's own statistics, and PreciseBN.

How it differs from the GN paper: MNIST digits, not ImageNet; a 3-layer CNN, not ResNet-50; 3,000 images on one
device, so batch size is both BN's batch and the SGD batch (the `ghost` protocol separates them); equal epochs with
a floor of 1,380 steps, where the paper trains every batch size for the same number of epochs; the rate tuned per
batch on a validation split, where the paper scales one rate linearly.

Expected (results/small_batch/summary.md, paired over 5 seeds; every configuration converged, mean train accuracy
99.4-100% at its chosen rate): no norm's test accuracy changes significantly from batch 128 to 2: BN -0.1 points,
95% CI [-1.5, +1.4]; LN -0.7 [-1.9, +0.5]; GN -0.2 [-1.6, +1.2]; ghost protocol -0.1 [-0.8, +0.7], all not
significant. BN's drop minus GN's, +0.1 [-1.5, +1.8], and GN against BN at batch 2, -0.5 [-1.6, +0.5], are not
significant either. The GN paper's collapse of BN needs statistics of a few values, which this CNN's 392 / 98 / 32
at batch 2 are not. The best batch reaches 95.2% for BN (batch 8), 94.5% for GN (batch 2) and 94.1% for LN (batches
2 and 8): below 95% for LN and GN on 3,000 training images. The chosen rate is the grid's largest in 5 of the 12
`sgd` configurations and all 4 `ghost` ones.
"""

from normbench.config import Config, DataConfig, ModelConfig, NormConfig, ReportConfig, SweepConfig, TrainConfig

SGD = "protocol=sgd"
# accuracy at batch 2 minus at 128: negative where the small batch loses accuracy
CHANGE = "norm={norm} batch_size=2 - norm={norm} batch_size=128"


def get_config() -> Config:
    return Config(
        name="small_batch",
        data=DataConfig(source="mnist5k", n_train=3000, n_val=1000),
        model=ModelConfig(channels=(8, 16, 32), init="he"),
        norm=NormConfig(momentum=0.9, num_groups=4),
        train=TrainConfig(
            epochs=15,
            min_steps=1380,
            momentum=0.9,
            weight_decay=1e-4,
            schedule="cosine",
            warmup_fraction=0.05,
            lr_reference_batch=256,
            precise_bn_examples=1000,
            test_every=5,
        ),
        sweep=SweepConfig(
            models=("cnn",),
            norms=("batch", "layer", "group"),
            protocols=("sgd",),
            batch_sizes=(2, 8, 32, 128),
            init_scales=(1.0,),
            seeds=(0, 1, 2, 3, 4),
            learning_rates=(0.8, 1.6, 3.2, 6.4),
        ),
        report=ReportConfig(
            tune=("learning_rate",),
            claims=(
                f"test_acc, {SGD}: {CHANGE.format(norm='batch')}",
                f"test_acc, {SGD}: {CHANGE.format(norm='layer')}",
                f"test_acc, {SGD}: {CHANGE.format(norm='group')}",
                # BN's change from batch 128 to 2 minus GN's
                f"test_acc, {SGD}: norm=batch batch_size=2 - norm=batch batch_size=128 - norm=group batch_size=2 "
                "+ norm=group batch_size=128",
                f"test_acc, {SGD}: norm=group batch_size=2 - norm=batch batch_size=2",
            ),
        ),
        figures=("error_vs_batch", "bn_eval_modes"),
    )
