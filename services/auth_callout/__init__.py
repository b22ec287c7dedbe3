"""The NATS auth callout: turns a pod's ServiceAccount token into a user of its own node (cluster mode)."""
