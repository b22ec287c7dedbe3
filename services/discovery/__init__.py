"""Device inventory (NVML or simulated) and ResourceSlices for this node."""
