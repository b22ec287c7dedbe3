"""What every driver's node service reads of a ResourceClaim, the problems it can have, and the opaque config
API users write into it (``configapi``), shared so every reader of a claim decodes it the same way."""
