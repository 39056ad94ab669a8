"""Train mini-Qwen's TopK SAEs on residual-stream activations, with Qwen-Scope's exact encode/decode.

Encode ``f = relu(topk(x @ W_enc.T + b_enc))`` (no ``b_dec`` subtraction, as Qwen-Scope), decode
``f @ W_dec.T + b_dec``. The loss is the reconstruction error normalised by the batch variance (an FVU), plus
the AuxK loss of Gao et al. (2024): latents that have not fired for a while try to reconstruct the remaining
error with their own top-k, which keeps the dead fraction low. Decoder columns are kept at unit norm.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from qscope.demo.spec import DemoSpec
from qscope.model import capture, resid_site


@dataclass
class SaeWeights:
    """Weights in Qwen-Scope orientation: W_enc [d_sae, d], b_enc [d_sae], W_dec [d, d_sae], b_dec [d]."""

    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor


@torch.no_grad()
def collect_activations(
    model: torch.nn.Module, windows_NT: torch.Tensor, layers: tuple[int, ...], n_tokens: int, batch: int = 64
) -> dict[int, Tensor]:
    """Residual activations {layer: [n_tokens, d]} from the first windows, position 0 (Qwen's attention
    sink, no BOS) left out."""
    sites = [resid_site(n) for n in layers]
    out: dict[int, list[Tensor]] = {n: [] for n in layers}
    got = 0
    for start in range(0, len(windows_NT), batch):
        acts = capture(model, sites, windows_NT[start : start + batch])
        for n, site in zip(layers, sites, strict=True):
            out[n].append(acts[site][:, 1:].reshape(-1, acts[site].shape[-1]).float())
        got += out[layers[0]][-1].shape[0]
        if got >= n_tokens:
            break
    return {n: torch.cat(chunks)[:n_tokens] for n, chunks in out.items()}


class TopKSae(torch.nn.Module):
    """The trainable SAE; internal orientation W_enc_DF / W_dec_FD for fast matmuls.

    Only the k selected latents of a token carry gradient, so decoding is an ``embedding_bag`` over them
    (no dense [N, d_sae] x [d_sae, d] product forward or backward); the encoder stays one dense matmul,
    which on a CPU beats gathering the selected encoder rows.
    """

    def __init__(self, d: int, d_sae: int, k: int, data_mean_D: Tensor, gen: torch.Generator):
        super().__init__()
        W_dec_FD = torch.randn(d_sae, d, generator=gen)
        W_dec_FD /= W_dec_FD.norm(dim=1, keepdim=True)
        self.W_dec_FD = torch.nn.Parameter(W_dec_FD)
        self.W_enc_DF = torch.nn.Parameter(W_dec_FD.T.clone())
        # Centre the pre-activations on the data mean, since the encoder has no b_dec subtraction.
        self.b_enc_F = torch.nn.Parameter(-(data_mean_D @ self.W_enc_DF).detach())
        self.b_dec_D = torch.nn.Parameter(data_mean_D.clone())
        self.k = k

    def preacts(self, x_ND: Tensor) -> Tensor:
        return x_ND @ self.W_enc_DF + self.b_enc_F

    def decode_sparse(self, vals_NK: Tensor, idx_NK: Tensor) -> Tensor:
        """sum_k vals[n, k] * W_dec[idx[n, k]], without the bias: [N, d]."""
        return torch.nn.functional.embedding_bag(idx_NK, self.W_dec_FD, per_sample_weights=vals_NK, mode="sum")

    @torch.no_grad()
    def renorm_decoder(self) -> None:
        self.W_dec_FD.div_(self.W_dec_FD.norm(dim=1, keepdim=True).clamp_min(1e-8))

    def weights(self) -> SaeWeights:
        return SaeWeights(
            W_enc=self.W_enc_DF.detach().T.contiguous(),
            b_enc=self.b_enc_F.detach().clone(),
            W_dec=self.W_dec_FD.detach().T.contiguous(),
            b_dec=self.b_dec_D.detach().clone(),
        )


def aux_loss(sae: TopKSae, pre_NF: Tensor, err_ND: Tensor, dead_F: Tensor, aux_k: int) -> Tensor:
    """Dead latents' own top-k reconstruction of the residual error, as a fraction of its variance."""
    n_dead = int(dead_F.sum())
    if n_dead == 0:
        return pre_NF.new_zeros(())
    idx_NK = pre_NF.detach().masked_fill(~dead_F, float("-inf")).topk(min(aux_k, n_dead), dim=-1).indices
    recon_ND = sae.decode_sparse(pre_NF.gather(1, idx_NK).relu(), idx_NK)
    denom = (err_ND - err_ND.mean(0)).pow(2).sum().clamp_min(1e-8)
    return (recon_ND - err_ND.detach()).pow(2).sum() / denom


