"""Token buckets per key: 429 with Retry-After, recovery, per-key rate and burst, pruning."""

from __future__ import annotations

from gateway.limits import Bucket, RateLimiter, retry_after_header

from .conftest import FakeClock, auth


def test_bucket_refills_at_rate_up_to_burst():
    b = Bucket(rate=2.0, burst=3.0, tokens=3.0, last=0.0)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == 0.5
    assert b.take(0.5) == 0.0
    assert b.take(100.0) == 0.0 and b.tokens == 2.0   # capped at burst


def test_prune_drops_idle_buckets_only():
    rl = RateLimiter(idle_s=10.0)
    rl.take("a", 1.0, 1, 0.0)
    rl.take("b", 1.0, 1, 8.0)
    assert rl.prune(12.0) == 1 and len(rl) == 1


def test_retry_after_is_whole_seconds():
    assert retry_after_header(0.01) == "1" and retry_after_header(1.2) == "2"


async def test_429_with_retry_after_then_recovers(client, keystore, gw):
    clock = FakeClock()
    gw.clock = clock
    key, _ = keystore.create("slow", frozenset({"models:read"}), rate=0.5, burst=2)
    assert [(await client.get("/api/v1/models", headers=auth(key))).status for _ in range(2)] == [200, 200]
    r = await client.get("/api/v1/models", headers=auth(key))
    assert r.status == 429 and r.headers["Retry-After"] == "2"
    assert (await r.json())["error"]["kind"] == "rate_limited"
    clock.t += 1.0
    assert (await client.get("/api/v1/models", headers=auth(key))).status == 429
    clock.t += 1.0
    assert (await client.get("/api/v1/models", headers=auth(key))).status == 200


async def test_limits_are_per_key(client, keystore, gw):
    gw.clock = FakeClock()
    a, _ = keystore.create("a", frozenset({"models:read"}), rate=1.0, burst=1)
    b, _ = keystore.create("b", frozenset({"models:read"}), rate=1.0, burst=1)
    assert (await client.get("/api/v1/models", headers=auth(a))).status == 200
    assert (await client.get("/api/v1/models", headers=auth(a))).status == 429
    assert (await client.get("/api/v1/models", headers=auth(b))).status == 200
