import pytest

from tickets import Ticket, format_eur, is_family_bundle, order_total, ticket_price


def test_adult_child_and_infant_prices():
    assert ticket_price(Ticket(age=35)) == 1200
    assert ticket_price(Ticket(age=7)) == 600
    assert ticket_price(Ticket(age=2)) == 0


def test_family_bundle_gets_ten_percent_off():
    order = [Ticket(age=40), Ticket(age=38), Ticket(age=8), Ticket(age=6)]
    assert is_family_bundle(order)
    assert order_total(order) == 3240
    assert format_eur(order_total(order)) == "32.40 €"


def test_no_bundle_with_one_adult():
    order = [Ticket(age=40), Ticket(age=8), Ticket(age=6)]
    assert not is_family_bundle(order)
    assert order_total(order) == 2400


def test_negative_age_is_rejected():
    with pytest.raises(ValueError):
        Ticket(age=-1)
