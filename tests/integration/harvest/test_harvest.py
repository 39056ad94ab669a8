"""The harvest on the tiny mini-Qwen against brute force (every activation computed densely), the written
DuckDB file against the schema, exact merges on real activations, and resume after an interruption."""

from dataclasses import replace

import duckdb
import numpy as np
import pytest
import torch
from rich.console import Console

from qscope.harvest.checkpoint import checkpoint_dir
from qscope.harvest.dedup import aligned_windows, distinct
from qscope.harvest.options import HarvestError, HarvestOptions
from qscope.harvest.run import harvest, prepare
from qscope.harvest.state import HIST_EDGES, FeatureState, StateSpec, hist_bin, key_generator, next_pow2_above
from qscope.model import capture, rank_mask
from qscope.store.schema import DDL, TABLES
from qscope.tokens import is_whole, show_bytes, vocab_bytes

CTX, BATCH, TOP_K, BEFORE, AFTER = 64, 8, 8, 8, 4
VOLATILE_META = {"created_at", "seconds"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def opts(tiny_demo, tmp_path_factory) -> HarvestOptions:
    return HarvestOptions(
        model=str(tiny_demo / "model"),
        saes=[tiny_demo / "saes"],
        corpus=str(tiny_demo / "corpus" / "train.jsonl"),
        out=tmp_path_factory.mktemp("harvest") / "tiny.duckdb",
        tokens=4096,
        ctx=CTX,
        batch=BATCH,
        top_k=TOP_K,
        before=BEFORE,
        after=AFTER,
        device="cpu",
        dtype="float32",
        checkpoint_every=0,
    )


@pytest.fixture(scope="module")
def harvested(opts):
    summary = harvest(opts, Console(quiet=True))
    con = duckdb.connect(str(opts.out), read_only=True)
    yield summary, con
    con.close()


@pytest.fixture(scope="module")
def brute(opts):
    """Per SAE: every activation [N, T, F] and the rank mask [N, T], batch by batch as the harvest splits them."""
    job = prepare(opts)
    acts = {i: [] for i in range(len(job.saes))}
    valid = {i: [] for i in range(len(job.saes))}
    for w0 in range(0, len(job.windows_NT), BATCH):
        hidden = capture(job.loaded.model, [s.site for s in job.saes], job.windows_NT[w0 : w0 + BATCH].long())
        for i, sae in enumerate(job.saes):
            h = hidden[sae.site]
            valid[i].append(rank_mask(h, True, opts.sink_norm_ratio))
            with torch.no_grad():
                acts[i].append(sae.encode(h.reshape(-1, h.shape[-1])).view(*h.shape[:2], -1))
    return job, {i: (torch.cat(acts[i]), torch.cat(valid[i])) for i in acts}


def rows(con, sql, *params):
    return con.execute(sql, list(params)).fetchall()


def test_every_feature_has_a_row_and_stats_match_brute_force(harvested, brute):
    summary, con = harvested
    job, data = brute
    for i, sae_id in enumerate(job.sae_ids):
        acts_NTF, valid_NT = data[i]
        fired_XF = (acts_NTF > 0) & valid_NT[..., None]
        got = rows(
            con,
            "SELECT feature, n_fired, density, max_act, mean_act, hist FROM features WHERE sae_id = ? ORDER BY feature",
            sae_id,
        )
        assert [r[0] for r in got] == list(range(job.saes[i].d_sae))
        n_fired = fired_XF.sum((0, 1))
        assert [r[1] for r in got] == n_fired.tolist()
        assert [r[2] for r in got] == (n_fired.double() / int(valid_NT.sum())).tolist()
        assert [r[3] for r in got] == (acts_NTF * valid_NT[..., None]).amax((0, 1)).double().tolist()
        sums = (acts_NTF.double() * fired_XF).sum((0, 1))
        np.testing.assert_allclose([r[4] for r in got], (sums / n_fired.clamp(min=1)).numpy(), rtol=1e-9)
        t_M, f_M = fired_XF.view(-1, fired_XF.shape[-1]).nonzero(as_tuple=True)
        a_M = acts_NTF.view(-1, acts_NTF.shape[-1])[t_M, f_M]
        hist = torch.zeros(job.saes[i].d_sae, len(HIST_EDGES) - 1, dtype=torch.int64)
        hist.index_put_((f_M, hist_bin(a_M, HIST_EDGES)), torch.ones_like(f_M), accumulate=True)
        assert [r[5] for r in got] == hist.tolist()
        assert rows(con, "SELECT tokens, dead FROM saes WHERE sae_id = ?", sae_id) == [
            (int(valid_NT.sum()), int((n_fired == 0).sum()))
        ]
        assert summary.dead[sae_id] == int((n_fired == 0).sum())


def _distinct_top(cand: list, pos_NF, f: int, windows_NT, opts) -> list:
    """The brute-force top contexts as the harvest keeps them: the top_pool strongest windows, near-identical
    ones counted once (qscope.harvest.dedup, checked on its own in tests/integration/harvest/test_dedup.py), top_k
    left."""
    pool = sorted(cand)[: opts.top_pool]
    if not pool:
        return []
    window_E = torch.tensor([w for _, w in pool])
    ids_EW = aligned_windows(windows_NT, window_E, pos_NF[window_E, f], BEFORE, AFTER)
    kept = distinct(torch.zeros(len(pool), dtype=torch.long), ids_EW, opts.dedup, opts.top_k)
    return [c for c, k in zip(pool, kept.tolist(), strict=True) if k]


def test_top_contexts_are_the_top(harvested, brute, opts):
    _, con = harvested
    job, data = brute
    windows_NT = job.windows_NT
    for i, sae_id in enumerate(job.sae_ids):
        acts_NTF, valid_NT = data[i]
        masked_NTF = acts_NTF * valid_NT[..., None]
        best_NF, pos_NF = masked_NTF.max(dim=1)  # max returns the first position of a tie
        got = rows(
            con,
            'SELECT feature, rank, act, "window", pos, token_ids, acts FROM contexts '
            "WHERE sae_id = ? AND kind = 'top' ORDER BY feature, rank",
            sae_id,
        )
        by_feature = {}
        for f, rank, act, w, pos, tok, a in got:
            by_feature.setdefault(f, []).append((rank, act, w, pos, tok, a))
        for f in range(job.saes[i].d_sae):
            cand = [(-float(best_NF[w, f]), w) for w in range(len(windows_NT)) if best_NF[w, f] > 0]
            want = _distinct_top(cand, pos_NF, f, windows_NT, opts)
            have = by_feature.get(f, [])
            assert [(r[1], r[2]) for r in have] == [(-a, w) for a, w in want], f
            assert [r[0] for r in have] == list(range(len(want)))
            for _, _, w, pos, tok, a in have:
                t = int(pos_NF[w, f])
                lo, hi = max(t - BEFORE, 0), min(t + AFTER + 1, CTX)
                assert pos == t - lo
                assert tok == windows_NT[w, lo:hi].tolist()
                assert a == acts_NTF[w, lo:hi, f].tolist()


def test_interval_samples_lie_in_their_bins(harvested, brute, opts):
    _, con = harvested
    job, data = brute
    nb, per_bin = opts.interval_bins, opts.interval_samples
    for i, sae_id in enumerate(job.sae_ids):
        acts_NTF, valid_NT = data[i]
        masked_NTF = acts_NTF * valid_NT[..., None]
        scale_F = next_pow2_above(masked_NTF.amax((0, 1)))
        widths = rows(con, "SELECT interval_width FROM features WHERE sae_id = ? ORDER BY feature", sae_id)
        assert [w for (w,) in widths] == (scale_F.double() / nb).tolist()
        got = rows(
            con,
            'SELECT feature, bin, act, "window", pos, token_ids, acts FROM contexts '
            "WHERE sae_id = ? AND kind = 'interval'",
            sae_id,
        )
        counts: dict[tuple[int, int], int] = {}
        masked_np, windows_np = masked_NTF.numpy(), job.windows_NT.numpy()
        for f, b, act, w, pos, tok, a in got:
            assert act > 0 and b == int(act * nb / float(scale_F[f])) and a[pos] == act
            counts[f, b] = counts.get((f, b), 0) + 1
            # the marked token is a ranked token of window w with this activation, at the place token_ids say
            spots = [
                t
                for t in np.flatnonzero(masked_np[w, :, f] == act)
                if t - max(t - BEFORE, 0) == pos and tok == windows_np[w, max(t - BEFORE, 0) : t + AFTER + 1].tolist()
            ]
            assert spots, (f, b, w, pos)
        for f in range(job.saes[i].d_sae):
            col = masked_NTF[:, :, f].flatten()
            col = col[col > 0]
            if col.numel() == 0:
                continue
            population = torch.bincount((col * nb / scale_F[f]).floor().long().clamp(max=nb - 1), minlength=nb)
            for b in range(nb):
                assert counts.get((f, b), 0) == min(per_bin, int(population[b])), (f, b)


def test_merge_on_real_activations(brute, opts):
    job, data = brute
    acts_NTF, valid_NT = data[1]
    spec = StateSpec(job.saes[1].d_sae, CTX, TOP_K, BEFORE, AFTER, opts.interval_bins, opts.interval_samples)
    n_batches = len(acts_NTF) // BATCH

    def feed(state, batches):
        for b in batches:
            part = slice(b * BATCH, (b + 1) * BATCH)
            a = acts_NTF[part].reshape(-1, spec.d_sae)
            state.update(a, valid_NT[part].reshape(-1), b * BATCH, key_generator(3, b, 1))

    whole, a, b = FeatureState(spec), FeatureState(spec), FeatureState(spec)
    feed(whole, range(n_batches))
    split = torch.randperm(n_batches, generator=torch.Generator().manual_seed(0))
    feed(a, sorted(split[: n_batches // 2].tolist()))
    feed(b, sorted(split[n_batches // 2 :].tolist()))
    b.merge(a)
    for key, value in whole.state_dict().items():
        if key == "sum":
            torch.testing.assert_close(b.state_dict()[key], value)
        else:
            assert torch.equal(b.state_dict()[key], value), key


def test_file_follows_the_schema(harvested, brute):
    _, con = harvested
    job, _ = brute
    ref = duckdb.connect()
    ref.execute(DDL)
    for table in TABLES:
        assert rows(con, f"DESCRIBE {table}") == rows(ref, f"DESCRIBE {table}"), table
    for table in ("features", "contexts", "logits", "neighbors"):
        keys = rows(con, f"SELECT sae_id, feature FROM {table}")  # storage order
        assert keys == sorted(keys), table
    assert rows(con, "SELECT count(*) FROM features") == [(sum(s.d_sae for s in job.saes),)]
    assert rows(con, "SELECT count(*) FROM contexts WHERE len(acts) != len(token_ids) OR pos >= len(acts)") == [(0,)]
    assert rows(con, "SELECT sae_id, layer, d_sae, k FROM saes ORDER BY sae_id") == [
        (i, s.layer, s.d_sae, s.k) for i, s in sorted(zip(job.sae_ids, job.saes, strict=True))
    ]
    tok = job.loaded.tokenizer
    vocab = rows(con, "SELECT token_id, token, bytes FROM vocab ORDER BY token_id")
    raw = vocab_bytes(tok, len(vocab))
    assert [b for _, _, b in vocab] == raw  # each token's own bytes
    assert [t for _, t, _ in vocab] == [show_bytes(b) for b in raw]  # its text on its own, never U+FFFD
    assert [t for _, t, b in vocab if is_whole(b)] == [tok.decode([i]) for i, _, b in vocab if is_whole(b)]
    assert not any("\ufffd" in t for _, t, _ in vocab) and any(not is_whole(b) for b in raw)
    assert len(vocab) >= job.loaded.vocab_size
    meta = dict(rows(con, "SELECT key, value FROM meta"))
    assert meta["model_id"] == job.model_id and int(meta["tokens"]) == job.windows_NT.numel()
    n_logit = rows(con, "SELECT count(*) FROM logits WHERE sign = 1 AND feature = 0 AND sae_id = ?", job.sae_ids[0])
    assert n_logit == [(20,)]
    same = rows(con, "SELECT count(*) FROM neighbors WHERE sae_id = other_sae_id AND feature = other_feature")
    assert same == [(0,)]
    other = rows(con, "SELECT DISTINCT other_sae_id FROM neighbors WHERE sae_id = ?", job.sae_ids[0])
    assert sorted(o for (o,) in other) == sorted(job.sae_ids)
    labels = rows(con, "SELECT label FROM features WHERE n_fired > 0 LIMIT 5")
    assert all(0 < len(label) <= 80 and "\n" not in label for (label,) in labels)


def dump(path):
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {t: con.execute(f"SELECT * FROM {t}").fetchall() for t in TABLES}
    finally:
        con.close()
    out["meta"] = [r for r in out["meta"] if r[0] not in VOLATILE_META]
    return out


def test_resume_after_interruption_gives_the_same_database(opts, harvested, tmp_path):
    out = tmp_path / "resumed.duckdb"
    first = replace(opts, out=out, checkpoint_every=3)

    def kill(done: int) -> None:
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        harvest(first, Console(quiet=True), on_batch=kill)
    assert (checkpoint_dir(out) / "state.pt").is_file() and not out.exists()
    with pytest.raises(HarvestError, match="top_k"):  # a checkpoint only resumes the run that made it
        harvest(replace(first, resume=True, top_k=TOP_K + 1), Console(quiet=True))
    summary = harvest(replace(first, resume=True), Console(quiet=True))
    assert summary.resumed_from == 3
    assert not checkpoint_dir(out).exists()
    assert dump(out) == dump(opts.out)
