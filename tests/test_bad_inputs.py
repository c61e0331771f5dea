"""Every bad input of a run, as a user would make it through the CLI: one line saying what is wrong (and what is
valid), exit status 2, and the results of an earlier run byte for byte as they were."""

import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import snapshot
from test_data import idx_bytes, write_idx_set

from normbench.cli import main
from normbench.norms import NORMS


def settings(*pairs):
    return lambda tmp: [arg for pair in pairs for arg in ("--set", pair)]


def source(name):
    """Whole splits of the data source `name` (the tiny study keeps subsets of mnist5k)."""
    return settings(f"data.source={name}", "data.n_train=None", "data.n_test=None")(None)


def config_file(text):
    def make(tmp):
        path = tmp / "config.py"
        path.write_text(text)
        return ["--config", str(path)]

    return make


def idx_dir(damage):
    """An IDX data set in `tmp/idx`, damaged by `damage(directory)`."""

    def make(tmp):
        write_idx_set(tmp / "idx", n_train=40, n_test=20, shape=(6, 6))
        damage(tmp / "idx")
        return source(f"idx:{tmp / 'idx'}")

    return make


def npz_file(**changes):
    def make(tmp):
        rng = np.random.default_rng(0)
        arrays = {
            "train_x": rng.random((40, 6, 6), dtype=np.float32),
            "train_y": rng.integers(0, 3, 40),
            "test_x": rng.random((20, 6, 6), dtype=np.float32),
            "test_y": rng.integers(0, 3, 20),
        }
        for key, change in changes.items():
            change(arrays[key])
        np.savez(tmp / "data.npz", **arrays)
        return source(f"npz:{tmp / 'data.npz'}")

    return make


def source_file(kind, name, write):
    """The data source `kind:tmp/name`, a file that `write(path)` writes."""

    def make(tmp):
        write(tmp / name)
        return source(f"{kind}:{tmp / name}")

    return make


def truncate(name, keep):
    return lambda d: (d / name).write_bytes((d / name).read_bytes()[:keep])


def relabel(directory):
    (directory / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(20, 11, np.uint8), 0x801))


def huge_header(directory):
    """An images file whose header's dimensions multiply to more than 2**64."""
    (directory / "train-images-idx3-ubyte").write_bytes(struct.pack(">4I", 0x803, 2**32 - 1, 2**32 - 1, 2**32 - 1))


def images_of_another_shape(tmp):
    args = npz_file()(tmp)
    arrays = dict(np.load(tmp / "data.npz"))
    np.savez(tmp / "data.npz", **{**arrays, "test_x": arrays["test_x"][:, :5, :5]})
    return args


def npz_replacing(**replaced):
    """The data set of `npz_file` with some of its arrays replaced whole."""

    def make(tmp):
        args = npz_file()(tmp)
        np.savez(tmp / "data.npz", **{**np.load(tmp / "data.npz"), **replaced})
        return args

    return make


def missing_config(path):
    return lambda tmp: ["--config", path]


def config_at(name, make):
    """A config path `tmp/name`, made by `make(path)`."""

    def at(tmp):
        make(tmp / name)
        return ["--config", str(tmp / name)]

    return at


def output_under_a_file(tmp):
    (tmp / "file").write_text("not a directory")
    return ["--out", str(tmp / "file" / "results")]


def study_with(body):
    """A config file whose get_config is `body` (indented), with the config classes imported."""
    imports = "from normbench.config import Config, NormConfig, TrainConfig\n"
    return config_file(imports + "\n\n" + body)


def option(*args):
    return lambda tmp: list(args)


def set_at(index, value):
    return lambda array: array.reshape(-1).__setitem__(index, value)


