"""GPU fault detection on the node and the cluster-wide remediation controller."""
