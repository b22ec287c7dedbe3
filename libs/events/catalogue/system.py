"""Facts about gpudra itself, so that operators see a crash loop as an event, not only in logs."""

from __future__ import annotations

from libs.events.base import Event


class ServiceCrashed(Event, frozen=True, kw_only=True):
    domain = "system"
    topic = "services"
    summary = "A supervised service exited unexpectedly; it is restarted after a backoff."

    service: str
    exit_code: int
    restarts: int
    restart_in_seconds: float

    def ce_subject(self) -> str:
        return self.service
