"""Money and provider names in templates: ``{% load cost %}``, then
``{{ amount|usd }}`` ("no price set" for None, never $0),
``{{ price|per_mtok }}`` and ``{{ slug|provider_label }}``."""

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
def per_mtok(amount: Decimal | None) -> str:
    """A price as set: 0.05, 1.234567, 12.5 (no trailing zeros)."""
    if amount is None:
        return ""
    text = f"{Decimal(amount):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@register.filter
def provider_label(slug: str) -> str:
    try:
        return get_provider_class(slug).label
    except KeyError:
        return slug
