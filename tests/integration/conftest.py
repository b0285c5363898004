from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import nats
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.auth import ADMIN, EDITOR, VIEWER
from api.devmode import mint_dev_token
from shared.messaging.subjects import Namespace
from shared.settings import Settings
from tests.integration.receivers import HttpReceiver

NAMESPACE = Namespace()  # the default layout: tenants.<tenant>.<topic>, queues.<tenant>.<topic>


def event_subject(tenant_id: str, topic: str) -> str:
    return NAMESPACE.event_subject(tenant_id, topic)


@pytest.fixture(scope="module")
def settings(db_url: str, dev_dir: Path, nats_url: str) -> Settings:
    # The API gets NATS too: it creates a QUEUE schedule's stream before storing the schedule.
    return Settings(
        postgres_url=db_url,
        nats_url=nats_url,
        auth_mode="dev",
        dev_data_dir=str(dev_dir),
        db_pool_max=4,
        worker_metrics_port=0,
    )


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


Headers = Callable[..., dict[str, str]]


@pytest.fixture
def headers(dev_dir: Path, tenant: str) -> Headers:
    """Request headers for ``tenant`` (or another) with a dev token carrying ``role``."""

    def make(role: str = EDITOR, tenant_id: str | None = None, tenants: list[str] | None = None) -> dict[str, str]:
        tid = tenant_id or tenant
        # One subject per tenant: requests count against the tenant's and the subject's rate limits.
        token = mint_dev_token(dev_dir, tenants if tenants is not None else [tid], [role], subject=f"user-{tid}")
        return {"Authorization": f"Bearer {token}", "X-Tenant-Id": tid}

    return make


__all__ = ["ADMIN", "EDITOR", "VIEWER"]


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[HttpReceiver]:
    """A local HTTP target for the module's deliveries (tests/integration/receivers.py)."""
    r = HttpReceiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[nats.NATS]:
    """A NATS connection of the test's own, to subscribe to what workers publish."""
    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()
