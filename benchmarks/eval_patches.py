"""Should an evaluation build a convolution's patches as stacks (`normbench.models.conv.patches_stacked`, what it
does) or as 9 slices joined along the channels (`patches`, what a training pass does)? Run it on a CPU, where XLA
fuses the one and not the other.

    python benchmarks/eval_patches.py [--cells 1 2] [--rounds 3]

For each of `normbench bench`'s CNN cells (`CNN_CELLS`, by index: 0 BN and 1 GN at batch 128, 2 BN at batch 2,
8 runs), times its programs' compile (`compile_cell`, program cache off) and the bench's in-process phase row
(`cnn_phase_row`: a model-step, an evaluation per image and run, and that over a training example's step) with
the evaluation's patches built each way, alternated, `--rounds` times; the training steps are the same programs
both ways. Both ways compute the same bits (`tests/test_models.py`).
"""

from __future__ import annotations

import argparse
import time

from normbench import bench
from normbench.config import apply_overrides, load_config
from normbench.core.grid import cells
from normbench.core.sweep import compile_cell, device_data
from normbench.data import load
from normbench.models import conv

WAYS = {"slices": conv.patches, "stacks": conv.patches_stacked}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[1, 2], help="indices into bench.CNN_CELLS")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    study = load_config(bench.SMALL_BATCH)
    dataset = load(study.data)
    data = device_data(dataset, study.train.precision)
    print("| cell | round | patches | compile (s) | step (us a model) | evaluation (us an image, run) | over a step |")
    print("|---|---|---|---|---|---|---|")
    default = conv.EVAL_PATCHES
    try:
        for round_ in range(args.rounds):
            for index in args.cells:
                cnn_cell = bench.CNN_CELLS[index]
                config = apply_overrides(study, cnn_cell.overrides(len(dataset.train_x)))
                (cell,) = cells(config)
                for way, form in WAYS.items():
                    conv.EVAL_PATCHES = form  # read while tracing
                    with bench._compiling_afresh():
                        began = time.perf_counter()
                        compile_cell(config, cell, dataset, data)
                        compile_s = time.perf_counter() - began
                        row = bench.cnn_phase_row(study, cnn_cell)
                    timed = [row["us_per_model_step"], row["eval_us_per_image_run"], row["eval_over_train_example"]]
                    cols = [cnn_cell.label, round_, way, f"{compile_s:.2f}", *timed]
                    print("| " + " | ".join(map(str, cols)) + " |", flush=True)
    finally:
        conv.EVAL_PATCHES = default


if __name__ == "__main__":
    main()
