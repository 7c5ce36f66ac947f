#!/usr/bin/python3
"""perpo.h's listwise objectives inside a PyTorch training step.

The objectives need numbers only: each response's summed log-probability under the policy and
under the frozen reference, and its task reward. So a model trained in PyTorch, of any size and
on any engine (DDP, DeepSpeed, FSDP), can use the exact PerPO, DPO, LiPO-lambda and ListMLE
losses of perpo.h: this module calls perpo_listwise_loss from the header built as a shared
library (`make shared` writes build/libperpo.so) through ctypes, inside a
torch.autograd.Function. The forward returns the loss; the backward hands autograd the
dLoss/dlogp that perpo.h computed, and autograd carries it into the model.

    import torch_loss                                 # examples/ on sys.path
    loss = torch_loss.listwise_loss(logp, ref_logp, rewards, kind="perpo", beta=0.1, gamma=0.5)
    loss.backward()

logp: (L, N) summed response log-probs of L lists of N responses, from your model (requires
grad); ref_logp and rewards: (L, N), no grad. Lists shorter than N: pass lengths (L,) and pad.
The loss is the mean over the lists (reduction="mean"; "sum" and "none" too), the same mean
perpo_pref_train takes. With data parallelism each rank computes the loss of its own lists and
DDP/FSDP average the gradients over ranks: with the same number of lists on every rank, that is
the mean over all lists. The function runs on the CPU (a few floats per list); logp may live on
any device and the gradient goes back to it.

    make shared && python3 examples/torch_loss.py     # a toy policy trained with PerPO
    make test-torch                                   # against PyTorch versions of the objectives

Needs python3-torch (Debian's works). The library is found at $PERPO_LIB, else
build/libperpo.so next to this file's folder.
"""
import ctypes
import os

import torch

KINDS = {"perpo": 0, "dpo": 1, "lipo": 2, "listmle": 3}  # perpo_objective
MAX_LIST = 256  # PERPO_MAX_LIST


class ObjectiveConfig(ctypes.Structure):
    """perpo_objective_config: kind, beta, gamma, label_smoothing, positive."""
    _fields_ = [("kind", ctypes.c_int), ("beta", ctypes.c_float), ("gamma", ctypes.c_float),
                ("label_smoothing", ctypes.c_float), ("positive", ctypes.c_float)]


_lib = None


def load(path=None):
    """Loads libperpo.so once (path, else $PERPO_LIB, else build/libperpo.so of this repository)."""
    global _lib
    if _lib is not None and path is None:
        return _lib
    if path is None:
        path = os.environ.get("PERPO_LIB") or os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "libperpo.so")
    if not os.path.exists(path):
        raise FileNotFoundError("%s not found: run `make shared` (or set PERPO_LIB)" % path)
    lib = ctypes.CDLL(path)
    fp = ctypes.POINTER(ctypes.c_float)
    lib.perpo_listwise_loss.argtypes = [ctypes.POINTER(ObjectiveConfig), ctypes.c_int, fp, fp, fp, fp, fp]
    lib.perpo_listwise_loss.restype = ctypes.c_int
    lib.perpo_status_string.argtypes = [ctypes.c_int]
    lib.perpo_status_string.restype = ctypes.c_char_p
    _lib = lib
    return lib


def _row(t, i):
    """Pointer to row i of a contiguous 2-D float32 CPU tensor."""
    return ctypes.cast(t.data_ptr() + i * t.stride(0) * 4, ctypes.POINTER(ctypes.c_float))


class PerpoListwiseLoss(torch.autograd.Function):
    """Per-list losses (L,) and their gradients w.r.t. logp, from perpo_listwise_loss."""

    @staticmethod
    def forward(ctx, logp, ref_logp, rewards, lengths, cfg, lib):
        L, N = logp.shape
        lp = logp.detach().to("cpu", torch.float32).contiguous()
        ref = ref_logp.detach().to("cpu", torch.float32).contiguous()
        rw = rewards.detach().to("cpu", torch.float32).contiguous()
        losses = torch.zeros(L, dtype=torch.float32)
        grads = torch.zeros(L, N, dtype=torch.float32)
        one = ctypes.c_float()
        for i in range(L):
            n = int(lengths[i])
            st = lib.perpo_listwise_loss(ctypes.byref(cfg), n, _row(lp, i), _row(ref, i), _row(rw, i),
                                         ctypes.byref(one), _row(grads, i))
            if st != 0:
                raise ValueError("perpo_listwise_loss, list %d: %s" % (i, lib.perpo_status_string(st).decode()))
            losses[i] = one.value
        ctx.save_for_backward(grads)
        ctx.device, ctx.dtype = logp.device, logp.dtype
        return losses.to(logp.device, logp.dtype)

    @staticmethod
    def backward(ctx, grad_losses):
        (grads,) = ctx.saved_tensors
        g = grad_losses.detach().to("cpu", torch.float32)[:, None] * grads
        return g.to(ctx.device, ctx.dtype), None, None, None, None, None


