"""ComputeDomain controller and node-side IMEX channel preparation."""
