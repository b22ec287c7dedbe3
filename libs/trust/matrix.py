"""Write the role table of ``docs/security.md`` from ``roles.py``, so the document cannot drift from the code.

``python -m libs.trust.matrix`` rewrites the part between the markers; ``--check`` exits 1 when the committed
document is stale (the test suite runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from libs.events.subjects import node_token
from libs.trust.grants import ANY
from libs.trust.permissions import Permissions
from libs.trust.roles import NODE_ROLES, SERVICE_ROLES, Role, permissions, purpose

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
BEGIN = "<!-- role-matrix:begin (python -m libs.trust.matrix) -->"
END = "<!-- role-matrix:end -->"
EXAMPLE_NODE = "example-node"
PRINCIPAL = "example-client"


def _symbolic(subject: str) -> str:
    return (
        subject.replace(f".{node_token(EXAMPLE_NODE)}.", ".<node>.")
        .replace(f".{node_token(EXAMPLE_NODE)}", ".<node>")
        .replace(PRINCIPAL, "<client>")
    )


def _cell(subjects: frozenset[str]) -> str:
    return "<br>".join(f"`{_symbolic(s)}`" for s in sorted(subjects)) or "—"


def _row(role: Role, granted: Permissions) -> str:
    scope = "its node" if role in NODE_ROLES else "cluster"
    denied = granted.publish_deny | granted.subscribe_deny
    why = purpose(role)
    return (
        f"| **{role}** ({scope}) {why} | {_cell(granted.publish)} | {_cell(granted.subscribe)} | "
        f"{_cell(denied)} | {'yes' if granted.respond else 'no'} |"
    )


def table() -> str:
    """One row per role, for a client named ``<client>`` on node ``<node>`` (a cluster: no standalone store)."""
    lines = [
        "| Role | Publish | Subscribe | Denied (publish or subscribe) | Answers requests |",
        "|---|---|---|---|---|",
    ]
    for role in Role:
        lines.append(_row(role, permissions([role], principal=PRINCIPAL, node=EXAMPLE_NODE)))
    services = ", ".join(f"`{service}`: {' + '.join(roles)}" for service, roles in SERVICE_ROLES.items())
    lines += ["", f"Services and the roles they may hold: {services}. `{ANY}` is any node."]
    return "\n".join(lines)


def rendered(document: str) -> str:
    head, rest = document.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libs.trust.matrix", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when docs/security.md is stale")
    args = parser.parse_args(argv)
    current = DOC.read_text()
    wanted = rendered(current)
    if args.check:
        if current != wanted:
            print(f"stale: {DOC}; run `python -m libs.trust.matrix`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(wanted)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
