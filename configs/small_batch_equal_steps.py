"""The small-batch study at an equal-steps budget, beside `small_batch.py`'s equal epochs.

    normbench run configs/small_batch_equal_steps.py   # writes runs/small_batch_equal_steps/; ~6 min, 2 cores

Everything as in `small_batch.py` (its `sgd` protocol), except that every batch size takes the 345 SGD steps of
15 passes at batch 128 over 3,000 images (23 steps a pass): smaller batches then see fewer examples (batch 2: 690,
a quarter of one pass) where under equal epochs they take more steps. It keeps the rate grid {0.8, 1.6, 3.2} and
no step floor (`train.min_steps`), as its committed results ran, where `small_batch.py` now has {0.8, ..., 6.4}
and a 1,380-step floor. A norm whose accuracy holds
under both budgets owes nothing to either; BN's drop under each bounds how much of it the budget explains.

Expected (results/small_batch_equal_steps/summary.md, paired over 5 seeds): every norm loses 46-50 points of test
accuracy from batch 128 to 2 (BN +50.1 [+44.5, +55.8], GN +45.8 [+43.2, +48.4]); BN's drop minus GN's, +4.4
[-0.3, +9.0], is not significant.
"""

from pathlib import Path

from normbench.config import load_config, set_fields


def get_config():
    equal_epochs = load_config(Path(__file__).with_name("small_batch.py"))
    return set_fields(
        equal_epochs,
        {
            "name": "small_batch_equal_steps",
            "sweep.protocols": ("sgd",),
            "train.steps_per_epoch": 23,
            "train.min_steps": None,
            "sweep.learning_rates": (0.8, 1.6, 3.2),
            "report.claims": tuple(c for c in equal_epochs.report.claims if "protocol=sgd" in c),
        },
    )
