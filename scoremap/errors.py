"""Errors of the core, each naming the file or value at fault. Callers decide how to show them.

The scoring CLI turns them into one line and exit code 2 (or one failed slide); the viewer into one
4xx JSON answer (viewer/errors.py). None of them knows about config keys or HTTP.
"""


class ScoreMapError(ValueError):
    """Base of the core's errors: a message fit to show to a user."""


class BlockmapError(ScoreMapError):
    """A blockmap file is missing a dataset or attribute, or they are malformed or disagree.

    The message starts with the file's path (for logs and the CLI); `reason` is the same without
    it (for a client, who must not learn the server's folders).
    """

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class UnknownColormap(ScoreMapError):
    """A colormap name matplotlib does not know; the message suggests close names."""


class SlideOpenError(ScoreMapError):
    """A slide file is missing, or neither OpenSlide nor Pillow can read it.

    `path` and `reason` are kept apart so that the viewer can say why without showing a client
    the server's folders.
    """

    def __init__(self, message: str, *, path: object = None, reason: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason or message


class ParameterError(ScoreMapError):
    """A value a user chose (a class, a normalisation, a threshold, an opacity) that is not allowed.

    `name` is the parameter as the caller spells it (`class`, `--class`); `expected` the form it
    must have, which callers with their own wording (the config's "<key> must be ...") reuse.
    """

    def __init__(self, name: str, value: object, expected: str) -> None:
        shown = repr(value) if isinstance(value, str) else str(value)
        super().__init__(f"{name} must be {expected}, got {shown[:80]}")
        self.name, self.value, self.expected = name, value, expected