def train_sae(spec: DemoSpec, acts_ND: Tensor, progress: Callable[[int, int, float], None] | None = None) -> SaeWeights:
    """Train one TopK SAE on ``acts_ND`` for ``spec.sae_epochs`` epochs of shuffled batches."""
    gen = torch.Generator().manual_seed(spec.seed)
    sae = TopKSae(acts_ND.shape[1], spec.sae_width, spec.sae_k, acts_ND.mean(0), gen)
    opt = torch.optim.Adam(sae.parameters(), lr=spec.sae_lr, betas=(0.9, 0.999))
    steps_per_epoch = len(acts_ND) // spec.sae_batch
    total = steps_per_epoch * spec.sae_epochs
    last_fired_F = torch.zeros(spec.sae_width, dtype=torch.long)
    dead_after = max(1, steps_per_epoch // 4)  # "dead" = silent for a quarter of an epoch
    step = 0
    for _ in range(spec.sae_epochs):
        order = torch.randperm(len(acts_ND), generator=gen)
        for b in range(steps_per_epoch):
            x_ND = acts_ND[order[b * spec.sae_batch : (b + 1) * spec.sae_batch]]
            pre_NF = sae.preacts(x_ND)
            idx_NK = pre_NF.detach().topk(spec.sae_k, dim=-1).indices
            vals_NK = pre_NF.gather(1, idx_NK).relu()
            recon_ND = sae.decode_sparse(vals_NK, idx_NK) + sae.b_dec_D
            err_ND = x_ND - recon_ND
            fvu = err_ND.pow(2).sum() / (x_ND - x_ND.mean(0)).pow(2).sum()
            fired_F = torch.zeros_like(last_fired_F, dtype=torch.bool)
            fired_F[idx_NK[vals_NK.detach() > 0]] = True
            last_fired_F[fired_F] = step
            dead_F = (step - last_fired_F) >= dead_after
            loss = fvu + aux_loss(sae, pre_NF, err_ND, dead_F, spec.sae_aux_k) / 32
            for group in opt.param_groups:  # linear decay over the last 20% of steps
                group["lr"] = spec.sae_lr * min(1.0, (total - step) / (0.2 * total))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sae.renorm_decoder()
            if progress:
                progress(step, total, fvu.item())
            step += 1
    return sae.weights()


def sae_metrics(encode: Callable[[Tensor], Tensor], decode: Callable[[Tensor], Tensor], acts_ND: Tensor) -> dict:
    """FVU and dead fraction of an SAE (given as encode/decode callables) on held-out activations."""
    t0 = time.perf_counter()
    with torch.no_grad():
        err, fired = 0.0, None
        for chunk_ND in acts_ND.split(4096):
            f_NF = encode(chunk_ND)
            err += float((decode(f_NF) - chunk_ND).pow(2).sum())
            now_F = (f_NF > 0).any(0)
            fired = now_F if fired is None else fired | now_F
        total = float((acts_ND - acts_ND.mean(0)).pow(2).sum())
    assert fired is not None
    return {
        "fvu": err / total,
        "dead_fraction": 1.0 - float(fired.float().mean()),
        "eval_tokens": len(acts_ND),
        "seconds": time.perf_counter() - t0,
    }
