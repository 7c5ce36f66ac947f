#!/usr/bin/python3
"""PyTorch eager baseline for bench/bench.c: the same model (tests/ref/MODEL_SPEC.md, the
default perpo_config), the same shapes, batch and thread count, the same JSON lines.

    /usr/bin/python3 bench/torch_reference.py [--threads K] [--rounds R] [--quick] [--only LIST]

Prints one JSON object per line: {"name", "value" (median), "unit", "min", "max", "rounds",
"config"}. Names: gemm_gflops (one line per shape, torch.mm), sft_step_ms, sft_step_gflops,
perpo_step_ms, perpo_step_gflops, generate_tokens_per_s, sample_n8_ms, peak_rss_mb.

The model is batched (no per-sequence Python loops), attention is the usual
softmax(QK^T/sqrt(hd) + mask) V with matmuls, generation uses a KV cache written here (no
torch.compile), the optimizer is torch.optim.AdamW(foreach=False) with clip_grad_norm_.
"""
import argparse
import json
import math
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F

# perpo_config_default()
CFG = dict(image_h=64, image_w=64, channels=3, patch=8, d_model=128, n_heads=4,
           n_vis_layers=2, n_dec_layers=4, mlp_mult=4, max_text=48, vocab=260, max_batch=32)
PAD, BOS, SEP, EOS = 256, 257, 258, 259
PROMPT_TRAIN = "where is the red square?"   # 24 bytes; + 21-byte response fills 48 positions
PROMPT_GEN = "box?"                         # room for 41 new tokens
GEN_NEW_TOKENS = 40
LN_EPS = 1e-5


def now():
    return time.perf_counter()


# ------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------
class Block(torch.nn.Module):
    def __init__(self, D, M):
        super().__init__()
        P = torch.nn.Parameter
        self.ln1_w, self.ln1_b = P(torch.ones(D)), P(torch.zeros(D))
        self.qkv_w, self.qkv_b = P(torch.empty(3 * D, D)), P(torch.zeros(3 * D))
        self.attn_w, self.attn_b = P(torch.empty(D, D)), P(torch.zeros(D))
        self.ln2_w, self.ln2_b = P(torch.ones(D)), P(torch.zeros(D))
        self.fc_w, self.fc_b = P(torch.empty(M, D)), P(torch.zeros(M))
        self.fc2_w, self.fc2_b = P(torch.empty(D, M)), P(torch.zeros(D))

    def mlp(self, x):
        D = x.shape[-1]
        h = F.layer_norm(x, (D,), self.ln2_w, self.ln2_b, LN_EPS)
        return x + F.linear(F.gelu(F.linear(h, self.fc_w, self.fc_b), approximate="tanh"),
                            self.fc2_w, self.fc2_b)

    def forward(self, x, H, mask):
        """x (B, L, D); mask (L, L) bool, True where attention is forbidden, or None."""
        B, L, D = x.shape
        hd = D // H
        h = F.layer_norm(x, (D,), self.ln1_w, self.ln1_b, LN_EPS)
        q, k, v = F.linear(h, self.qkv_w, self.qkv_b).view(B, L, 3, H, hd).permute(2, 0, 3, 1, 4)
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        if mask is not None:
            att = att.masked_fill(mask, float("-inf"))
        o = torch.matmul(att.softmax(-1), v).transpose(1, 2).reshape(B, L, D)
        return self.mlp(x + F.linear(o, self.attn_w, self.attn_b))

    def forward_cached(self, x, H, K, V, pos):
        """Rows x (n, Lr, D) at positions pos..pos+Lr-1 of every sequence; K, V (n, H, Lmax, hd)
        caches of this layer, written at those positions."""
        n, Lr, D = x.shape
        hd = D // H
        h = F.layer_norm(x, (D,), self.ln1_w, self.ln1_b, LN_EPS)
        q, k, v = F.linear(h, self.qkv_w, self.qkv_b).view(n, Lr, 3, H, hd).permute(2, 0, 3, 1, 4)
        K[:, :, pos:pos + Lr] = k
        V[:, :, pos:pos + Lr] = v
        att = torch.matmul(q, K[:, :, :pos + Lr].transpose(-2, -1)) * (1.0 / math.sqrt(hd))
        if Lr > 1:  # prefill: causal inside the new rows
            mask = torch.ones(Lr, pos + Lr, dtype=torch.bool).triu(pos + 1)
            att = att.masked_fill(mask, float("-inf"))
        o = torch.matmul(att.softmax(-1), V[:, :, :pos + Lr]).transpose(1, 2).reshape(n, Lr, D)
        return self.mlp(x + F.linear(o, self.attn_w, self.attn_b))


