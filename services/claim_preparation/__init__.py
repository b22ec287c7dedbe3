"""NodePrepareResources / NodeUnprepareResources work: claims, opaque config, MIG, CDI, checkpoint."""
