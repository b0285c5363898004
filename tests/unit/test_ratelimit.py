from shared.ratelimit import TokenBuckets


def test_bursts_then_the_rate():
    buckets = TokenBuckets(rate=2.0, burst=3.0)
    assert [buckets.take("t1", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("t1", 0.0) == 0.5  # one token comes back every 0.5 s
    assert buckets.take("t2", 0.0) == 0.0  # tenants do not share a bucket
    assert buckets.take("t1", 0.5) == 0.0
    assert buckets.take("t1", 0.5) > 0
    assert [buckets.take("t1", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # refills only up to the burst
    assert buckets.take("t1", 100.0) > 0
