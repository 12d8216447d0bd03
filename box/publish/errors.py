"""The one error type publishing raises: its message is safe to show (no token in it)."""


class PublishError(Exception):
    """Publishing cannot go on as asked; the message says what is wrong and what to do."""
