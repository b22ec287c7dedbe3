"""Fixtures every test may use: real nats-server (single or cluster), the bus, spans, the Kubernetes API server."""

pytest_plugins = ["tests.support.nats_fixture", "tests.support.kubeapi_fixture"]
