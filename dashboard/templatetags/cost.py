"""Money and provider names in templates: ``{% load cost %}``, then
``{{ amount|usd }}`` ("no price set" for None, never $0) and
``{{ slug|provider_label }}``."""

from __future__ import annotations

from decimal import Decimal

from django import template

from dashboard.jobs.cost import money
from providers import get_provider_class

register = template.Library()


@register.filter
def usd(amount: Decimal | float | None) -> str:
    return money(amount)


@register.filter
def provider_label(slug: str) -> str:
    try:
        return get_provider_class(slug).label
    except KeyError:
        return slug
