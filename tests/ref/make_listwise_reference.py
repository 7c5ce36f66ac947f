#!/usr/bin/python3
"""Reference values for perpo.h's listwise objectives (perpo_listwise_loss).

Implements PerPO, DPO (best vs worst of the list), LiPO-lambda (normalized by the sum of its
lambda weights, as perpo.h does) and ListMLE independently in PyTorch, with DPO-Positive's
penalty (lambda max(0, -s_i) taken off each pair's margin) where a case sets it, float64, with autograd
for d loss / d logp, and writes tests/ref/listwise_ref.h, which the C tests compile in.

Run with Debian's torch:   /usr/bin/python3 tests/ref/make_listwise_reference.py

Inputs and config values are rounded to float32 first (the C API takes floats), then everything
is computed in float64 on those exact values. Output is deterministic.
"""
import math
import os
import random
import struct

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
HERE = os.path.dirname(os.path.abspath(__file__))
OUT_PATH = os.path.join(HERE, "listwise_ref.h")


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def pair_loss(x, eps):
    """-(1-eps) log sigmoid(x) - eps log sigmoid(-x): DPO's loss, cDPO label smoothing."""
    return -(1.0 - eps) * F.logsigmoid(x) - eps * F.logsigmoid(-x)


def zero_loss(s):
    return (s * 0.0).sum()  # keeps the graph so the gradient is an explicit zero


def margin(s, i, j, beta, lam):
    """beta (s_i - s_j - lam max(0, -s_i)): DPO-Positive's pair margin (lam 0: DPO's)."""
    return beta * (s[i] - s[j] - lam * torch.relu(-s[i]))


def loss_perpo(s, R, beta, gamma, eps, lam):
    n = len(R)
    pairs = [(i, j) for i in range(n) for j in range(n) if R[i] > R[j]]
    if not pairs:
        return zero_loss(s)
    w = torch.tensor([abs(R[i] - R[j]) ** gamma for i, j in pairs])
    w = w / w.sum()
    x = torch.stack([margin(s, i, j, beta, lam) for i, j in pairs])
    return (w * pair_loss(x, eps)).sum()


def loss_dpo(s, R, beta, gamma, eps, lam):
    best, worst = R.index(max(R)), R.index(min(R))
    if R[best] == R[worst]:
        return zero_loss(s)
    return pair_loss(margin(s, best, worst, beta, lam), eps)


def loss_lipo(s, R, beta, gamma, eps, lam):
    n = len(R)
    z = beta * s
    zd = z.detach().tolist()
    order = sorted(range(n), key=lambda k: (-zd[k], k))
    tau = [0] * n
    for r, k in enumerate(order):
        tau[k] = r + 1
    G = [2.0 ** R[k] - 1.0 for k in range(n)]
    inv_d = [1.0 / math.log2(1.0 + tau[k]) for k in range(n)]
    pairs = [(i, j) for i in range(n) for j in range(n) if R[i] > R[j]]
    delta = [abs(G[i] - G[j]) * abs(inv_d[i] - inv_d[j]) for i, j in pairs]
    if not pairs or sum(delta) == 0.0:
        return zero_loss(s)
    d = torch.tensor(delta)
    x = torch.stack([margin(s, i, j, beta, lam) for i, j in pairs])
    return (d * pair_loss(x, eps)).sum() / d.sum()


def loss_listmle(s, R, beta, gamma, eps, lam):
    n = len(R)
    if all(r == R[0] for r in R):
        return zero_loss(s)
    order = sorted(range(n), key=lambda k: (-R[k], k))
    z = (beta * s)[order]
    terms = [z[k] - torch.logsumexp(z[k:], 0) for k in range(n - 1)]
    return -torch.stack(terms).sum()


OBJECTIVES = {
    "PERPO_OBJ_PERPO": loss_perpo,
    "PERPO_OBJ_DPO": loss_dpo,
    "PERPO_OBJ_LIPO": loss_lipo,
    "PERPO_OBJ_LISTMLE": loss_listmle,
}

# (objective, beta, gamma, label_smoothing, positive); the cases with positive > 0 come after
# the others, so adding them left every earlier case as it was
FULL = (
    [("PERPO_OBJ_PERPO", b, g, e, 0.0) for b in (0.1, 1.0) for g in (0.0, 0.5, 1.0)
     for e in (0.0, 0.1)]
    + [(o, b, 0.5, e, 0.0) for o in ("PERPO_OBJ_DPO", "PERPO_OBJ_LIPO")
       for b in (0.1, 1.0) for e in (0.0, 0.1)]
    + [("PERPO_OBJ_LISTMLE", b, 0.5, 0.0, 0.0) for b in (0.1, 1.0)]
    + [(o, b, 0.5, e, lam) for o in ("PERPO_OBJ_PERPO", "PERPO_OBJ_DPO", "PERPO_OBJ_LIPO",
                                     "PERPO_OBJ_LISTMLE")
       for b in (0.1, 1.0) for e in (0.0, 0.1) for lam in (1.0, 50.0)]
)
BASIC = [
    ("PERPO_OBJ_PERPO", 0.1, 0.5, 0.0, 0.0), ("PERPO_OBJ_PERPO", 1.0, 1.0, 0.1, 0.0),
    ("PERPO_OBJ_PERPO", 0.1, 0.0, 0.0, 0.0), ("PERPO_OBJ_DPO", 0.1, 0.5, 0.0, 0.0),
    ("PERPO_OBJ_DPO", 1.0, 0.5, 0.1, 0.0), ("PERPO_OBJ_LIPO", 0.1, 0.5, 0.0, 0.0),
    ("PERPO_OBJ_LIPO", 1.0, 0.5, 0.1, 0.0), ("PERPO_OBJ_LISTMLE", 0.1, 0.5, 0.0, 0.0),
    ("PERPO_OBJ_LISTMLE", 1.0, 0.5, 0.0, 0.0),
    ("PERPO_OBJ_PERPO", 0.1, 0.5, 0.0, 5.0), ("PERPO_OBJ_DPO", 1.0, 0.5, 0.1, 5.0),
    ("PERPO_OBJ_LIPO", 0.1, 0.5, 0.0, 5.0),
]


