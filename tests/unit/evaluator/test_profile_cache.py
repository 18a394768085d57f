"""The evaluator's profile cache: decoded entries handed over, older ones kept as BSON."""

from datetime import UTC, datetime

from audience_evaluator.adapters.mongo import ProfileCache


def profile(n: int) -> dict[str, object]:
    return {"_id": f"p/u{n}", "version": 1, "seen": datetime(2026, 1, 1, tzinfo=UTC)}


def test_recent_profile__taken__is_the_written_dict_and_leaves_the_cache() -> None:
    cache = ProfileCache(capacity=10, decoded_capacity=5)
    written = profile(1)
    cache.put(written)
    assert cache.take("p/u1") is written
    # Taken means owned: a second taker reads the store instead of sharing the dict.
    assert cache.take("p/u1") is None


def test_older_profiles__kept_as_bson__taken_as_equal_fresh_dicts() -> None:
    cache = ProfileCache(capacity=10, decoded_capacity=2)
    written = [profile(n) for n in range(4)]
    for doc in written:
        cache.put(doc)
    assert len(cache) == 4
    oldest = cache.take("p/u0")
    assert oldest == written[0]
    assert oldest is not written[0]
    # The dates come back timezone-aware, as the store's reads give them.
    assert oldest is not None
    assert oldest["seen"].tzinfo is not None
    assert cache.take("p/u3") is written[3]


def test_capacity__least_recently_written_out_first() -> None:
    cache = ProfileCache(capacity=3, decoded_capacity=1)
    for n in range(5):
        cache.put(profile(n))
    assert len(cache) == 3
    assert cache.take("p/u0") is None
    assert cache.take("p/u1") is None
    assert cache.take("p/u2") is not None
    assert cache.take("p/u4") is not None


def test_decoded_tier_larger_than_capacity__bounded_by_capacity() -> None:
    cache = ProfileCache(capacity=2, decoded_capacity=5)
    for n in range(4):
        cache.put(profile(n))
    assert len(cache) == 2
    assert cache.take("p/u3") is not None
    assert cache.take("p/u0") is None


def test_drop__removes_from_either_tier() -> None:
    cache = ProfileCache(capacity=10, decoded_capacity=1)
    cache.put(profile(1))
    cache.put(profile(2))  # p/u1 moves to the BSON tier
    cache.drop(["p/u1", "p/u2"])
    assert len(cache) == 0


def test_no_capacity__caches_nothing() -> None:
    cache = ProfileCache(capacity=0, decoded_capacity=0)
    cache.put(profile(1))
    assert cache.take("p/u1") is None
