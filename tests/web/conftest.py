"""The webhook receiver on loopback and the recorded retries, for the
webhooks pages' tests (defined beside the notify tests)."""

from tests.notify.conftest import receiver, scheduled, wall  # noqa: F401  (fixtures)
