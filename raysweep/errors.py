"""The one exception type for bad user input: the CLI prints its message and exits 2."""


class UserError(ValueError):
    """Bad input a user can fix: the message is one line naming the problem and the fix."""
