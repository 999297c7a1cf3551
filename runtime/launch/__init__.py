"""Serving stacks launched from the plan: provisioning, launch, readiness, identity checks, teardown."""
