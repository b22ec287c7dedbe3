"""The kubelet's face: registration and DRA gRPC sockets, turned into NATS requests."""
