"""What every driver's node service reads of a ResourceClaim, and the problems it can have."""
