import torch

import effrank_fast as ef


def test_eps_rank_matches_reference_on_random_features():
    phi = torch.randn(300, 20, dtype=torch.float64)
    assert int(ef.eps_rank(phi, 0.5)) == int(ef.reference.eps_rank(phi, 0.5))
