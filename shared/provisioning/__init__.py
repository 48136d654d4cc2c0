"""Device provisioning, the cloud's side: pre-registration, DPS's custom allocation, revocation.

See docs/provisioning.md."""
