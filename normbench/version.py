"""normbench's version, in a module of its own so that what records it (`study.py`) need not import the
package's `__init__`, which imports the API, which imports `study.py`. Keep it equal to pyproject.toml's."""

__version__ = "0.1.0"
