"""The textbook's own experiment in plain NumPy, as a same-machine baseline for `normbench run`.

    python benchmarks/textbook_numpy.py [--seeds 1]

A port of Deep Learning from Scratch's ch06/batch_norm_test.py with its MultiLayerNetExtend, Affine,
BatchNormalization, Relu and SoftmaxWithLoss layers (float64): MLP 784-100x5-10, SGD lr 0.01, batch 100 drawn
with np.random.choice, 20 epochs of 10 iterations on the first 1,000 mnist5k training images, 16 weight-init
stds in logspace(0, -4, 16), with and without BN (momentum 0.9, eps 10e-7), training accuracy after each
epoch on running averages. It prints the whole process's wall time and the final accuracies, so the
comparison with `normbench run configs/init_scale.py --set sweep.seeds=0` is made on one machine.

`Net` takes its initial weight matrices and `Net.step` the minibatch, so a test can feed it normbench's draws
(tests/test_textbook_reference.py).
"""

import time

START = time.perf_counter()

import argparse  # noqa: E402

import numpy as np  # noqa: E402

from normbench.config import DataConfig  # noqa: E402
from normbench.data import load  # noqa: E402


def draw_weights(sizes, init_std, rng):
    return [init_std * rng.standard_normal((a, b)) for a, b in zip(sizes[:-1], sizes[1:])]


class Net:
    def __init__(self, weights, use_bn):
        self.W = [np.array(w, np.float64) for w in weights]
        self.b = [np.zeros(w.shape[1]) for w in self.W]
        hidden = [w.shape[1] for w in self.W[:-1]]
        self.use_bn = use_bn
        self.gamma = [np.ones(h) for h in hidden]
        self.beta = [np.zeros(h) for h in hidden]
        self.running_mean = [np.zeros(h) for h in hidden]
        self.running_var = [np.zeros(h) for h in hidden]

    def forward(self, x, train):
        cache = []
        for i in range(len(self.W) - 1):
            a = x @ self.W[i] + self.b[i]
            bn = None
            if self.use_bn:
                if train:
                    mu = a.mean(0)
                    xc = a - mu
                    var = (xc**2).mean(0)
                    std = np.sqrt(var + 10e-7)
                    xn = xc / std
                    self.running_mean[i] = 0.9 * self.running_mean[i] + 0.1 * mu
                    self.running_var[i] = 0.9 * self.running_var[i] + 0.1 * var
                    bn = (xc, xn, std)
                else:
                    xn = (a - self.running_mean[i]) / np.sqrt(self.running_var[i] + 10e-7)
                a = self.gamma[i] * xn + self.beta[i]
            cache.append((x, a > 0, bn))
            x = np.maximum(a, 0)
        cache.append((x, None, None))
        return x @ self.W[-1] + self.b[-1], cache

    def step(self, x, t, lr):
        """One SGD step on the minibatch (x, t); returns its mean cross-entropy before the step. The book's
        SoftmaxWithLoss adds 1e-7 inside the log of the loss it reports; that term never reaches the gradient,
        and the loss here leaves it out, so that it is the exact cross-entropy normbench (optax) reports."""
        logits, cache = self.forward(x, train=True)
        shifted = logits - logits.max(1, keepdims=True)
        y = np.exp(shifted)
        total = y.sum(1, keepdims=True)
        y /= total
        loss = float(np.mean(np.log(total[:, 0]) - shifted[np.arange(len(t)), t]))
        dout = y.copy()
        dout[np.arange(len(t)), t] -= 1
        dout /= len(t)
        for i in reversed(range(len(self.W))):
            x_in, relu_mask, bn = cache[i]
            if i < len(self.W) - 1:
                dout = dout * relu_mask
                if self.use_bn:
                    xc, xn, std = bn
                    n = dout.shape[0]
                    dgamma, dbeta = (xn * dout).sum(0), dout.sum(0)
                    dxn = self.gamma[i] * dout
                    dxc = dxn / std
                    dstd = -((dxn * xc) / (std * std)).sum(0)
                    dvar = 0.5 * dstd / std
                    dxc += (2.0 / n) * xc * dvar
                    dout = dxc - dxc.mean(0)
                    self.gamma[i] -= lr * dgamma
                    self.beta[i] -= lr * dbeta
            dW, db = x_in.T @ dout, dout.sum(0)
            dout = dout @ self.W[i].T
            self.W[i] -= lr * dW
            self.b[i] -= lr * db
        return loss

    def accuracy(self, x, t):
        return float((self.forward(x, train=False)[0].argmax(1) == t).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    data = load(DataConfig(n_train=1000))
    x, t = data.train_x.reshape(1000, -1).astype(np.float64), data.train_y
    sizes = [784, 100, 100, 100, 100, 100, 10]
    finals = {}
    for seed in range(args.seeds):
        for std in np.logspace(0, -4, 16):
            for use_bn in (True, False):
                rng = np.random.default_rng(seed)
                net = Net(draw_weights(sizes, std, rng), use_bn)
                with np.errstate(all="ignore"):
                    for _ in range(20):
                        for _ in range(10):
                            idx = rng.choice(1000, 100)
                            net.step(x[idx], t[idx], 0.01)
                        acc = net.accuracy(x, t)
                finals.setdefault((use_bn, std), []).append(acc)
    print("final train accuracy (mean over seeds):")
    for std in np.logspace(0, -4, 16):
        print(f"  W: {std:<8.2g} BN {np.mean(finals[(True, std)]):.3f}   plain {np.mean(finals[(False, std)]):.3f}")
    print(f"whole process: {time.perf_counter() - START:.1f} s for {args.seeds} seed(s), 32 runs each")


if __name__ == "__main__":
    main()
