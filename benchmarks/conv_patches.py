"""How should `normbench.models.conv.Conv` compute a convolution: patches from strided slices of the padded input
times the kernel (what it does), patches from `lax.conv_general_dilated_patches` (what it did), or no patches,
`lax.conv_general_dilated` itself, which the vmap over runs turns into a grouped convolution (what `nn.Conv` does)?
Run it on each backend the choice is made for.

    python benchmarks/conv_patches.py [--runs 24] [--repeats 20] [--batches 128 2] [--out table.md]

Times one vmapped forward and backward pass (the gradient with respect to the input and the kernel, as a training
step needs) of each block of the small-batch CNN (3x3 stride-2 convs of 8, 16 and 32 channels on 28x28 digits) at
batch 128 and 2, for `--runs` runs with kernels of their own, the three ways in turn in one process, `--repeats`
calls each, and prints each one's time over the slices' and the largest difference of its output from theirs (each
sums a patch's products in another order).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from normbench.models.conv import patches

# (batch, side, in channels, out channels) of the CNN's three blocks, at the study's largest and smallest batch
BLOCKS = [(128, 28, 1, 8), (128, 14, 8, 16), (128, 7, 16, 32), (2, 28, 1, 8), (2, 14, 8, 16), (2, 7, 16, 32)]
STRIDES = (2, 2)


def by_slices(x, kernel):
    return patches(x, kernel.shape[:2], STRIDES, "SAME") @ kernel.reshape(-1, kernel.shape[-1])


def by_patch_convolution(x, kernel):
    dilated = jax.lax.conv_general_dilated_patches(
        x, kernel.shape[:2], STRIDES, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    # conv_general_dilated_patches lists a patch channel-major, (in, kh, kw)
    return dilated @ jnp.transpose(kernel, (2, 0, 1, 3)).reshape(-1, kernel.shape[-1])


def by_convolution(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, STRIDES, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def seconds(conv, x, kernel, repeats: int) -> float:
    step = jax.jit(jax.vmap(jax.grad(lambda x, k: jnp.sum(conv(x, k) ** 2), argnums=(0, 1))))
    jax.block_until_ready(step(x, kernel))
    start = time.perf_counter()
    for _ in range(repeats):
        out = step(x, kernel)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[128, 2], help="the blocks' batches to time")
    parser.add_argument("--out", type=Path, help="also write the table to this file, a line as each row is measured")
    args = parser.parse_args()
    if args.out:
        args.out.write_text("")

    def print_line(line: str) -> None:
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as out:
                out.write(line + "\n")

    ways = {"patch convolution": by_patch_convolution, "lax.conv_general_dilated": by_convolution}
    print_line(f"{jax.devices()[0].device_kind}, {args.runs} runs")
    columns = " | ".join(f"{way} / slices | max difference" for way in ways)
    print_line(f"| batch | input | channels | slices (ms) | {columns} |")
    print_line("|---|---|---|---|" + "---|---|" * len(ways))
    for batch, side, cin, cout in (block for block in BLOCKS if block[0] in args.batches):
        kx, kk = jax.random.split(jax.random.PRNGKey(0))
        x = jax.random.normal(kx, (args.runs, batch, side, side, cin))
        kernel = jax.random.normal(kk, (args.runs, 3, 3, cin, cout))
        slices = seconds(by_slices, x, kernel, args.repeats)
        reference = jax.vmap(by_slices)(x, kernel)
        cells = []
        for conv in ways.values():
            ratio = seconds(conv, x, kernel, args.repeats) / slices
            cells.append(f"{ratio:.2f} | {float(jnp.abs(jax.vmap(conv)(x, kernel) - reference).max()):.1e}")
        print_line(f"| {batch} | {side}x{side}x{cin} | {cout} | {slices * 1e3:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
