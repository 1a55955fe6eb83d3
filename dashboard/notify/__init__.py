"""Notifications on events: webhooks (Standard Webhooks, with their delivery
log) and e-mail to the user whose job ended.

``receivers`` turns ``dashboard.core.events`` into outbox rows inside the
sender's transaction; ``webhooks`` and ``emails`` send them from tasks;
``outbox`` is the claim/settle/backoff both share; ``sweep`` nudges the rows
that are due. Nothing here is imported by jobs or instances."""