class Model(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        P = torch.nn.Parameter
        D, M, V = c["d_model"], c["mlp_mult"] * c["d_model"], c["vocab"]
        self.c, self.H, self.D, self.V = c, c["n_heads"], D, V
        self.NP = (c["image_h"] // c["patch"]) * (c["image_w"] // c["patch"])
        self.T = c["max_text"]
        self.L = self.NP + self.T
        ppc = c["patch"] * c["patch"] * c["channels"]
        self.patch_w, self.patch_b = P(torch.empty(D, ppc)), P(torch.zeros(D))
        self.vis_pos = P(torch.empty(self.NP, D))
        self.vis = torch.nn.ModuleList(Block(D, M) for _ in range(c["n_vis_layers"]))
        self.vis_lnf_w, self.vis_lnf_b = P(torch.ones(D)), P(torch.zeros(D))
        self.proj1_w, self.proj1_b = P(torch.empty(D, D)), P(torch.zeros(D))
        self.proj2_w, self.proj2_b = P(torch.empty(D, D)), P(torch.zeros(D))
        self.wte = P(torch.empty(V, D))
        self.dec_pos = P(torch.empty(self.L, D))
        self.dec = torch.nn.ModuleList(Block(D, M) for _ in range(c["n_dec_layers"]))
        self.lnf_w, self.lnf_b = P(torch.ones(D)), P(torch.zeros(D))
        self.head_w = P(torch.empty(V, D))
        self.register_buffer("causal", torch.ones(self.L, self.L, dtype=torch.bool).triu(1))
        # GPT-2 style init, as perpo_model_create: matrices N(0, 0.02), residual projections
        # scaled by 1/sqrt(2 layers), LayerNorm gains 1, biases 0.
        g = torch.Generator().manual_seed(42)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    std = 0.02
                    if name.endswith("attn_w") or name.endswith("fc2_w"):
                        layers = c["n_vis_layers"] if name.startswith("vis") else c["n_dec_layers"]
                        std /= math.sqrt(2.0 * layers)
                    p.normal_(0.0, std, generator=g)

    def patchify(self, images):
        """(I, H, W, C) -> (I, NP, P*P*C), patches row-major, vector order (dy, dx, c)."""
        I, Hh, W, C = images.shape
        P = self.c["patch"]
        x = images.reshape(I, Hh // P, P, W // P, P, C).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(I, self.NP, P * P * C)

    def encode(self, images):
        D = self.D
        x = F.linear(self.patchify(images), self.patch_w, self.patch_b) + self.vis_pos
        for b in self.vis:
            x = b(x, self.H, None)
        x = F.layer_norm(x, (D,), self.vis_lnf_w, self.vis_lnf_b, LN_EPS)
        return F.linear(F.gelu(F.linear(x, self.proj1_w, self.proj1_b), approximate="tanh"),
                        self.proj2_w, self.proj2_b)

    def forward(self, images, image_of, tokens, targets):
        """Per-sequence summed response log-probs (B,)."""
        img_tok = self.encode(images)
        if image_of is not None:
            img_tok = img_tok[image_of]
        e = torch.cat([img_tok, F.embedding(tokens, self.wte)], 1) + self.dec_pos
        for b in self.dec:
            e = b(e, self.H, self.causal)
        t = F.layer_norm(e[:, self.NP:], (self.D,), self.lnf_w, self.lnf_b, LN_EPS)
        lsm = F.linear(t, self.head_w).log_softmax(-1)
        valid = targets >= 0
        picked = lsm.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (picked * valid).sum(1)

    def head(self, x):
        return F.linear(F.layer_norm(x, (self.D,), self.lnf_w, self.lnf_b, LN_EPS), self.head_w)


def encode_row(prompt, response, T):
    """BOS prompt SEP response EOS PAD...; targets: response bytes and EOS, -1 elsewhere."""
    seq = [BOS] + list(prompt.encode()) + [SEP] + list(response.encode()) + [EOS]
    assert len(seq) <= T
    tokens = seq + [PAD] * (T - len(seq))
    targets = [-1] * T
    for t in range(len(prompt) + 1, len(seq) - 1):
        targets[t] = tokens[t + 1]
    return tokens, targets


def lr_at(step, peak=1e-3, min_lr=1e-4, warmup=1, total=100000):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (peak - min_lr) * (1.0 + math.cos(math.pi * p))


def make_adamw(model, lr):
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() == 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() != 2], "weight_decay": 0.0}]
    kw = dict(lr=lr, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    try:
        return torch.optim.AdamW(groups, fused=False, **kw)
    except TypeError:  # torch < 2.0 has no fused AdamW; foreach=False is the same loop
        return torch.optim.AdamW(groups, **kw)


# ------------------------------------------------------------------------------------------
# FLOPs of one step: the same formula as bench.c (bench/README.md)
# ------------------------------------------------------------------------------------------
def step_flops(c, n_seq, n_img):
    NP = (c["image_h"] // c["patch"]) * (c["image_w"] // c["patch"])
    T, D, V = c["max_text"], c["d_model"], c["vocab"]
    L, M, PPC = NP + T, c["mlp_mult"] * D, c["patch"] ** 2 * c["channels"]
    Rv, Rd = n_img * NP, n_seq * L
    block = 2.0 * D * (3 * D + D + 2 * M)
    patch = 2.0 * Rv * PPC * D
    vis = c["n_vis_layers"] * (Rv * block + 4.0 * n_img * NP * NP * D)
    proj = 4.0 * Rv * D * D
    dec = c["n_dec_layers"] * (Rd * block + 2.0 * n_seq * D * L * (L + 1))
    head = 2.0 * n_seq * T * D * V
    return 3.0 * (patch + vis + proj + dec + head) - patch


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------
OPT = None


def emit(name, values, unit, **extra):
    cfg = {"threads": OPT.threads, "batch": CFG["max_batch"],
           "build": "torch-%s-eager" % torch.__version__.split("+")[0],
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY") or "default"}
    cfg.update(extra)
    print(json.dumps({"name": name, "value": round(statistics.median(values), 6), "unit": unit,
                      "min": round(min(values), 6), "max": round(max(values), 6),
                      "rounds": len(values), "config": cfg}, separators=(",", ":")), flush=True)


def wanted(group):
    return not OPT.only or group in OPT.only.split(",")


# ------------------------------------------------------------------------------------------
# Benchmarks
# ------------------------------------------------------------------------------------------
def bench_gemm():
    c, B = CFG, CFG["max_batch"]
    NP = (c["image_h"] // c["patch"]) * (c["image_w"] // c["patch"])
    D, Mh, V = c["d_model"], c["mlp_mult"] * c["d_model"], c["vocab"]
    Nd, Nt = B * (NP + c["max_text"]), B * c["max_text"]
    shapes = [("dec.qkv.fwd", 0, 1, Nd, 3 * D, D, 0), ("dec.attn_proj.fwd", 0, 1, Nd, D, D, 0),
              ("dec.fc.fwd", 0, 1, Nd, Mh, D, 0), ("dec.fc2.fwd", 0, 1, Nd, D, Mh, 0),
              ("head.fwd", 0, 1, Nt, V, D, 0), ("dec.qkv.dx", 0, 0, Nd, D, 3 * D, 1),
              ("dec.fc2.dx", 0, 0, Nd, Mh, D, 1), ("dec.qkv.dW", 1, 0, 3 * D, D, Nd, 1),
              ("dec.fc.dW", 1, 0, Mh, D, Nd, 1), ("dec.fc2.dW", 1, 0, D, Mh, Nd, 1),
              ("head.dW", 1, 0, V, D, Nt, 1), ("square", 0, 0, 1024, 1024, 1024, 0)]
    target = 0.02 if OPT.quick else 0.1
    for what, ta, tb, M, N, K, acc in shapes:
        # same storage as bench.c: ta -> A stored (K, M); tb -> B stored (N, K)
        A = torch.rand(K, M) - 0.5 if ta else torch.rand(M, K) - 0.5
        Bm = torch.rand(N, K) - 0.5 if tb else torch.rand(K, N) - 0.5
        a, b = (A.t() if ta else A), (Bm.t() if tb else Bm)
        C = torch.zeros(M, N)

        def run():
            if acc:
                C.addmm_(a, b)
            else:
                torch.mm(a, b, out=C)
        t0 = now()
        run()
        one = now() - t0
        reps = max(1, min(1000, int(target / one) if one > 0 else 1000))
        rates = []
        for _ in range(OPT.rounds):
            t0 = now()
            for _ in range(reps):
                run()
            rates.append(2.0 * M * N * K * reps / (now() - t0) / 1e9)
        emit("gemm_gflops", rates, "GFLOP/s", shape="%dx%dx%d" % (M, N, K), op=what, ta=ta, tb=tb,
             accumulate=acc, gemm="torch.mm")


def make_images(n, g):
    return torch.rand(n, CFG["image_h"], CFG["image_w"], CFG["channels"], generator=g)


def bench_sft(model, g):
    B, T = CFG["max_batch"], CFG["max_text"]
    rows = [encode_row(PROMPT_TRAIN, "[0.%02d,0.34,0.56,0.78]" % (b % 100), T) for b in range(B)]
    tokens = torch.tensor([r[0] for r in rows])
    targets = torch.tensor([r[1] for r in rows])
    count = int((targets >= 0).sum())
    images = make_images(B, g)
    opt = make_adamw(model, 1e-3)
    params = list(model.parameters())
    flops = step_flops(CFG, B, B)
    ms, gf = [], []
    for r in range(-1, OPT.rounds):  # r = -1: warm-up
        t0 = now()
        opt.zero_grad(set_to_none=True)
        loss = -model(images, None, tokens, targets).sum() / count
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(r + 1)
        opt.step()
        dt = now() - t0
        if r >= 0:
            ms.append(1e3 * dt)
            gf.append(flops / dt / 1e9)
    extra = dict(images=B, image_tokens=model.NP, text_positions=T - 1, step_gflop=round(flops / 1e9, 4))
    emit("sft_step_ms", ms, "ms", **extra)
    emit("sft_step_gflops", gf, "GFLOP/s", **extra)


def perpo_loss(s, R, beta=0.1, gamma=0.5):
    """PerPO over lists: s, R (n_lists, n). Pairs R_i > R_j weighted by normalized
    |R_i - R_j|^gamma, pair loss -log sigmoid(beta (s_i - s_j)); mean over lists."""
    span = (R.max(1, keepdim=True).values - R.min(1, keepdim=True).values).unsqueeze(-1)
    gap = R.unsqueeze(2) - R.unsqueeze(1)
    pair = gap > 0
    w = torch.where(pair, (gap.clamp(min=0) / span).pow(gamma), torch.zeros_like(gap))
    w = w / w.sum((1, 2), keepdim=True)
    x = beta * (s.unsqueeze(2) - s.unsqueeze(1))
    return (w * F.softplus(-x)).sum((1, 2)).mean()


def bench_perpo(model, g):
    n_resp = 8
    n_lists, T = CFG["max_batch"] // n_resp, CFG["max_text"]
    B = n_lists * n_resp
    rows = [encode_row(PROMPT_TRAIN, "[0.%02d,0.%02d,0.56,0.78]" % ((b % 8) * 11, (b // 8) % 100), T)
            for b in range(B)]
    tokens = torch.tensor([r[0] for r in rows])
    targets = torch.tensor([r[1] for r in rows])
    image_of = torch.arange(B) // n_resp
    images = make_images(n_lists, g)
    reward = (torch.arange(B) % n_resp).float().div(n_resp).view(n_lists, n_resp)
    with torch.no_grad():  # reference log-probs, once, outside the timing
        ref = model(images, image_of, tokens, targets).view(n_lists, n_resp)
    opt = make_adamw(model, 1e-5)
    params = list(model.parameters())
    flops = step_flops(CFG, B, n_lists)
    ms, gf = [], []
    for r in range(-1, OPT.rounds):
        t0 = now()
        opt.zero_grad(set_to_none=True)
        logp = model(images, image_of, tokens, targets).view(n_lists, n_resp)
        loss = perpo_loss(logp - ref, reward)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(r + 1, peak=1e-5, min_lr=1e-6)
        opt.step()
        dt = now() - t0
        if r >= 0:
            ms.append(1e3 * dt)
            gf.append(flops / dt / 1e9)
    extra = dict(lists=n_lists, responses=n_resp, images=n_lists, objective="perpo",
                 step_gflop=round(flops / 1e9, 4))
    emit("perpo_step_ms", ms, "ms", **extra)
    emit("perpo_step_gflops", gf, "GFLOP/s", **extra)


def suppress_eos(model):
    """As bench.c: one LayerNorm output feature pinned to 1, its head column +20 for every byte
    and 0 for EOS, so EOS never cuts a run short. Same cost per token."""
    with torch.no_grad():
        model.lnf_w[0] = 0.0
        model.lnf_b[0] = 1.0
        model.head_w[:256, 0] = 20.0
        model.head_w[256:, 0] = 0.0


@torch.inference_mode()
def generate(model, images, image_of, n, prompt, temperature, max_new, gen=None):
    """n sequences with the same prompt; sequence s sees images[image_of[s]]. Images are encoded
    once; sequences sharing an image share one prefill (copied into their cache rows)."""
    D, NP, H = model.D, model.NP, model.H
    hd = D // H
    img_tok = model.encode(images)
    text = [BOS] + list(prompt.encode()) + [SEP]
    # prefill each distinct image once (all with the same prompt), batched
    n_img = images.shape[0]
    x = torch.cat([img_tok, F.embedding(torch.tensor(text), model.wte).expand(n_img, -1, -1)], 1)
    x = x + model.dec_pos[:NP + len(text)]
    caches = []
    for blk in model.dec:
        K = torch.empty(n_img, H, model.L, hd)
        V = torch.empty(n_img, H, model.L, hd)
        x = blk.forward_cached(x, H, K, V, 0)
        caches.append((K, V))
    logits = model.head(x[:, -1])
    if n_img != n or image_of is not None:  # give each sequence its image's cache rows
        idx = image_of if image_of is not None else torch.arange(n)
        caches = [(K[idx].contiguous(), V[idx].contiguous()) for K, V in caches]
        logits = logits[idx]
    allowed = torch.zeros(model.V, dtype=torch.bool)
    allowed[:256] = True
    allowed[EOS] = True
    done = torch.zeros(n, dtype=torch.bool)
    count = 0
    pos = NP + len(text)
    for step in range(max_new):
        z = logits.masked_fill(~allowed, float("-inf"))
        if temperature > 0:
            nxt = torch.multinomial((z / temperature).softmax(-1), 1, generator=gen).squeeze(1)
        else:
            nxt = z.argmax(-1)
        done |= nxt == EOS
        count += int((~done).sum())
        if bool(done.all()) or step + 1 == max_new:
            break  # the last token is not fed back, as in perpo_generate
        x = (F.embedding(nxt, model.wte) + model.dec_pos[pos]).unsqueeze(1)
        for blk, (K, V) in zip(model.dec, caches):
            x = blk.forward_cached(x, H, K, V, pos)
        logits = model.head(x[:, -1])
        pos += 1
    return count


def bench_generate(model, g):
    n = 8
    images = make_images(n, g)
    tps, tokens = [], 0
    for r in range(-1, OPT.rounds):
        t0 = now()
        tokens = generate(model, images, None, n, PROMPT_GEN, 0.0, GEN_NEW_TOKENS)
        dt = now() - t0
        if r >= 0:
            tps.append(tokens / dt)
    emit("generate_tokens_per_s", tps, "tokens/s", seqs=n, images=n, new_tokens=GEN_NEW_TOKENS,
         tokens_generated=tokens, prompt=PROMPT_GEN, kv_cache=True)


def bench_sample(model, g):
    n = 8
    images = make_images(1, g)
    image_of = torch.zeros(n, dtype=torch.long)
    ms, total = [], 0
    for r in range(-1, OPT.rounds):
        gen = torch.Generator().manual_seed(r + 2)
        t0 = now()
        tokens = generate(model, images, image_of, n, PROMPT_GEN, 1.0, GEN_NEW_TOKENS, gen)
        dt = now() - t0
        if r >= 0:
            ms.append(1e3 * dt)
            total += tokens
    emit("sample_n8_ms", ms, "ms", n=n, images=1, temperature=1, max_new_tokens=GEN_NEW_TOKENS,
         tokens_per_call=total / OPT.rounds, prompt=PROMPT_GEN)


def main():
    global OPT
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    ap.add_argument("--rounds", type=int, default=0, help="timed repetitions (default 5, 3 with --quick)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated subset of gemm,sft,perpo,generate,sample")
    OPT = ap.parse_args()
    OPT.rounds = OPT.rounds if OPT.rounds > 0 else (3 if OPT.quick else 5)
    if OPT.threads > 0:
        torch.set_num_threads(OPT.threads)
    OPT.threads = torch.get_num_threads()
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(7)
    if wanted("gemm"):
        bench_gemm()
    if any(wanted(x) for x in ("sft", "perpo", "generate", "sample")):
        model = Model(CFG)
        if wanted("sft"):
            bench_sft(model, g)
        if wanted("perpo"):
            bench_perpo(model, g)
        suppress_eos(model)
        if wanted("generate"):
            bench_generate(model, g)
        if wanted("sample"):
            bench_sample(model, g)
    emit("peak_rss_mb", [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0], "MB")


if __name__ == "__main__":
    main()