def random_list(rng, n):
    logp = [rng.uniform(-60.0, -5.0) for _ in range(n)]
    ref = [lp + rng.gauss(0.0, 3.0) for lp in logp]
    reward = [rng.random() for _ in range(n)]
    return logp, ref, reward


def input_sets():
    rng = random.Random(20250207)
    sets = []
    for n in (2, 3, 5, 8, 20, 64):
        sets.append(("random_n%d" % n, random_list(rng, n), FULL if n in (3, 5) else BASIC))
    lp, rf, _ = random_list(rng, 6)
    sets.append(("ties", (lp, rf, [0.5, 0.2, 0.5, 0.9, 0.2, 0.0]), FULL))
    lp, rf, _ = random_list(rng, 5)
    sets.append(("all_equal", (lp, rf, [0.7] * 5), BASIC))
    lp, rf, rw = random_list(rng, 1)
    sets.append(("n1", (lp, rf, rw), BASIC))
    lp, rf, _ = random_list(rng, 5)  # OCR-like: rewards 1 - NED, close together
    sets.append(("close_rewards", (lp, rf, [0.93, 0.95, 0.91, 0.96, 0.94]), BASIC))
    sets.append(("diff_1e6", ([-1.0e6, 0.0, -3.0e5, -2.0e6], [0.0, -1.0e6, 0.0, 0.0],
                              [0.9, 0.2, 0.5, 0.1]), BASIC))
    sets.append(("pm_1e30", ([1.0e30, -1.0e30, 0.0], [0.0, 0.0, 1.0e30], [0.1, 0.8, 0.4]), BASIC))
    return sets


def fmt(x):
    """%.9g (round-trips float32), with a '.' or exponent so that an 'f' suffix is valid C."""
    t = "%.9g" % x
    return t if any(c in t for c in ".en") else t + ".0"


def main():
    inputs, grads, cases = [], [], []
    for name, (logp, ref, reward), configs in input_sets():
        logp, ref, reward = [f32(v) for v in logp], [f32(v) for v in ref], [f32(v) for v in reward]
        n, off = len(logp), len(inputs)
        inputs += logp + ref + reward
        for kind, beta, gamma, eps, lam in configs:
            beta, gamma, eps, lam = f32(beta), f32(gamma), f32(eps), f32(lam)
            lp = torch.tensor(logp, requires_grad=True)
            s = lp - torch.tensor(ref)
            loss = OBJECTIVES[kind](s, reward, beta, gamma, eps, lam)
            loss.backward()
            g = lp.grad.tolist()
            assert math.isfinite(loss.item()) and all(math.isfinite(v) for v in g), name
            cases.append((name, kind, beta, gamma, eps, lam, n, off, len(grads), loss.item()))
            grads += g

    def rows(values, per_line=6):
        return ",\n".join("    " + ", ".join(fmt(v) for v in values[i:i + per_line])
                          for i in range(0, len(values), per_line))

    out = [
        "/* Generated by tests/ref/make_listwise_reference.py (PyTorch %s, float64 autograd)."
        % torch.__version__.split("+")[0],
        " * Do not edit. Include after perpo.h (uses perpo_objective).",
        " * Case c: logp = perpo_ref_lw_inputs + c.input, ref_logp = ... + c.input + c.n,",
        " * reward = ... + c.input + 2 * c.n; expected dL/dlogp = perpo_ref_lw_grads + c.grad. */",
        "#ifndef PERPO_LISTWISE_REF_H",
        "#define PERPO_LISTWISE_REF_H",
        "typedef struct {",
        "    const char *name;",
        "    perpo_objective kind;",
        "    float beta, gamma, label_smoothing, positive;",
        "    int n, input, grad;",
        "    double loss;",
        "} perpo_ref_lw_case;",
        "static const float perpo_ref_lw_inputs[%d] = {" % len(inputs),
        rows(inputs),
        "};",
        "static const double perpo_ref_lw_grads[%d] = {" % len(grads),
        rows(grads),
        "};",
        "static const perpo_ref_lw_case perpo_ref_lw_cases[%d] = {" % len(cases),
    ]
    for name, kind, beta, gamma, eps, lam, n, off, goff, loss in cases:
        out.append('    {"%s", %s, %sf, %sf, %sf, %sf, %d, %d, %d, %s},'
                   % (name, kind, fmt(beta), fmt(gamma), fmt(eps), fmt(lam), n, off, goff,
                      fmt(loss)))
    out += ["};", "#endif", ""]
    with open(OUT_PATH, "w") as fh:
        fh.write("\n".join(out))
    print("wrote %s: %d cases, %d inputs, %d gradients" % (OUT_PATH, len(cases), len(inputs),
                                                          len(grads)))


if __name__ == "__main__":
    main()
