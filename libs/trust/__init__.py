"""Trust on the bus: who may publish, serve, read and administer what (roles and their permissions), the NATS
JWTs and credentials files that carry them, and the standalone authority that issues them.

Nothing here talks to NATS: services connect with what it produces (``libs.bus.connection``), and nats-server
enforces it. See docs/security.md.
"""
