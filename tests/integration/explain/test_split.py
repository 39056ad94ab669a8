"""The explain split on a harvested store (the tiny default): shown and held-out contexts are disjoint by identity
and neither list repeats a context."""

from qscope.explain.prompts import context_key, split_examples


def test_split_of_a_harvested_store_never_holds_out_a_shown_context(tiny_db):
    """The harvest stores a token among a feature's top activations again as an interval sample (same window,
    same position); the split uses each context once: no repeats shown, none held out, none both."""
    from qscope.store.queries import Store

    store = Store(tiny_db)
    checked = repeats_in_store = 0
    with store.reader(timeout_s=300) as r:
        for sae_id in store.saes:
            live = r.cur.execute("SELECT feature FROM features WHERE sae_id = ? AND n_fired > 0", [sae_id]).fetchall()
            for (f,) in live:
                detail = r.feature(sae_id, f)
                assert detail is not None
                every = detail.top + [c for b in detail.intervals for c in b.contexts]
                keys = [context_key(c) for c in every if c.act > 0]
                repeats_in_store += len(keys) > len(set(keys))
                fx = split_examples(detail)
                shown, held = [e.key for e in fx.shown], [e.key for e in fx.held_out]
                assert len(set(shown)) == len(shown), (sae_id, f, "a context shown twice")
                assert len(set(held)) == len(held), (sae_id, f, "a context held out twice")
                assert not set(shown) & set(held), (sae_id, f, "a held-out context was shown")
                assert len(held) == min(10, len(set(keys)) - len(shown))  # as many held out as there are left
                checked += 1
    assert checked > 100 and repeats_in_store > checked // 2  # the store does repeat contexts: the test bites
