"""Blocked nearest-feature search (qscope.harvest.neighbors) against the plain full product, the pair cache's
shared products, logit effects' progress, and cards built on worker processes against cards built here."""

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf

from qscope.harvest.effects import logit_effects
from qscope.harvest.neighbors import PairCache, mutual_nearest
from qscope.store.card_pool import build_cards_parallel
from qscope.store.cards import build_cards, decode_card
from qscope.store.writer import sorted_by_feature


def reference(a: torch.Tensor, b: torch.Tensor, n: int, same: bool):
    sim = nnf.normalize(a, dim=1) @ nnf.normalize(b, dim=1).T
    if same:
        sim.fill_diagonal_(-torch.inf)
    return sim.topk(n, dim=1)


@pytest.mark.parametrize("block", [7, 64, 1000])
def test_within_one_sae_blocks_give_the_full_products_top_k(block):
    torch.manual_seed(0)
    W = torch.randn(150, 12)
    found, other = mutual_nearest(W, None, 5, block=block)
    ref = reference(W, W, 5, same=True)
    assert other is None and torch.equal(found.ids_FN, ref.indices)
    torch.testing.assert_close(found.cos_FN, ref.values)
    assert (found.ids_FN != torch.arange(150)[:, None]).all()  # never its own neighbor


@pytest.mark.parametrize("block", [16, 500])
def test_one_product_gives_both_directions(block):
    torch.manual_seed(1)
    a, b = torch.randn(90, 8), torch.randn(70, 8)
    ab, ba = mutual_nearest(a, b, 4, 3, block=block)
    ref_ab, ref_ba = reference(a, b, 4, False), reference(b, a, 3, False)
    assert torch.equal(ab.ids_FN, ref_ab.indices) and torch.equal(ba.ids_FN, ref_ba.indices)
    torch.testing.assert_close(ba.cos_FN, ref_ba.values)


def test_more_neighbors_than_features_are_cut_to_what_exists():
    W = torch.randn(3, 4)
    found, _ = mutual_nearest(W, None, 10)
    assert found.ids_FN.shape == (3, 2)
    ab, ba = mutual_nearest(W, torch.randn(2, 4), 5, 5)
    assert ab.ids_FN.shape == (3, 2) and ba.ids_FN.shape == (2, 3)


def test_pair_cache_computes_each_product_once_and_the_same_bits_whoever_asks_first():
    torch.manual_seed(2)
    x, y = ("a", torch.randn(60, 6)), ("b", torch.randn(50, 6))
    calls = []
    first = PairCache()
    ab = first.nearest(x, y, 4, 3, advance=calls.append)
    ba = first.nearest(y, x, 3, 4, advance=calls.append)  # kept from the first product
    assert calls[-1] == 1.0
    second = PairCache()
    ba2 = second.nearest(y, x, 3, 4)
    ab2 = second.nearest(x, y, 4, 3)
    assert torch.equal(ab.ids_FN, ab2.ids_FN) and torch.equal(ab.cos_FN, ab2.cos_FN)
    assert torch.equal(ba.ids_FN, ba2.ids_FN) and torch.equal(ba.cos_FN, ba2.cos_FN)
    assert torch.equal(ab.ids_FN, reference(x[1], y[1], 4, False).indices)


def test_logit_effects_report_every_feature_once():
    done = []
    eff = logit_effects(torch.randn(300, 8), torch.randn(50, 8), 5, advance=done.append)
    assert sum(done) == 300 and eff.top_ids_FL.shape == (300, 5)


def test_cards_from_worker_processes_are_the_cards_built_here():
    from qscope.bench.serve import make_columns

    F = 2500  # three ranges of features
    cols = make_columns(0, argparse.Namespace(features=F, contexts=4, vocab=500), 500, "s")
    logits, neighbors = sorted_by_feature(cols["logits"]), sorted_by_feature(cols["neighbors"])
    here = build_cards(cols["features"], cols["contexts"], logits, neighbors)
    done = []
    pooled = build_cards_parallel(cols["features"], cols["contexts"], logits, neighbors, 2, done.append, 1)
    assert list(pooled) == list(here) and sum(done) == F
    card = decode_card(pooled[1234])
    assert card.row.label == cols["features"]["label"][1234] and len(card.contexts) == 4
    assert np.array_equal(build_cards_parallel(cols["features"], cols["contexts"], logits, neighbors, 1), here)


def test_bookkeeping_runs_on_one_cpu_thread_and_gives_the_threads_back():
    from qscope.harvest.feed import few_threads

    before = torch.get_num_threads()
    with few_threads(torch.device("cpu"), 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with few_threads(torch.device("meta"), 1):  # not a CPU: left alone
        assert torch.get_num_threads() == before
