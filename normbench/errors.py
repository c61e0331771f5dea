"""The error types the CLI turns into a single line: exit status 2 for the user's, 1 for the machine's."""

import difflib
import errno


class UserError(ValueError):
    """Bad input from the user (config, override, data); the message is one line that says what is valid."""


class MachineError(RuntimeError):
    """The machine, not the input, stopped the command (a full disk, a read-only file); the message is one line."""


def refused_write(message: str, error: OSError) -> UserError | MachineError:
    """A write the system refused, as the error it is: a path through a missing directory or a file is the user's
    to correct; a full disk, a read-only file system or a missing permission is the machine's."""
    text = f"{message}: {error.strerror or error}"
    return UserError(text) if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR) else MachineError(text)


def did_you_mean(word: str, choices) -> str:
    """'; did you mean X?' naming the `choices` closest to a mistyped `word` (`close_matches`), or '' where none is
    close: appended to an error that lists what is valid, so a typo is answered at once."""
    return suggestion(close_matches(word, choices))


def close_matches(word: str, choices) -> list[str]:
    """The up to three `choices` closest to `word`, difflib's ratio at least 0.65: at its default of 0.6 a word
    sharing three letters with a name is offered it ('weird': 'power'); 0.65 still answers a swapped pair in a
    three-letter name ('rsm': 'rms')."""
    return difflib.get_close_matches(word, list(choices), n=3, cutoff=0.65)


def suggestion(names) -> str:
    """'; did you mean X or Y?' for the names a mistyped word may have meant, '' for none."""
    return f"; did you mean {' or '.join(map(repr, names))}?" if names else ""
