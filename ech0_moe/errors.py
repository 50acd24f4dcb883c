"""One exception type for every problem a user can fix; the CLI prints it as one line.

`Ech0Error` is a `RuntimeError` and the input errors are `ValueError`s as well: LangGraph's
server (Studio, `langgraph_sdk`) passes the message of those on to the client instead of
"An internal error occurred"."""


class Ech0Error(RuntimeError):
    """A user-facing error: the message names the problem and where it is."""


class ConfigError(Ech0Error, ValueError):
    """`experts.yaml` (or another setting) is missing or invalid."""


class BudgetError(Ech0Error):
    """An expert cannot fit in the memory budget."""


class BackendError(Ech0Error):
    """A model runtime failed to load a model or to answer. `transient` failures (a dropped
    connection, a crashed runner) are worth retrying; a corrupt file is not. `silent`: the host
    never answered in time (hung or trickling; not retried: that would multiply the wait)."""

    def __init__(self, message: str, *, transient: bool = False, silent: bool = False) -> None:
        super().__init__(message)
        self.transient = transient
        self.silent = silent


class InputError(Ech0Error, ValueError):
    """A run's input or settings are out of range (an empty query, an unknown mode, top_k=0)."""


class KnowledgeBaseError(Ech0Error):
    """The knowledge base cannot be read or written (damaged files, full disk): the graph answers without it."""


def shown(value: object, limit: int = 80) -> str:
    """`repr(value)` cut to about `limit` characters: an error line quotes a value, never all of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"
