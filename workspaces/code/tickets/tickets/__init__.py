"""Ticket pricing for Studio Marie's shows."""

from tickets.pricing import (
    ADULT_PRICE_CENTS,
    Ticket,
    format_eur,
    is_family_bundle,
    order_total,
    ticket_price,
)

__all__ = [
    "ADULT_PRICE_CENTS",
    "Ticket",
    "format_eur",
    "is_family_bundle",
    "order_total",
    "ticket_price",
]
__version__ = "0.3.0"
