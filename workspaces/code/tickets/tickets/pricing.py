"""Prices of show tickets, in euro cents.

Children under 12 pay half price, children under 3 are free (on a lap), and an order
with at least two adults and at least two paying children gets the family bundle:
10 % off the whole order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ADULT_PRICE_CENTS = 1200
CHILD_DISCOUNT_PERCENT = 50
CHILD_AGE_LIMIT = 12  # children *under* this age pay the child price
FREE_AGE_LIMIT = 3  # children under this age are free
FAMILY_MIN_ADULTS = 2
FAMILY_MIN_CHILDREN = 2
FAMILY_DISCOUNT_PERCENT = 10


@dataclass(frozen=True)
class Ticket:
    """One seat for one person; ``age`` in whole years."""

    age: int

    def __post_init__(self) -> None:
        if self.age < 0:
            raise ValueError(f"age must be >= 0, got {self.age}")


def is_child(ticket: Ticket) -> bool:
    """True for a paying child: from FREE_AGE_LIMIT up to, not including, CHILD_AGE_LIMIT."""
    return FREE_AGE_LIMIT <= ticket.age <= CHILD_AGE_LIMIT


def ticket_price(ticket: Ticket) -> int:
    """Price of one ticket in cents, before any bundle discount."""
    if ticket.age < FREE_AGE_LIMIT:
        return 0
    if is_child(ticket):
        return ADULT_PRICE_CENTS * (100 - CHILD_DISCOUNT_PERCENT) // 100
    return ADULT_PRICE_CENTS


def is_family_bundle(tickets: Iterable[Ticket]) -> bool:
    """True when the order has enough adults and paying children for the family bundle."""
    tickets = list(tickets)
    children = sum(1 for t in tickets if is_child(t))
    adults = sum(1 for t in tickets if t.age >= CHILD_AGE_LIMIT)
    return adults >= FAMILY_MIN_ADULTS and children >= FAMILY_MIN_CHILDREN


def order_total(tickets: Iterable[Ticket]) -> int:
    """Total of an order in cents, family bundle included (rounded down to the cent)."""
    tickets = list(tickets)
    subtotal = sum(ticket_price(t) for t in tickets)
    if is_family_bundle(tickets):
        return subtotal * (100 - FAMILY_DISCOUNT_PERCENT) // 100
    return subtotal


def format_eur(cents: int) -> str:
    """Format cents as euros, e.g. 3240 -> '32.40 €'."""
    return f"{cents // 100}.{cents % 100:02d} €"
