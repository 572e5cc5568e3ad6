"""Per-task batch order: covers every example once per epoch, resumable from (epoch, pos), length grouping."""

from __future__ import annotations

import numpy as np

from mtfuse.batching import BatchStream


def test_each_epoch_is_a_permutation_and_seeded() -> None:
    s = BatchStream(np.arange(10), batch_size=4, seed=3)
    epoch = np.concatenate([s.next() for _ in range(s.batches_per_epoch())])
    assert sorted(epoch.tolist()) == list(range(10))
    assert [len(s.next())] == [4] and s.epoch == 1  # the next call starts epoch 2
    again = BatchStream(np.arange(10), batch_size=4, seed=3)
    assert np.concatenate([again.next() for _ in range(3)]).tolist() == epoch.tolist()
    other = BatchStream(np.arange(10), batch_size=4, seed=4)
    assert np.concatenate([other.next() for _ in range(3)]).tolist() != epoch.tolist()


def test_resume_from_state_gives_the_same_batches() -> None:
    a = BatchStream(np.arange(23), batch_size=5, seed=0)
    for _ in range(7):
        a.next()
    state = a.state_dict()
    rest = [a.next().tolist() for _ in range(10)]
    b = BatchStream(np.arange(23), batch_size=5, seed=0)
    b.load_state_dict(state)
    assert [b.next().tolist() for _ in range(10)] == rest


def test_group_by_length_makes_batches_of_similar_length() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=4000)
    plain = BatchStream(lengths, batch_size=16, seed=1)
    grouped = BatchStream(lengths, batch_size=16, seed=1, group_by_length=True)

    def padding(s: BatchStream) -> int:
        total = 0
        for _ in range(s.batches_per_epoch()):
            b = lengths[s.next()]
            total += int((b.max() - b).sum())
        return total

    assert padding(grouped) < padding(plain) / 5
    grouped2 = BatchStream(lengths, batch_size=16, seed=1, group_by_length=True)
    seen = np.concatenate([grouped2.next() for _ in range(grouped2.batches_per_epoch())])
    assert sorted(seen.tolist()) == list(range(4000))


def test_grouped_batches_come_in_random_order_within_their_mega_batch() -> None:
    """Length-sorted mega-batches, but not served long to short: the batch order inside each mega-batch is
    seeded and random, every batch stays whole (similar lengths), and the short last batch comes last."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 500, size=16 * 50 * 2 + 7)  # two full mega-batches and a short last batch
    s = BatchStream(lengths, batch_size=16, seed=1, group_by_length=True)
    batches = [s.next() for _ in range(s.batches_per_epoch())]
    assert [len(x) for x in batches] == [16] * 100 + [7]
    longest = [int(lengths[x].max()) for x in batches[:50]]
    assert longest != sorted(longest, reverse=True)  # not long to short
    spans = [int(lengths[x].max() - lengths[x].min()) for x in batches[:-1]]
    assert max(spans) < 60  # each batch still holds neighbours in length (lengths span 5..500)
    again = BatchStream(lengths, batch_size=16, seed=1, group_by_length=True)
    assert all(np.array_equal(x, again.next()) for x in batches)  # seeded
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
