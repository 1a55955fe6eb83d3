"""What happened, for whoever listens: the jobs and instances rooms send these
when a status really moves, and ``dashboard.notify`` receives them (connected
in ``DashboardConfig.ready``), so the senders never import the receivers.

Senders send inside the transaction that made the move, so an event is
recorded exactly when the move is. A receiver runs in that transaction too: it
may only write rows and enqueue work on commit, never call out over the
network or take long.
"""

from __future__ import annotations

from django.dispatch import Signal

#: Jobs reached a terminal status. Keyword arguments: ``job_ids`` (list of
#: ints; a poll round ends many at once) and ``status`` (completed, failed or
#: cancelled, the same for all of them).
job_ended = Signal()

#: Items of a job that has scorers just completed, sent in the transaction
#: that writes their outputs (``dashboard.evals`` scores them there, so no
#: second pass over the table). Keyword arguments: ``job_id``, ``scorers``
#: (the job's normalized scorer dicts) and ``items`` (the Item objects, as
#: written).
items_completed = Signal()

#: A model instance moved to another status. Keyword arguments:
#: ``instance_id`` and ``status`` (the new one).
instance_changed = Signal()