CASES = {
    "unknown norm": (settings("sweep.norms=batch,weird"), f"unknown norm 'weird'; valid norms: {', '.join(NORMS)}"),
    "unknown model": (settings("sweep.models=transformer"), "unknown model 'transformer'; valid models: mlp, cnn"),
    "unknown dataset": (settings("data.source=cifar"), "unknown data source 'cifar': valid forms are mnist5k, idx:"),
    "groups not dividing": (settings("sweep.norms=group", "norm.num_groups=3"), "3 groups do not divide a layer of 8"),
    "zero groups": (
        settings("sweep.norms=group", "norm.num_groups=0"),
        "group norm: norm.num_groups must be positive, got 0",
    ),
    "zero group size": (settings("sweep.norms=group", "norm.group_size=0"), "norm.group_size must be positive, got 0"),
    "negative groups": (
        settings("sweep.norms=group", "norm.num_groups=-2"),
        "norm.num_groups must be positive, got -2",
    ),
    "negative group size": (settings("sweep.norms=group", "norm.group_size=-4"), "group_size must be positive, got -4"),
    "EvoNorm-S0's groups not dividing": (
        settings("sweep.norms=evonorm_s0", "norm.num_groups=3"),
        "evonorm_s0: 3 groups do not divide a layer of 8",
    ),
    "batch larger than the data": (settings("sweep.batch_sizes=100"), "batch size 100 is larger than the 64 training"),
    "zero learning rate": (settings("sweep.learning_rates=0.0"), "sweep.learning_rates (0.0) must be positive"),
    "negative learning rate": (settings("sweep.learning_rates=-0.1"), "must be positive, got -0.1"),
    "zero epochs": (settings("train.epochs=0"), "train.epochs must be positive, got 0"),
    "zero train_acc_every": (settings("train.train_acc_every=0"), "train.train_acc_every must be positive, got 0"),
    "zero chunk_min_batch": (settings("train.chunk_min_batch=0"), "train.chunk_min_batch must be positive, got 0"),
    "zero batch size": (settings("sweep.batch_sizes=0"), "sweep.batch_sizes (0) must be positive, got 0"),
    "empty sweep axis": (settings("sweep.seeds=()"), "sweep.seeds is empty; give at least one value"),
    "empty text for the norms": (settings("sweep.norms="), "sweep.norms is empty; give at least one value"),
    "empty text for the seeds": (settings("sweep.seeds= "), "sweep.seeds is empty; give at least one value"),
    "--set without =": (settings("train.epochs"), "--set expects key=value, got 'train.epochs'"),
    "--set unknown key": (settings("train.epochz=3"), "unknown config key 'train.epochz': TrainConfig has epochs"),
    "--set wrong type": (settings("train.epochs=many"), "config key 'train.epochs' expects an integer, got 'many'"),
    "config with a syntax error": (config_file("def get_config(:\n"), "has a syntax error at line 1"),
    "config without a config": (config_file("x = 1\n"), "defines no get_config() function"),
    "missing IDX directory": (settings("data.source=idx:/no/such/dir"), "directory '/no/such/dir' does not exist"),
    "IDX directory that is a file": (
        source_file("idx", "images", lambda path: path.write_text("not a directory")),
        "images' is not a directory; idx: names the directory of the four MNIST-format files",
    ),
    "npz that is a text file": (
        source_file("npz", "data.npz", lambda path: path.write_text("x,y\n1,2\n")),
        "data.npz' is not an .npz file (the zip archive of arrays that numpy.savez writes)",
    ),
    "npz that is one .npy array": (
        source_file("npz", "data.npy", lambda path: np.save(path, np.zeros(3))),
        "data.npy' is not an .npz file",
    ),
    "missing IDX file": (
        idx_dir(lambda d: (d / "t10k-images-idx3-ubyte").unlink()),
        "t10k-images-idx3-ubyte (or t10k-images-idx3-ubyte.gz) is missing from",
    ),
    "truncated IDX file": (idx_dir(truncate("train-images-idx3-ubyte", 100)), "is truncated: its header promises 1440"),
    "wrong-magic IDX file": (
        idx_dir(lambda d: (d / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 60)),
        "has magic number 0x00000803, expected 0x00000801",
    ),
    "labels out of range": (idx_dir(relabel), "test labels must be in [0, 10), found label 11"),
    "NaN in the data": (npz_file(train_x=set_at(7, np.nan)), "the train images contain NaN or infinite values"),
    "unwritable output dir": (output_under_a_file, "cannot write results to"),
    "results of another config": (settings("train.epochs=3"), "holds results of a different config (differs in"),
    "empty name": (settings("name="), "name must be a file name (results go to results/<name>), got ''"),
    "name with a slash": (settings("name=a/b"), "name must be a file name"),
    "negative hidden width": (settings("model.hidden=8,-5"), "model.hidden (-5) must be positive, got -5"),
    "zero hidden width": (settings("model.hidden=0"), "model.hidden (0) must be positive, got 0"),
    "epochs beyond int32": (settings(f"train.epochs={2**31}"), f"train.epochs must be below 2**31, got {2**31}"),
    "ghost size not dividing the batch": (
        settings("sweep.norms=ghost_batch", "norm.ghost_size=7"),
        "norm.ghost_size 7 does not divide sweep.batch_sizes (16)",
    ),
    "infinite learning rate": (settings("sweep.learning_rates=1e999"), "must be finite in float32, got inf"),
    "learning rate beyond float32": (settings("sweep.learning_rates=1e39"), "must be finite in float32, got 1e+39"),
    "NaN epsilon": (
        study_with('def get_config():\n    return Config(name="tiny", norm=NormConfig(epsilon=float("nan")))\n'),
        "norm.epsilon must be positive, got nan",
    ),
    "infinite weight decay": (settings("train.weight_decay=1e999"), "train.weight_decay must be finite in float32"),
    "epsilon 0 in float32": (settings("norm.epsilon=1e-50"), "norm.epsilon is 1e-50, which is 0 in float32"),
    "init scale 0 in float32": (settings("sweep.init_scales=1e-50"), "which is 0 in float32"),
    "get_config raising": (study_with("def get_config():\n    raise RuntimeError('boom')\n"), "failed: RuntimeError"),
    "get_config taking arguments": (study_with("def get_config(size):\n    return None\n"), "failed: TypeError"),
    "ill-typed field": (
        study_with('def get_config():\n    return Config(name="tiny", train=TrainConfig(epochs="3"))\n'),
        "config key 'train.epochs' expects an integer, got '3'",
    ),
    "ill-typed section": (
        study_with('def get_config():\n    return Config(name="tiny", train=5)\n'),
        "config key 'train' expects a TrainConfig, got 5",
    ),
    "config calling sys.exit": (config_file("import sys\n\nsys.exit(0)\n"), "failed to run: SystemExit"),
    "zero workers": (option("--workers", "0"), "workers must be at least 1, got 0"),
    "zero processes": (option("--processes", "0"), "processes must be at least 1, got 0"),
    "processes with checkpoints": (
        option("--processes", "2", "--set", "train.checkpoint_every=1"),
        "train.checkpoint_every saves a cell's state in the process that trains it, which --processes leaves",
    ),
    "coordinator not HOST:PORT": (
        option("--coordinator", "nonsense", "--num-processes", "1", "--process-id", "0"),
        "--coordinator 'nonsense' is not HOST:PORT, e.g. host0:1234",
    ),
    "--num-processes without a distributed run": (
        option("--num-processes", "2"),
        "--num-processes and --process-id describe a distributed run: add --coordinator HOST:PORT (or --distributed)",
    ),
    "a field swept twice": (
        option("--sweep", "norm.epsilon=1e-5", "--sweep", "norm.epsilon=1e-3"),
        "--sweep norm.epsilon is given twice; give all its values in one: --sweep norm.epsilon=V1,V2,...",
    ),
    "a field set and swept": (
        option("--set", "norm.epsilon=0.1", "--sweep", "norm.epsilon=1e-5,1e-3"),
        "--set norm.epsilon would change nothing: the sweep gives it the values 1e-05,0.001; drop the --set",
    ),
    "empty --out": (option("--out", ""), "--out is empty; name a path, or leave the option out"),
    "empty --tensorboard": (option("--tensorboard", ""), "--tensorboard is empty; name a path, or leave"),
    "a sweep of zero cells": (
        settings("sweep.protocols=sync", "sweep.norms=layer"),
        "the sweep has no cells: protocols sync run none of norms layer",
    ),
    "train and test images of different shapes": (
        images_of_another_shape,
        "train images have shape (6, 6, 1) but test images (5, 5, 1); they must agree",
    ),
    "IDX header overflowing": (idx_dir(huge_header), "is truncated: its header promises 79228162458924105385300197375"),
    "norm name with a typo": (settings("sweep.norms=batch,layr"), "layer+ws; did you mean 'layer' or 'layer+ws'?"),
    "--set train.lr": (settings("train.lr=0.1"), "data_parallel; did you mean 'sweep.learning_rates'?"),
    "--sweep key with a typo": (option("--sweep", "norm.num_group=1,2"), "did you mean 'norm.num_groups'?"),
    "config named without configs/": (
        missing_config("init_scale"),
        "config file 'init_scale' does not exist; did you mean 'configs/init_scale.py'?",
    ),
    "config not named .py": (
        config_at("study.txt", lambda path: path.write_text("x = 1\n")),
        "study.txt' is not a Python file: its name must end in .py",
    ),
    "config that is a directory": (config_at("study.py", Path.mkdir), "study.py' is a directory; give a Python file"),
    "config named ''": (missing_config(""), "the config file's name is empty; give a Python file with get_config()"),
    "config with null bytes": (config_file("x = 1\x00\n"), "has a syntax error: source code string cannot contain"),
    "npz without training examples": (
        npz_replacing(train_x=np.zeros((0, 6, 6), np.float32), train_y=np.zeros(0, np.int64)),
        "the train split holds no examples",
    ),
    "npz labels beyond int32": (
        npz_replacing(train_y=np.full(40, 2**31)),
        "2147483649 classes; normbench's int32 labels hold 1 to 2**31 - 1 classes",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_leaves_results_alone(study, tmp_path, capsys, case):
    config, out = study
    make_args, message = CASES[case]
    args = make_args(tmp_path)
    if args[:1] == ["--config"]:
        config, args = args[1], args[2:]
    before = snapshot(out)
    capsys.readouterr()
    assert main(["run", str(config), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("normbench: error: ") and err.count("\n") == 1, err
    assert message in err
    assert snapshot(out) == before


def test_a_value_with_a_newline_is_refused_on_one_line(capsys):
    """A fuzz example: `--set model.channels=',0\\n0'` echoed the newline into its error, making it two lines."""
    from normbench.cli import main

    assert main(["show", "configs/init_scale.py", "--set", "model.channels=,0\n0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "got 0\\n0" in err


def test_a_sweep_of_true_and_false_in_lower_case_is_accepted():
    """`--sweep norm.unbiased_running_var=true,false` was refused ("expects ... true/false values, got true,false")
    while `True,False` worked: each listed word is read as `--set` reads one value."""
    from normbench.config import Config, add_sweeps

    for raw in ("true,false", "True,False", "TRUE, false"):
        swept = add_sweeps(Config(), [f"norm.unbiased_running_var={raw}"]).sweep.fields
        assert swept == {"norm.unbiased_running_var": (True, False)}, raw
    assert add_sweeps(Config(), ["norm.num_groups=none,2"]).sweep.fields == {"norm.num_groups": (None, 2)}


# Bad input to the commands that read results, each after `normbench <command>` on the tiny study's results (A):
# exit status, the one line on stderr, and the results byte for byte as they were. Before (c7b44a6) --dpi 0, -5,
# 1 and 100000 and --plot x.xyz were tracebacks, --dpi 5000 drew for 27 s in 2.1 GB, and A compared with A
# printed a comparison of nothing without a word.
READER_CASES = {
    "plot at 0 dots per inch": (["plot", "{A}", "--dpi", "0"], 2, "--dpi 0: figures are drawn at 30 to 600 dots"),
    "plot at -5 dots per inch": (["plot", "{A}", "--dpi", "-5"], 2, "--dpi -5: figures are drawn at 30 to 600 dots"),
    "plot at 1 dot per inch": (["plot", "{A}", "--dpi", "1"], 2, "--dpi 1: figures are drawn at 30 to 600 dots"),
    "plot at 5,000 dots per inch": (["plot", "{A}", "--dpi", "5000"], 2, "--dpi 5000: figures are drawn at 30 to"),
    "plot at 100,000 dots per inch": (["plot", "{A}", "--dpi", "100000"], 2, "--dpi 100000: figures are drawn at"),
    "compare --plot to no known format": (
        ["compare", "{A}", "{A}", "--plot", "{tmp}/figure.xyz"],
        2,
        "--plot '{tmp}/figure.xyz': the file name must end in .png, .pdf",
    ),
    "plot --config of a file not named .py": (
        ["plot", "{A}", "--config", "{A}/metrics.csv"],
        2,
        "config file '{A}/metrics.csv' is not a Python file: its name must end in .py",
    ),
    "report --output a directory": (
        ["report", "{A}", "--output", "{tmp}"],
        2,
        "'{tmp}' is a directory; name the report's file, e.g. '{tmp}/report.html'",
    ),
    "report --output ''": (["report", "{A}", "--output", ""], 2, "--output is empty; name a path"),
    "compare --csv ''": (["compare", "{A}", "{A}", "--csv", ""], 2, "--csv is empty; name a path"),
    "compare --plot ''": (["compare", "{A}", "{A}", "--plot", ""], 2, "--plot is empty; name a path"),
    "compare A A": (["compare", "{A}", "{A}"], 0, "warning: A and B are the same directory, '{A}': their difference"),
}


@pytest.mark.parametrize("case", READER_CASES)
def test_bad_input_to_a_reader_is_one_line_and_leaves_results_alone(study, tmp_path, capsys, case):
    _, out = study
    args, code, message = READER_CASES[case]
    before = snapshot(out)
    capsys.readouterr()
    assert main([arg.format(A=out, tmp=tmp_path) for arg in args]) == code
    printed, err = capsys.readouterr()
    if code:  # a refused command prints its error line and nothing else
        assert printed == "", printed
    assert err.startswith("normbench: ") and err.count("\n") == 1, err
    assert message.format(A=out, tmp=tmp_path) in err
    assert snapshot(out) == before
