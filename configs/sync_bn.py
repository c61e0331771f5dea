"""Per-device BatchNorm against SyncBN and GroupNorm in data-parallel training over 8 devices (the GN paper's
"images per GPU" setting, Wu & He 2018, at a scale a 2-core CPU runs in 41 minutes).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 normbench run configs/sync_bn.py   # writes runs/sync_bn/

(On a machine with 8 accelerators, drop XLA_FLAGS.) Each SGD batch is split over 8 devices, 2, 4 or 8
examples on each (SGD batches of 16, 32, 64), and the gradients are averaged over the devices. `per_device`:
each device's norms see only its own examples, BatchNorm included (no communication); `sync`: BatchNorm's
mean and variance are averaged over the 8 devices (SyncBN). GroupNorm with 4 groups needs no batch, so it has
only a per_device cell. Model: an MLP with 3 hidden layers of 100, He init. Training: SGD with momentum 0.9 at
r x SGD batch / 256, r tuned per norm, protocol and batch over {0.05, 0.1, 0.2} on 1,000 held-out validation images
(extended by factors of 2 where a choice sits at an edge), 8 epochs on the first 1,000 images of the embedded
mnist5k, 5 seeds. `python benchmarks/sync_bn_cost.py` measures what the synchronization costs per step.

At 2 examples per device a BN statistic of this MLP holds 2 values, so every per-device BN output is +-1: that
point is degenerate, not merely noisy; 4 and 8 examples per device are the graded effect.

How it differs from the GN paper's images-per-GPU experiment (Wu & He 2018, section 4.1, ResNet-50 on ImageNet over
8 GPUs): an MLP on 1,000 MNIST images; 8 devices simulated on a CPU; 2, 4 and 8 examples per device, where the paper
goes from 32 down to 2; 8 epochs at a constant rate without weight decay, where the paper trains 100 epochs with
weight decay, its rate divided by 10 at epochs 30, 60 and 90 (`train.epochs`, `train.weight_decay`; `train.schedule`
offers a cosine decay, not the paper's steps); the rate tuned per norm, protocol and batch on a validation split,
where the paper scales one rate linearly with the batch; GroupNorm's 4 groups of 25 features, where the paper's
ResNet has 32 groups of channels (`norm.num_groups`); SyncBN, which the paper does not train; test accuracy on 1,000
images, where the paper reports ImageNet validation error.

Expected (results/sync_bn/summary.md, test accuracy paired over the 5 seeds, 95% intervals, verdicts Holm-adjusted
over its 7 claims): at 2 examples per device (degenerate) SyncBN - per-device BN = +44.6 points [+37.8, +51.4] and GN
- per-device BN = +44.9 [+38.1, +51.7]; at 4, +4.1 [+2.9, +5.3] and +2.4 [+0.8, +4.0], both significant; at 8, +1.2
[+0.2, +2.1], not significant after Holm, and -0.8 [-1.8, +0.2]. SyncBN over SGD batches of 16 against 64: -1.2
[-1.9, -0.5], significant.
"""

from normbench.config import Config, DataConfig, ModelConfig, NormConfig, ReportConfig, SweepConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="sync_bn",
        data=DataConfig(source="mnist5k", n_train=1000, n_val=1000),
        model=ModelConfig(hidden=(100, 100, 100), init="he"),
        norm=NormConfig(momentum=0.9, num_groups=4),
        train=TrainConfig(epochs=8, momentum=0.9, lr_reference_batch=256, precise_bn_examples=1000, data_parallel=8),
        sweep=SweepConfig(
            models=("mlp",),
            norms=("batch", "group"),
            protocols=("per_device", "sync"),
            batch_sizes=(2, 4, 8),
            init_scales=(1.0,),
            seeds=(0, 1, 2, 3, 4),
            learning_rates=(0.05, 0.1, 0.2),
        ),
        report=ReportConfig(
            tune=("learning_rate",),
            claims=tuple(
                f"test_acc, batch_size={b}: {term} - norm=batch protocol=per_device"
                for b in (2, 4, 8)
                for term in ("norm=batch protocol=sync", "norm=group protocol=per_device")
            )
            + ("test_acc, norm=batch, protocol=sync: batch_size=2 - batch_size=8",),
        ),
        figures=("sync_bn",),
    )
