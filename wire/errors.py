"""The one exception the wire contract raises."""


class WireError(ValueError):
    """A topic or payload that does not follow the wire contract; the message says why."""
