"""normbench: compare normalization schemes with vectorized JAX/Flax sweeps."""

__version__ = "0.1.0"
