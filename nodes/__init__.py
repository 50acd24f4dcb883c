"""One LangGraph node per stage (`ech0_moe.nodes`); each is a small function over the shared `State`.

Every node takes the run's `services` (a `Services` or `ServiceRegistry`), which
`build_graph` binds; nothing is looked up from a module-level cache.
"""

from ech0_moe.nodes.answer import answer
from ech0_moe.nodes.combine import combine
from ech0_moe.nodes.compress import compress
from ech0_moe.nodes.expert_answer import expert_answer
from ech0_moe.nodes.learn import learn
from ech0_moe.nodes.prepare import prepare
from ech0_moe.nodes.retrieve import retrieve
from ech0_moe.nodes.route import route
from ech0_moe.nodes.swap_load import swap_load

__all__ = [
    "answer",
    "combine",
    "compress",
    "expert_answer",
    "learn",
    "prepare",
    "retrieve",
    "route",
    "swap_load",
]
