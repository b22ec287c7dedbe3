"""The admission webhook: refuses a ResourceClaim, ResourceClaimTemplate or DeviceClass whose gpudra opaque config
does not decode, when it is created or changed, instead of when its pod starts (cluster mode)."""
