"""engine.refresh.fairqueue: the order warm starts refreshes in.

No threads: each test takes and finishes jobs by hand, so every step of
the order is checked, not only that everything ran.
"""

from __future__ import annotations

from engine.refresh.fairqueue import FairQueue


def queue(items, group=lambda item: item[0], key=lambda item: item):
    return FairQueue(items, group_of=group, key_of=key)


def test_jobs_keep_their_index_and_one_group_goes_first_come_first_served():
    q = queue([("a", n) for n in range(5)])
    taken = [q.take() for _ in range(5)]
    assert [job.index for job in taken] == [0, 1, 2, 3, 4]
    assert [job.item for job in taken] == [("a", n) for n in range(5)]
    assert q.take() is None and q.left == 5
    for job in taken:
        q.finish(job)
    assert q.left == 0 and not q.waiting


def test_the_next_job_goes_to_the_group_with_the_fewest_in_flight():
    q = queue([("hang", n) for n in range(10)] + [("ok", n) for n in range(10)])
    first = [q.take() for _ in range(4)]
    assert sorted(job.group for job in first) == ["hang", "hang", "ok", "ok"]
    # the "ok" jobs end; the hanging ones do not: the freed slots go to "ok"
    for job in first:
        if job.group == "ok":
            q.finish(job)
    assert [q.take().group for _ in range(2)] == ["ok", "ok"]


def test_a_lone_group_gets_every_slot():
    q = queue([("one", n) for n in range(8)])
    assert all(q.take() is not None for _ in range(8))


def test_one_key_never_twice_at_once_and_the_set_aside_come_back_first_in_order():
    items = [("g", n) for n in range(6)]
    q = queue(items, key=lambda item: item[1] % 2)  # keys 0 and 1
    a, b = q.take(), q.take()
    assert (a.key, b.key) == (0, 1)
    assert q.take() is None  # 2..5 all wait behind their key
    assert q.waiting
    q.finish(a)  # key 0 free: its first waiting job, 2, then nothing more
    c = q.take()
    assert c.index == 2 and q.take() is None
    q.finish(b)
    q.finish(c)
    rest = [q.take(), q.take()]
    assert sorted(job.index for job in rest) == [3, 4]  # one of each key
    assert q.take() is None  # 5 waits behind key 1 again


def test_limit_keeps_room_for_other_groups():
    q = queue([("a", n) for n in range(6)])
    assert [q.take(limit=2) is not None for _ in range(3)] == [True, True, False]
    q.add(("b", 0))
    job = q.take(limit=2)
    assert job.item == ("b", 0) and job.index == 6
    assert q.take() is not None  # no limit: "a" again


def test_add_after_start():
    q = queue([])
    assert q.take() is None and q.left == 0
    q.add(("a", 1))
    job = q.take()
    assert job.index == 0 and q.left == 1
    q.finish(job)
    assert q.left == 0


def test_exempt_groups_ignore_the_limit():
    q = queue([("a", n) for n in range(4)] + [("b", n) for n in range(4)])
    taken = [q.take(limit=1, exempt={"a"}) for _ in range(6)]
    assert [job.group if job else None for job in taken].count("b") == 1
    assert [job.group for job in taken if job].count("a") == 4


def test_a_job_off_the_wire_weighs_no_more_on_its_group_but_keeps_its_key():
    # ("ok", 0) twice: one key, so never both at once
    q = queue([("hang", n) for n in range(4)] + [("ok", n) for n in range(4)] + [("ok", 0)])
    first = [q.take() for _ in range(4)]
    assert [job.item for job in first] == [("hang", 0), ("ok", 0), ("hang", 1), ("ok", 1)]
    # "ok" answered, its staples not stored yet: the freed slots still go to
    # "ok", not to the hanging group as if "ok" were as busy
    ok0, ok1 = first[1], first[3]
    for job in (ok0, ok1, ok0):  # twice counts once
        q.off_the_wire(job)
    assert [q.take().item for _ in range(2)] == [("ok", 2), ("ok", 3)]
    # the second ("ok", 0) waits for the first to finish, not to be answered
    assert [q.take().item for _ in range(2)] == [("hang", 2), ("hang", 3)]
    assert q.take() is None
    q.finish(ok0)
    assert q.take().item == ("ok", 0)
    q.finish(ok1)  # after off_the_wire: not taken off its group twice
    assert q._in_flight == {"hang": 4, "ok": 3}
    assert q.left == 7
