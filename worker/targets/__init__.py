"""Delivery targets behind one small protocol: ``send(fire) -> Delivered`` or raise ``DeliveryFailed``."""

from __future__ import annotations

from typing import Protocol

from worker.fire import Delivered, Fire


class Sender(Protocol):
    async def send(self, fire: Fire) -> Delivered: ...