def listwise_loss(logp, ref_logp, rewards, kind="perpo", beta=0.1, gamma=0.5, label_smoothing=0.0,
                  positive=0.0, lengths=None, reduction="mean", lib=None):
    """perpo.h's listwise loss of L lists; differentiable w.r.t. logp.

    logp, ref_logp, rewards: (L, N) or (N,) for one list. kind: perpo, dpo, lipo or listmle;
    beta, gamma (PerPO's reward-gap exponent), label_smoothing (cDPO) and positive (DPO-Positive's
    lambda) as in perpo_objective_config, with the ranges perpo.h checks (a ValueError says which list broke
    one, or held a NaN). lengths: responses per list (the rest of each row is padding)."""
    if kind not in KINDS:
        raise ValueError("kind must be one of %s" % ", ".join(KINDS))
    if reduction not in ("mean", "sum", "none"):
        raise ValueError("reduction must be mean, sum or none")
    single = logp.dim() == 1
    if single:
        logp, ref_logp, rewards = logp[None], ref_logp[None], rewards[None]
    if logp.dim() != 2 or ref_logp.shape != logp.shape or rewards.shape != logp.shape:
        raise ValueError("logp, ref_logp and rewards must have the same shape (L, N)")
    L, N = logp.shape
    if lengths is None:
        lengths = [N] * L
    lengths = [int(n) for n in lengths]
    if len(lengths) != L or any(n < 1 or n > N or n > MAX_LIST for n in lengths):
        raise ValueError("lengths: one per list, each in [1, min(N, %d)]" % MAX_LIST)
    cfg = ObjectiveConfig(KINDS[kind], beta, gamma, label_smoothing, positive)
    losses = PerpoListwiseLoss.apply(logp, ref_logp, rewards, lengths, cfg, lib or load())
    if reduction == "none":
        return losses[0] if single else losses
    return losses.mean() if reduction == "mean" else losses.sum()


def _demo():
    """A toy policy over token sequences, trained with PerPO through perpo.h: its responses are
    scored by how many positions match a target the policy never sees; the reference is the
    policy before training. The reward of its greedy answer must rise."""
    torch.manual_seed(0)
    V, T, N, L = 8, 6, 8, 16
    target = torch.randint(0, V, (T,))
    logits = torch.nn.Parameter(0.5 * torch.randn(T, V))  # the policy: a distribution per position
    ref_logits = logits.detach().clone()
    opt = torch.optim.Adam([logits], lr=0.05)

    def seq_logp(table, seqs):  # summed log-probs of (L, N, T) token sequences
        lp = torch.log_softmax(table, -1)
        return lp[torch.arange(T), seqs].sum(-1)

    def greedy_reward():
        return (logits.argmax(-1) == target).float().mean().item()

    before = greedy_reward()
    for step in range(60):
        with torch.no_grad():
            probs = torch.softmax(logits, -1)
            seqs = torch.multinomial(probs.repeat(L * N, 1, 1).view(-1, V), 1).view(L, N, T)
            rewards = (seqs == target).float().mean(-1)
            ref = seq_logp(ref_logits, seqs)
        loss = listwise_loss(seq_logp(logits, seqs), ref, rewards, kind="perpo", beta=0.1, gamma=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == 59:
            print("step %2d  PerPO loss %.4f  mean sampled reward %.3f" % (step, loss.item(), rewards.mean().item()))
    print("greedy answer's reward: %.3f before, %.3f after" % (before, greedy_reward()))


if __name__ == "__main__":
    _demo()
