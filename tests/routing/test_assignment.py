"""Sticky assignment: a user always lands in the same arm, and shares follow the weights."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from routing.assignment import BUCKETS, bucket, rollout_arm, weighted_index

USERS = [f"user-{n}" for n in range(10_000)]


def test_a_bucket_is_the_same_in_another_python_process() -> None:
    here = [bucket("salt", user) for user in USERS[:50]]
    code = (
        "from routing.assignment import bucket;"
        "print(','.join(str(bucket('salt', f'user-{n}')) for n in range(50)))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert there == ",".join(map(str, here))


def test_the_same_user_always_lands_in_the_same_arm_and_bucket() -> None:
    for user in USERS[:500]:
        assert bucket("exp", user) == bucket("exp", user)
        assert weighted_index([50, 50], bucket("exp", user)) == weighted_index(
            [50, 50], bucket("exp", user)
        )
        assert rollout_arm(25, bucket("r", user)) == rollout_arm(25, bucket("r", user))


def test_experiment_shares_match_the_weights_within_two_points_over_ten_thousand_users() -> None:
    for weights in ([50, 50], [90, 10], [20, 30, 50], [1, 1, 1, 1]):
        counts = Counter(weighted_index(weights, bucket("exp-salt", user)) for user in USERS)
        total = sum(weights)
        for index, weight in enumerate(weights):
            assert abs(counts[index] / len(USERS) - weight / total) <= 0.02, (weights, counts)


def test_rollout_shares_match_the_percentage_within_two_points_over_ten_thousand_users() -> None:
    for percent in (0, 1, 25, 50, 75, 100):
        new = sum(rollout_arm(percent, bucket("rollout-salt", user)) == "new" for user in USERS)
        assert abs(new / len(USERS) - percent / 100) <= 0.02, (percent, new)


def test_a_user_on_the_new_path_stays_there_as_the_rollout_advances() -> None:
    for user in USERS[:2000]:
        b = bucket("r", user)
        arms = [rollout_arm(p, b) for p in (0, 25, 50, 100)]
        first_new = arms.index("new") if "new" in arms else len(arms)
        assert all(arm == "new" for arm in arms[first_new:])


def test_experiments_with_different_salts_split_users_independently() -> None:
    pairs = Counter(
        (weighted_index([50, 50], bucket("one", u)), weighted_index([50, 50], bucket("two", u)))
        for u in USERS
    )
    for cell in ((0, 0), (0, 1), (1, 0), (1, 1)):
        assert abs(pairs[cell] / len(USERS) - 0.25) <= 0.02


def test_buckets_cover_the_whole_range_and_zero_weights_get_nobody() -> None:
    assert {weighted_index([0, 100], b) for b in range(BUCKETS)} == {1}
    assert weighted_index([50, 50], 0) == 0 and weighted_index([50, 50], BUCKETS - 1) == 1
    assert weighted_index([], 10) == 0
