"""Failover: on a three-server cluster with every stream and bucket replicated three times, SIGKILL of the server
that leads the claim and health streams (and holds claim_preparation's connection), in the middle of prepares and
a burst of health events. The system carries on; afterwards every claim event and every verdict is there once
and delivered, and the killed server, started again on its old port and store, catches up and leads again.

How the round runs and what the audit checks: ``failover_support``. Here the controller's durable consumer keeps
its leader on a surviving server: a nak lost with that leader leaves its event to the consumer's 60-s ack wait,
which ``python -m bench failover`` measures (docs/benchmarks.md, "Failover").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.natsserver import EmbeddedNats
from tests.cluster.failover_support import Issuer, Round, running_system
from tests.support.nats_fixture import authority_for

pytestmark = pytest.mark.slow


async def test_the_system_carries_on_when_the_leader_of_the_claim_and_health_streams_dies(
    nats_cluster: list[EmbeddedNats], tmp_path: Path
) -> None:
    authority, users = authority_for(nats_cluster[0].url)
    issuer = Issuer(authority, users, ",".join(server.url for server in nats_cluster))
    async with running_system(nats_cluster, issuer, tmp_path) as system:
        result = await Round(system, 0, kill_consumer_leader=False).run()
    audit = result.audit
    print(  # shown with -s: what this run went through
        f"victim {result.victim} (also led {result.other_led or 'no bucket'}); {result.service_errors}; "
        f"{result.request_errors} kubelet errors, {result.monitor_publish_errors} monitor publish errors; "
        f"{audit.claim_events_owed} claim events, {audit.health_events} health events, "
        f"last verdict {audit.last_verdict_seconds:.1f}s after the kill"
    )
    assert audit.problems == []
    assert audit.claim_events_stored == audit.claim_events_delivered == audit.claim_events_owed > 0
    assert audit.verdicts + audit.health_dead_lettered == audit.health_events == 96
    assert audit.verdicts_delivered == audit.verdicts
    assert (audit.stored_twice, audit.announced_twice, audit.claims_out_of_order) == (0, 0, 0)
    assert result.monitor_publish_errors > 0, "the second half of the burst went out while the leader was gone"
    assert any(call.started > result.killed_at for call in result.calls), "prepares went on after the kill"
