#!/usr/bin/python3
"""make test-torch: examples/torch_loss.py (perpo.h's listwise loss through ctypes, as a
torch.autograd.Function) against the PyTorch implementations of the same objectives in
tests/ref/make_listwise_reference.py (float64 autograd, written independently of perpo.h).

Random batches of lists (lengths 2 to 64, padded, mixed in one batch), every objective over
its options (beta, gamma, label smoothing), rewards with ties: the loss (mean over the lists)
and dLoss/dlogp must agree within ATOL + RTOL * |reference|. Then one training step of a
small torch model: the parameter gradients through perpo.h equal those through the reference
loss, on the CPU in float32 and float64. Bad input is a ValueError, not a crash. Prints the
worst differences it measured; exits 1 on any failure."""
import math
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, os.path.join(HERE, "ref"))

import torch  # noqa: E402

import make_listwise_reference as ref  # noqa: E402  (sets float64 as torch's default dtype)
import torch_loss  # noqa: E402

ATOL, RTOL = 1e-6, 1e-5
KIND_NAMES = {"perpo": "PERPO_OBJ_PERPO", "dpo": "PERPO_OBJ_DPO", "lipo": "PERPO_OBJ_LIPO",
              "listmle": "PERPO_OBJ_LISTMLE"}
CONFIGS = ([("perpo", b, g, e, 0.0) for b in (0.1, 1.0) for g in (0.0, 0.5, 1.0) for e in (0.0, 0.1)]
           + [(k, b, 0.5, e, 0.0) for k in ("dpo", "lipo") for b in (0.1, 1.0) for e in (0.0, 0.1)]
           + [("listmle", b, 0.5, 0.0, 0.0) for b in (0.1, 1.0)]
           + [(k, 0.5, 0.5, 0.0, 2.0) for k in ("perpo", "dpo", "lipo")])  # DPO-Positive

failures = 0
worst = {"loss": 0.0, "grad": 0.0, "step": 0.0}


def check(name, got, want, what):
    """|got - want| <= ATOL + RTOL |want|; records the worst |got - want| / (ATOL + RTOL |want|)."""
    global failures
    got, want = float(got), float(want)
    bound = ATOL + RTOL * abs(want)
    ratio = abs(got - want) / bound if math.isfinite(got) else math.inf
    worst[what] = max(worst[what], ratio)
    if not ratio <= 1.0:
        failures += 1
        print("FAIL %s: %s %.9g, reference %.9g" % (name, what, got, want))


def f32(x):
    return float(torch.tensor(x, dtype=torch.float32))


def random_batch(rng, L, n_max):
    lengths = [rng.randint(2, n_max) for _ in range(L)]
    N = max(lengths)
    logp = torch.full((L, N), -1.0, dtype=torch.float32)
    ref_logp = torch.full((L, N), -1.0, dtype=torch.float32)
    rewards = torch.zeros(L, N, dtype=torch.float32)
    for i, n in enumerate(lengths):
        lp, rf, rw = ref.random_list(rng, n)
        if rng.random() < 0.3:  # ties: rewards from a few values (0.75 - 0.25 is exact)
            rw = [rng.choice((0.0, 0.25, 0.5, 0.75)) for _ in range(n)]
        logp[i, :n] = torch.tensor(lp)
        ref_logp[i, :n] = torch.tensor(rf)
        rewards[i, :n] = torch.tensor(rw)
    return logp, ref_logp, rewards, lengths


def reference_loss(logp, ref_logp, rewards, lengths, kind, beta, gamma, eps, lam):
    """Mean over the lists of the reference objective, float64, differentiable w.r.t. logp."""
    total = 0.0
    for i, n in enumerate(lengths):
        s = logp[i, :n].double() - ref_logp[i, :n].double()
        total = total + ref.OBJECTIVES[KIND_NAMES[kind]](s, rewards[i, :n].tolist(), f32(beta), f32(gamma), f32(eps),
                                                       f32(lam))
    return total / len(lengths)


def test_random_lists():
    rng = random.Random(1402)
    batches = 0
    for kind, beta, gamma, eps, lam in CONFIGS:
        for L, n_max in ((1, 2), (4, 8), (8, 16), (3, 64)):
            logp, ref_logp, rewards, lengths = random_batch(rng, L, n_max)
            a = logp.clone().requires_grad_(True)
            loss = torch_loss.listwise_loss(a, ref_logp, rewards, kind=kind, beta=beta, gamma=gamma,
                                            label_smoothing=eps, positive=lam, lengths=lengths)
            loss.backward()
            b = logp.double().clone().requires_grad_(True)
            want = reference_loss(b, ref_logp, rewards, lengths, kind, beta, gamma, eps, lam)
            want.backward()
            name = "%s beta %g gamma %g eps %g positive %g, %d lists" % (kind, beta, gamma, eps, lam, L)
            check(name, loss.item(), want.item(), "loss")
            for i, n in enumerate(lengths):
                for k in range(a.shape[1]):
                    if k < n:
                        check("%s, list %d response %d" % (name, i, k), a.grad[i, k], b.grad[i, k], "grad")
                    elif a.grad[i, k] != 0.0:  # padding gets no gradient
                        check("%s, padding" % name, a.grad[i, k], 0.0, "grad")
            batches += 1
    return batches


def test_training_step():
    """Parameter gradients of a small model: through perpo.h = through the reference loss."""
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(3)
        L, N, D = 6, 5, 12
        feats = torch.randn(L, N, D, dtype=dtype)
        model = torch.nn.Sequential(torch.nn.Linear(D, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).to(dtype)
        rewards = torch.rand(L, N, dtype=torch.float32)
        ref_logp = (-20.0 + torch.randn(L, N)).to(torch.float32)
        grads = []
        for use_perpo in (True, False):
            model.zero_grad()
            logp = -20.0 + model(feats).squeeze(-1)  # stands in for summed response log-probs
            if use_perpo:
                loss = torch_loss.listwise_loss(logp, ref_logp, rewards, kind="perpo", beta=0.5, gamma=0.5)
            else:
                loss = reference_loss(logp.to(torch.float32).to(torch.float64), ref_logp, rewards, [N] * L,
                                      "perpo", 0.5, 0.5, 0.0, 0.0)
            loss.backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for g, h in zip(*grads):
            for x, y in zip(g.flatten().tolist(), h.flatten().tolist()):
                check("training step (%s)" % dtype, x, y, "step")


def test_bad_input():
    global failures
    x = torch.zeros(2, 3)
    for args, kw in (((x, x, x), {"kind": "nope"}), ((x, x, x), {"beta": 0.0}),
                     ((x, x, torch.full((2, 3), float("nan"))), {}), ((x, x[:, :2], x), {}),
                     ((x, x, x), {"lengths": [3, 4]})):
        try:
            torch_loss.listwise_loss(*args, **kw)
        except ValueError:
            continue
        failures += 1
        print("FAIL: no ValueError for %r" % (kw or "bad shapes/values",))


if __name__ == "__main__":
    n = test_random_lists()
    test_training_step()
    test_bad_input()
    print("torch: perpo_listwise_loss through ctypes vs PyTorch on %d random batches x 4 objectives' options: "
          "worst |diff| at %.0f%% (loss), %.0f%% (dLoss/dlogp), %.0f%% (model gradients of a training step) "
          "of the tolerance %g + %g |reference|; %d failures"
          % (n, 100 * worst["loss"], 100 * worst["grad"], 100 * worst["step"], ATOL, RTOL, failures))
    sys.exit(1 if failures else 0)
