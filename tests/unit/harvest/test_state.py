"""Harvest math without a model: the segmented reservoir against a naive reference, FeatureState on hand-made
and random activations, exact merges, checkpoints of the state."""

import pytest
import torch

from qscope.harvest.reservoir import EMPTY, Reservoir
from qscope.harvest.state import (
    HIST_EDGES,
    FeatureState,
    StateSpec,
    fired_index,
    hist_bin,
    interval_bin,
    key_generator,
    next_pow2_above,
    top_key,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def naive_reservoir(seg, key, n_segments, r):
    """{segment: [(key, index), ...]} the r smallest keys per segment, by sorting everything."""
    out = {}
    for s in range(n_segments):
        rows = sorted((int(k), i) for i, (g, k) in enumerate(zip(seg.tolist(), key.tolist(), strict=True)) if g == s)
        out[s] = rows[:r]
    return out


def test_reservoir_matches_naive_reference():
    gen = torch.Generator().manual_seed(1)
    n_seg, r, m = 7, 4, 300
    seg = torch.randint(0, n_seg, (m,), generator=gen)
    seg[seg == 6] = 5  # segment 6 stays empty
    key = torch.randperm(10 * m, generator=gen)[:m]  # unique keys
    res = Reservoir(n_seg, r, {"idx": ((), torch.int64), "vec": ((2,), torch.float32)})
    for start in range(0, m, 37):  # several batches of uneven size
        part = slice(start, start + 37)
        offset = start

        def payload(i, offset=offset):
            return {"idx": i + offset, "vec": torch.stack([(i + offset).float(), -(i + offset).float()], 1)}

        res.offer(seg[part], key[part], payload)
    want = naive_reservoir(seg, key, n_seg, r)
    for s in range(n_seg):
        got_keys = [k for k in res.keys_SR[s].tolist() if k != EMPTY]
        assert got_keys == [k for k, _ in want[s]]
        ranked = res.ranked_payload()
        assert ranked["idx"][s, : len(got_keys)].tolist() == [i for _, i in want[s]]
        assert ranked["vec"][s, : len(got_keys), 1].tolist() == [-float(i) for _, i in want[s]]


def test_reservoir_merge_equals_union():
    gen = torch.Generator().manual_seed(2)
    n_seg, r, m = 5, 3, 200
    seg, key = torch.randint(0, n_seg, (m,), generator=gen), torch.randperm(m, generator=gen)
    spec = {"idx": ((), torch.int64)}
    whole, a, b = Reservoir(n_seg, r, spec), Reservoir(n_seg, r, spec), Reservoir(n_seg, r, spec)
    whole.offer(seg, key, lambda i: {"idx": i})
    pick = torch.rand(m, generator=gen) < 0.5
    for res, mask in ((a, pick), (b, ~pick)):
        where = mask.nonzero().squeeze(1)
        res.offer(seg[where], key[where], lambda i, where=where: {"idx": where[i]})
    a.offer_entries(*b.entries())
    assert torch.equal(a.keys_SR, whole.keys_SR)
    assert torch.equal(a.ranked_payload()["idx"], whole.ranked_payload()["idx"])


def test_scales_and_bins_are_exact():
    x = torch.tensor([0.0, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0, 1e-30])
    assert next_pow2_above(x).tolist() == [0.0, 0.5, 1.0, 2.0, 2.0, 4.0, 4.0, 2.0**-99]
    a = torch.rand(10_000, generator=torch.Generator().manual_seed(3)) * 8
    s = torch.full_like(a, 8.0)
    # doubling the scale pair-merges bins: bin j of 2S = bins 2j and 2j + 1 of S
    assert torch.equal(interval_bin(a, 2 * s, 16), interval_bin(a, s, 16) // 2)
    assert interval_bin(torch.tensor([0.0, 0.5, 7.999]), torch.full((3,), 8.0), 16).tolist() == [0, 1, 15]
    edges = HIST_EDGES
    assert hist_bin(torch.tensor([1e-9, 1.0, float(edges[-1]) * 2]), edges).tolist() == [0, 48, len(edges) - 2]


def test_hist_bin_matches_bucketize_on_the_edges():
    edges = HIST_EDGES
    up, down = torch.nextafter(edges, torch.tensor(float("inf"))), torch.nextafter(edges, torch.tensor(0.0))
    x = torch.cat([edges, up, down, torch.rand(50_000, generator=torch.Generator().manual_seed(5)).pow(8) * 300])
    x = x[x > 0]
    want = (torch.bucketize(x, edges, right=True) - 1).clamp(0, len(edges) - 2)
    assert torch.equal(hist_bin(x, edges), want)


def test_fired_index_numpy_path_matches_torch():
    a = torch.rand(64, 33, generator=torch.Generator().manual_seed(6)) - 0.7
    assert torch.equal(fired_index(a.reshape(-1)), (a.reshape(-1) > 0).nonzero().squeeze(1))
    assert torch.equal(fired_index(a.reshape(-1).half()), (a.reshape(-1) > 0).nonzero().squeeze(1))


def test_top_key_orders_by_activation_then_window():
    act, window = torch.tensor([1.0, 3.0, 3.0, 0.5]), torch.tensor([0, 7, 2, 1])
    assert top_key(act, window).argsort().tolist() == [2, 1, 0, 3]


def test_state_by_hand():
    """ctx 4, 3 features, 2 windows; position 0 not ranked."""
    spec = StateSpec(d_sae=3, ctx=4, top_k=2, before=1, after=1, n_bins=4, per_bin=2)
    state = FeatureState(spec)
    acts = torch.zeros(8, 3)
    acts[1, 0], acts[2, 0], acts[3, 0] = 1.0, 3.0, 3.0  # window 10: max 3.0, first at pos 2
    acts[5, 0] = 2.0  # window 11
    acts[0, 1] = 9.0  # position 0: never counted
    acts[6, 1] = 0.25
    valid = torch.tensor([False, True, True, True] * 2)
    state.update(acts, valid, window0=10, gen=key_generator(0, 0))
    assert state.n_tokens == 6
    assert state.n_fired_F.tolist() == [4, 1, 0]
    assert state.max_F.tolist() == [3.0, 0.25, 0.0]
    assert state.sum_F.tolist() == [9.0, 0.25, 0.0]
    top = state.top.ranked_payload()
    assert top["window"][0].tolist() == [10, 11]  # one entry per window
    assert top["pos"][0].tolist() == [2, 1]
    assert top["acts"][0].tolist() == [[1.0, 3.0, 3.0], [0.0, 2.0, 0.0]]
    assert state.top.keys_SR[2].tolist() == [EMPTY, EMPTY]
    # feature 0: scale 4 (smallest power of two above 3), bins of width 1
    assert state.scale_F.tolist() == [4.0, 0.5, 0.0]
    kept = state.interval.ranked_payload()["act"].view(3, 4, 2)
    filled = state.interval.keys_SR.view(3, 4, 2) != EMPTY
    assert filled[0].sum(1).tolist() == [0, 1, 1, 2]  # 1.0 in bin 1, 2.0 in bin 2, both 3.0 in bin 3
    assert sorted(kept[0, 3][filled[0, 3]].tolist()) == [3.0, 3.0]
    # a larger value doubles the scale and merges bins pairwise
    more = torch.zeros(4, 3)
    more[1, 0] = 7.0
    state.update(more, torch.tensor([False, True, True, True]), window0=12, gen=key_generator(0, 1))
    assert state.scale_F[0] == 8.0
    filled = state.interval.keys_SR.view(3, 4, 2) != EMPTY
    assert filled[0].sum(1).tolist() == [1, 2, 0, 1]  # [0,2): 1.0; [2,4): 2.0, 3.0, 3.0 -> 2 kept; [6,8): 7.0


def random_batches(n_batches, spec, seed=0, density=0.05):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n_batches):
        n = 3 * spec.ctx
        acts = torch.rand(n, spec.d_sae, generator=gen) ** 2 * (b + 1)  # later batches reach higher
        acts = acts * (torch.rand(n, spec.d_sae, generator=gen) < density)
        valid = torch.rand(n, generator=gen) < 0.9
        out.append((acts, valid, 3 * b))
    return out


def feed(state, batches, indices):
    for b in indices:
        acts, valid, w0 = batches[b]
        state.update(acts, valid, w0, key_generator(7, b, 0))


def assert_states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if k == "sum":
            torch.testing.assert_close(sa[k], sb[k])
        else:
            assert torch.equal(sa[k], sb[k]), k


def test_merge_equals_one_pass():
    spec = StateSpec(d_sae=24, ctx=16, top_k=3, before=4, after=2, n_bins=8, per_bin=3)
    batches = random_batches(10, spec)
    whole = FeatureState(spec)
    feed(whole, batches, range(10))
    part_a, part_b = FeatureState(spec), FeatureState(spec)
    feed(part_a, batches, [0, 3, 4, 8])
    feed(part_b, batches, [1, 2, 5, 6, 7, 9])
    part_a.merge(part_b)
    assert_states_equal(part_a, whole)
    assert (whole.interval.keys_SR != EMPTY).sum() > 0


def test_interval_samples_lie_in_their_bins_and_fill_them():
    spec = StateSpec(d_sae=10, ctx=8, top_k=2, before=1, after=1, n_bins=16, per_bin=5)
    batches = random_batches(12, spec, seed=4, density=0.3)
    state = FeatureState(spec)
    feed(state, batches, range(12))
    every_act = torch.cat([acts * valid[:, None] for acts, valid, _ in batches])
    for f in range(spec.d_sae):
        col = every_act[:, f][every_act[:, f] > 0]
        scale = next_pow2_above(col.max()[None])
        population = torch.bincount(interval_bin(col, scale.expand_as(col), 16), minlength=16)
        keys = state.interval.keys_SR.view(10, 16, 5)[f]
        got = state.interval.ranked_payload()["act"].view(10, 16, 5)[f]
        assert ((keys != EMPTY).sum(1) == population.clamp(max=5)).all()
        for b in range(16):
            kept = got[b][keys[b] != EMPTY]
            assert (interval_bin(kept, scale.expand_as(kept), 16) == b).all()


def test_state_dict_round_trip():
    spec = StateSpec(d_sae=8, ctx=8, top_k=2, before=2, after=1)
    batches = random_batches(3, spec)
    state = FeatureState(spec)
    feed(state, batches, range(2))
    copy = FeatureState(spec)
    copy.load_state_dict({k: v.clone() for k, v in state.state_dict().items()})
    feed(state, batches, [2])
    feed(copy, batches, [2])
    assert_states_equal(state, copy)
    with pytest.raises(ValueError):
        FeatureState(StateSpec(d_sae=9, ctx=8)).load_state_dict(state.state_dict())


def test_interval_sampling_is_uniform_across_a_rescale():
    """24 tokens end in one bin, half of them seen before the scale doubled: each is kept about 5/24 of the time."""
    spec = StateSpec(d_sae=1, ctx=8, top_k=1, before=0, after=0, n_bins=4, per_bin=5)
    small = (torch.arange(24, dtype=torch.float32) + 1) / 100  # 0.01 .. 0.24: all in bin 0 at the final scale 4
    first = small[:12].view(12, 1)
    second = torch.cat([small[12:], torch.tensor([3.0]), torch.zeros(3)]).view(16, 1)  # 3.0 -> scale 4, width 1
    counts = torch.zeros(24)
    trials = 300
    for seed in range(trials):
        state = FeatureState(spec)
        state.update(torch.cat([first, torch.zeros(4, 1)]), torch.ones(16, dtype=torch.bool), 0, key_generator(seed, 0))
        assert state.scale_F.item() == 0.125  # max 0.12: four bins of width 1/32
        state.update(second, torch.ones(16, dtype=torch.bool), 2, key_generator(seed, 1))
        assert state.scale_F.item() == 4.0
        kept = state.interval.ranked_payload()["act"][0]  # bin 0 of the final scale
        assert (kept > 0).sum() == 5
        counts[((kept[kept > 0] * 100).round().long() - 1)] += 1
    expected = trials * 5 / 24
    assert (counts - expected).abs().max() < 0.45 * expected, counts


def test_effects_by_hand():
    from qscope.harvest.effects import label_token as visible
    from qscope.harvest.effects import logit_effects, make_label, nearest, top_marked_tokens

    W_dec = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.5]])  # 3 features, d = 2
    W_U = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])  # 3 tokens
    eff = logit_effects(W_dec, W_U, n=2)
    assert eff.top_ids_FL.tolist() == [[0, 1], [1, 0], [0, 1]]
    assert eff.top_vals_FL.tolist() == [[1.0, 0.0], [2.0, 0.0], [1.0, 0.5]]
    assert eff.bottom_ids_FL.tolist() == [[2, 1], [2, 0], [2, 1]]
    assert eff.bottom_vals_FL[:, 0].tolist() == [-1.0, -2.0, -1.5]
    nb = nearest(W_dec, W_dec, 2, same=True)  # self excluded
    assert nb.ids_FN.tolist() == [[2, 1], [2, 0], [0, 1]]
    torch.testing.assert_close(nb.cos_FN[0], torch.tensor([1 / 1.25**0.5, 0.0]))
    assert nearest(W_dec, W_dec[:2], 1, same=False).ids_FN.tolist() == [[0], [1], [0]]
    marked = top_marked_tokens(torch.tensor([0, 0, 0, 2]), torch.tensor([7, 5, 5, 9]), 3, n=2)
    assert marked.tolist() == [[5, 7], [-1, -1], [9, -1]]
    vocab = ["a", " b", "\n", "\x17"]
    assert make_label([1, 0], [2, 3], vocab) == "·b a → ↵ <0x17>" and make_label([], [0], vocab) == "dead"
    assert visible("x" * 20) == "x" * 11 + "…"
