"""The instances' part of the once-a-minute sweep."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import Q

from dashboard.core import clock
from dashboard.core import queue as tasks_queue
from dashboard.models import ModelInstance
from dashboard.status import INSTANCE_LIVE, InstanceStatus

from .poller import deadline_message
from .services import instance_credentials, instance_fail

logger = logging.getLogger(__name__)

#: The sweep nudges a credential whose checks are this late (nobody is polling it).
SWEEP_GRACE_SECONDS = 15
#: The sweep fails requested/loading rows this long past their deadline itself.
DEADLINE_BACKSTOP_SECONDS = 120
#: The sweep looks for instances started elsewhere every this many minutes.
RECONCILE_EVERY_MINUTES = 5


def instances_sweep() -> dict[str, int]:
    """Run every minute by the scheduler: past deadlines fail, credentials whose
    checks are late get a poller, stuck stops are taken up again, and now and
    then every Bytez credential is asked for instances started elsewhere."""
    at = clock.now()
    counts = {
        "instance_deadline": 0,
        "instance_pollers": 0,
        "instance_reconciles": 0,
        "instance_stops": 0,
    }
    overdue = ModelInstance.objects.filter(
        status__in=[InstanceStatus.REQUESTED, InstanceStatus.LOADING],
        deadline_at__lt=at - timedelta(seconds=DEADLINE_BACKSTOP_SECONDS),
    )
    for instance in overdue:
        counts["instance_deadline"] += instance_fail(instance.pk, deadline_message(instance))
    late = (
        ModelInstance.objects.filter(status__in=INSTANCE_LIVE)
        .filter(
            Q(next_check_at__lte=at - timedelta(seconds=SWEEP_GRACE_SECONDS))
            | Q(next_check_at__isnull=True)
        )
        .values_list("credential_id", flat=True)
        .distinct()
    )
    for credential_id in late:
        tasks_queue.nudge_instances(credential_id)
        counts["instance_pollers"] += 1
    # A stop whose task was lost, or whose worker died holding its claim.
    stuck = ModelInstance.objects.filter(
        status=InstanceStatus.STOPPING,
        next_check_at__lte=at - timedelta(seconds=SWEEP_GRACE_SECONDS),
    ).values_list("pk", flat=True)
    for instance_id in stuck:
        tasks_queue.nudge_instance_stop(instance_id)
        counts["instance_stops"] += 1
    if at.minute % RECONCILE_EVERY_MINUTES == 0:
        for credential_id in instance_credentials().values_list("pk", flat=True):
            tasks_queue.nudge_reconcile(credential_id)
            counts["instance_reconciles"] += 1
    return counts
