"""The small-batch study on CIFAR-10 with a ResNet-20, for a GPU (the GN paper's Figure 1, one step closer).

    normbench run configs/small_batch_cifar10.py   # writes runs/small_batch_cifar10/

Needs `tfds:cifar10` prepared in the TFDS data dir (or a network to download it). ResNet-20 (16-32-64
channels, GroupNorm with 8 groups), 50,000 training and 10,000 test images, SGD with momentum 0.9 at
learning rate 0.1 x batch / 128, 30 epochs, He init, 5 seeds; `sgd` protocol at batches 2 ... 128 and the
`ghost` protocol at SGD batch 128: 20 cells of 5 vmapped runs each, batch 2's 25,000 steps an epoch the most of
it. A GPU's study, too slow for a CPU.

What the GN paper (Wu & He, 2018) reports is for ImageNet and ResNet-50, not CIFAR-10: BN's validation error rises
from 23.6% at 32 images per GPU to 34.7% at 2, while GN's stays near 24% at every batch (its Figure 1, BN against GN
only); LN and GN are compared at 32 images per GPU alone (its Table 1: LN 25.3%, GN 24.1%). Whether a ResNet-20 on
CIFAR-10 shows BN's rise, and where LN sits, this config has not been run to check (no GPU here); summary.md's
headline comparisons will say what the runs show. Under the `ghost` protocol LN and GN train once, at batch 128,
repeating the `sgd` protocol's batch-128 runs.
"""

from normbench.config import Config, DataConfig, ModelConfig, NormConfig, ReportConfig, SweepConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="small_batch_cifar10",
        data=DataConfig(source="tfds:cifar10"),
        model=ModelConfig(channels=(16, 32, 64), init="he"),
        norm=NormConfig(momentum=0.9, num_groups=8),
        train=TrainConfig(epochs=30, momentum=0.9, lr_reference_batch=128, precise_bn_examples=10_000),
        sweep=SweepConfig(
            models=("resnet20",),
            norms=("batch", "layer", "group"),
            protocols=("sgd", "ghost"),
            batch_sizes=(2, 4, 8, 16, 32, 64, 128),
            init_scales=(1.0,),
            seeds=(0, 1, 2, 3, 4),
            learning_rates=(0.1,),
        ),
        report=ReportConfig(
            claims=(
                "test_acc, protocol=sgd: norm=batch batch_size=128 - norm=batch batch_size=2",
                "test_acc, protocol=sgd: norm=group batch_size=128 - norm=group batch_size=2",
                "test_acc, protocol=sgd: norm=group batch_size=2 - norm=batch batch_size=2",
            ),
        ),
        figures=("error_vs_batch", "bn_eval_modes"),
    )
