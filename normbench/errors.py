"""The error types the CLI turns into a single line: exit status 2 for the user's, 1 for the machine's."""


class UserError(ValueError):
    """Bad input from the user (config, override, data); the message is one line that says what is valid."""


class MachineError(RuntimeError):
    """The machine, not the input, stopped the command (a full disk, a read-only file); the message is one line."""
