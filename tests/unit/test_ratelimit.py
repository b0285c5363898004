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


def test_idle_buckets_expire_and_memory_is_bounded():
    buckets = TokenBuckets(rate=1.0, burst=2.0, max_keys=100)
    for i in range(10_000):
        buckets.take(f"made-up-{i}", now=0.0)
    assert len(buckets) == 100  # least recently used dropped beyond max_keys
    buckets.take("fresh", now=10.0)  # everyone else has refilled completely: the same as no bucket
    assert len(buckets) == 1


def test_a_spent_bucket_is_not_forgotten_by_expiry():
    buckets = TokenBuckets(rate=1.0, burst=2.0)
    assert [buckets.take("t1", 0.0) for _ in range(3)] == [0.0, 0.0, 1.0]
    buckets.take("other", 0.5)
    assert buckets.take("t1", 0.5) == 0.5  # still empty: not dropped as if full


def test_take_all_spends_every_bucket_or_none():
    buckets = TokenBuckets(rate=1.0, burst=1.0)
    assert buckets.take_all(["tenant:a", "sub:u"], 0.0) == 0.0
    assert buckets.take_all(["tenant:b", "sub:u"], 0.0) == 1.0  # the subject's bucket is empty
    assert buckets.take_all(["tenant:b"], 0.0) == 0.0  # and tenant:b was not charged for the refusal


def test_keys_that_may_not_create_buckets_never_do():
    buckets = TokenBuckets(rate=1.0, burst=5.0)
    for i in range(1000):
        buckets.take_all([f"tenant:made-up-{i}", "sub:operator"], 0.0, create=[False, True])
    assert len(buckets) == 1  # only the subject's
