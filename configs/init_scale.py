"""The textbook's batch-norm experiment (Deep Learning from Scratch, ch. 6): does BN rescue bad init scales?

    normbench run configs/init_scale.py   # writes runs/init_scale/

MLP 784-100x5-10 (Dense -> Norm -> ReLU), weights init_scale x N(0, 1) for 16 scales logspace(0, -4, 16),
SGD lr 0.01, batch 100, the first 1,000 training images of the embedded mnist5k, 20 epochs of 10 steps, with
and without BatchNorm (momentum 0.9, eps 1e-6, eval on running averages), 3 seeds: 96 runs, two compiled
programs. Cost on a 2-core CPU (`normbench bench`, results/bench/): about 17 s for the whole process once its
programs are cached, 25-30 s the first time.

Expected (results/init_scale/init_scale.png): BN reaches >= 0.9 train accuracy at every scale from 0.046 down to
0.0022 and is still learning at 1e-4; the plain net learns only around 0.16-0.29 and sits at one class
(~0.1) below ~0.05 and above ~0.5.
"""

import numpy as np

from normbench.config import Config, DataConfig, NormConfig, SweepConfig, TrainConfig


def get_config() -> Config:
    return Config(
        name="init_scale",
        data=DataConfig(source="mnist5k", n_train=1000),
        # BN as the textbook: momentum 0.9, eps 1e-6 (the defaults). 4 groups divide the 100-wide layers, so
        # GroupNorm and EvoNorm-S0 are one `--set sweep.norms=...` away.
        norm=NormConfig(num_groups=4),
        # Like the textbook, measure train accuracy after every epoch and test accuracy only at the end: the figure
        # is train accuracy, and a test pass per epoch would be a fifth of the study's arithmetic.
        train=TrainConfig(epochs=20, test_every=20),
        sweep=SweepConfig(
            norms=("batch", "none"),
            batch_sizes=(100,),
            init_scales=tuple(float(s) for s in np.logspace(0, -4, 16)),
            seeds=(0, 1, 2),
            learning_rates=(0.01,),
        ),
        figures=("init_scale",),
    )
