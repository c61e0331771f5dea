"""The one error type the CLI turns into a single line and exit status 2."""


class UserError(ValueError):
    """Bad input from the user (config, override, data); the message is one line that says what is valid."""
