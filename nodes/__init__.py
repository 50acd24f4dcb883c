"""One LangGraph node per stage; each is a small function over the shared `State`."""

from nodes.answer import answer
from nodes.compress import compress
from nodes.ensemble import combine_answers, expert_answer
from nodes.learn import learn
from nodes.prepare import prepare
from nodes.retrieve import retrieve
from nodes.route import route
from nodes.swap_load import swap_load

__all__ = [
    "answer",
    "combine_answers",
    "compress",
    "expert_answer",
    "learn",
    "prepare",
    "retrieve",
    "route",
    "swap_load",
]
