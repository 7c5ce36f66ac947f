#!/usr/bin/python3
"""perpo.h against PyTorch eager, same model, shapes, batch and thread count.

    /usr/bin/python3 bench/compare.py [--rounds 3] [--threads 2] [--full] [--wait-policy passive]

Builds bench/bench.c twice (built-in GEMM, and -DPERPO_USE_CBLAS with OpenBLAS when pkg-config
finds it) unless BENCH / BENCH_CBLAS name ready binaries, then runs, round after round,
build/bench, bench/torch_reference.py and (GEMM lines only) the CBLAS build, alternately. Each
run reports medians over its own inner rounds; this script prints, per metric, the median
over the outer rounds of the per-round ratio and its spread (min..max over rounds):

    ratio = torch time / perpo time   or   perpo rate / torch rate     (> 1: perpo.h is faster)

plus built-in GEMM vs OpenBLAS per shape, and the SFT step's fraction of the machine's FP32
peak proxy (sft_step_gflops / OpenBLAS sgemm 1024^3 GFLOP/s at the same thread count).
BENCH_BF16 names a build with -DPERPO_USE_BF16 (`make bench-compare` makes one where the CPU
has AVX512_BF16); each round then runs it too, and its columns follow PyTorch's.
Raw JSON lines of every run go to build/bench-compare.jsonl.
"""
import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# metric -> True when higher is better (a rate), False for a time or a size
METRICS = [("sft_step_ms", False), ("sft_step_gflops", True), ("perpo_step_ms", False),
           ("perpo_step_gflops", True), ("generate_tokens_per_s", True), ("sample_n8_ms", False),
           ("peak_rss_mb", False)]


def build(out, extra_flags, extra_libs):
    cc = os.environ.get("CC", "cc")
    flags = shlex.split(os.environ.get("BENCH_CFLAGS", "-std=c99 -O2 -march=native -ffp-contract=fast -fopenmp"))
    cmd = [cc] + flags + extra_flags + ["-o", out, os.path.join(HERE, "bench.c")] + extra_libs + ["-lm"]
    print("build:", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def run(cmd, env):
    """Runs one benchmark; returns {(name, GEMM op or ""): line}."""
    print("run:", " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit("failed: %s (exit %d)" % (" ".join(cmd), p.returncode))
    out = {}
    with open(os.path.join(ROOT, "build", "bench-compare.jsonl"), "a") as log:
        for line in p.stdout.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            log.write(line + "\n")
            d = json.loads(line)
            out[(d["name"], d["config"].get("op", ""))] = d  # GEMM lines: one per op
    return out


def summary(values):
    return statistics.median(values), min(values), max(values)


def fmt(v):
    return "%.3g" % v if abs(v) < 1000 else "%.0f" % v


def main():
    ap = argparse.ArgumentParser(description="perpo.h vs PyTorch eager")
    ap.add_argument("--rounds", type=int, default=3, help="outer rounds, each runs every benchmark once")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="run the benchmarks without --quick")
    ap.add_argument("--wait-policy", default="passive", choices=["passive", "active", "default"],
                    help="OMP_WAIT_POLICY for every run (see bench/README.md); default: passive")
    a = ap.parse_args()

    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    open(os.path.join(ROOT, "build", "bench-compare.jsonl"), "w").close()
    bench = os.environ.get("BENCH")
    if not bench:
        bench = os.path.join(ROOT, "build", "bench")
        build(bench, [], [])
    bench_cblas = os.environ.get("BENCH_CBLAS")
    if bench_cblas is None:
        pc = shutil.which("pkg-config")
        cf = subprocess.run([pc, "--cflags", "--libs", "openblas"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True) if pc else None
        if cf and cf.returncode == 0:
            bench_cblas = os.path.join(ROOT, "build", "bench_cblas")
            cflags = subprocess.run([pc, "--cflags", "openblas"], stdout=subprocess.PIPE, text=True).stdout.split()
            libs = subprocess.run([pc, "--libs", "openblas"], stdout=subprocess.PIPE, text=True).stdout.split()
            build(bench_cblas, ["-DPERPO_USE_CBLAS"] + cflags, libs)
        else:
            print("note: OpenBLAS not found by pkg-config: no CBLAS comparison", file=sys.stderr)
    bench_bf16 = os.environ.get("BENCH_BF16") or None
    have_torch = subprocess.run([PY, "-c", "import torch"], stderr=subprocess.DEVNULL).returncode == 0
    if not have_torch:
        print("note: %s cannot import torch (apt-get install python3-torch): perpo.h only" % PY, file=sys.stderr)

    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(a.threads)
    env["OPENBLAS_NUM_THREADS"] = str(a.threads)
    if a.wait_policy == "default":
        env.pop("OMP_WAIT_POLICY", None)
    else:
        env["OMP_WAIT_POLICY"] = a.wait_policy
    common = ["--threads", str(a.threads)] + ([] if a.full else ["--quick"])

    rounds = []  # per round: dict(perpo=..., torch=..., cblas=...)
    for r in range(a.rounds):
        print("round %d/%d" % (r + 1, a.rounds), file=sys.stderr, flush=True)
        res = {"perpo": run([bench] + common, env)}
        if have_torch:
            res["torch"] = run([PY, os.path.join(HERE, "torch_reference.py")] + common, env)
        if bench_cblas:
            res["cblas"] = run([bench_cblas] + common + ["--only", "gemm"], env)
        if bench_bf16:
            res["bf16"] = run([bench_bf16] + common + ["--only", "gemm,sft,perpo,generate,sample"], env)
        rounds.append(res)

    def series(side, key):
        return [rd[side][key]["value"] for rd in rounds if side in rd and key in rd[side]]

    def ratio_series(num_side, den_side, key, higher_better):
        out = []
        for rd in rounds:
            if key in rd.get(num_side, {}) and key in rd.get(den_side, {}):
                x, y = rd[num_side][key]["value"], rd[den_side][key]["value"]
                if x > 0 and y > 0:
                    out.append(x / y if higher_better else y / x)
        return out

    mode = "quick" if not a.full else "full"
    print("perpo.h vs PyTorch eager: %d threads, %d rounds (%s runs), OMP_WAIT_POLICY=%s"
          % (a.threads, a.rounds, mode, a.wait_policy))
    print("values are medians over rounds; ratio > 1 means perpo.h is faster (or smaller)")
    head = "%-22s %-9s %10s %10s %9s  %-14s" % ("metric", "unit", "perpo.h", "torch", "ratio", "[min..max]")
    if bench_bf16:
        head += " %10s %9s  %s" % ("bf16", "ratio", "[min..max]")
    print(head.rstrip())
    for name, higher in METRICS:
        key = (name, "")
        pv = series("perpo", key)
        if not pv:
            continue
        unit = rounds[0]["perpo"][key]["unit"]
        tv = series("torch", key)
        rs = ratio_series("perpo", "torch", key, higher)
        line = "%-22s %-9s %10s %10s" % (name, unit, fmt(summary(pv)[0]), fmt(summary(tv)[0]) if tv else "-")
        line += " %8.2fx  %-14s" % (summary(rs)[0], "[%.2f..%.2f]" % summary(rs)[1:]) if rs else " %9s  %-14s" % ("-", "")
        bv = series("bf16", key)
        bs = ratio_series("bf16", "torch", key, higher)
        if bv:
            line += " %10s" % fmt(summary(bv)[0])
            if bs:
                line += " %8.2fx  [%.2f..%.2f]" % summary(bs)
        print(line.rstrip())

    split = [("sft_forward_ms", "forward"), ("sft_backward_ms", "backward"), ("sft_optimizer_ms", "optimizer"),
             ("profile_products_ms", "products (replayed)"), ("profile_attention_ms", "attention (replayed)"),
             ("profile_elementwise_ms", "element-wise (replayed, unfused)")]
    if any(series("perpo", (n, "")) for n, _ in split):
        print()
        print("where perpo.h's SFT step goes (medians over rounds; bench/profile.h replays each kernel class)")
        for n, what in split:
            v = series("perpo", (n, ""))
            if v:
                print("  %-34s %8s ms" % (what, fmt(summary(v)[0])))
        for n, field, what in [("profile_products_gflops", "fraction_of_best_gemm", "products' rate / best GEMM rate"),
                               ("sft_step_fraction_of_best_gemm", None, "SFT step's rate / best GEMM rate")]:
            v = [rd["perpo"][(n, "")]["config"][field] if field else rd["perpo"][(n, "")]["value"]
                 for rd in rounds if (n, "") in rd["perpo"]]
            if v:
                print("  %-34s %8.1f%%" % (what, 100 * summary(v)[0]))

    gemm_keys = [k for k in rounds[0]["perpo"] if k[0] == "gemm_gflops"]
    if gemm_keys:
        print()
        print("GEMM GFLOP/s (median over rounds); ratios: built-in / other, > 1 means built-in is faster")
        print("%-16s %-18s %9s %9s %9s  %-20s %-20s %s" % ("shape MxNxK", "op", "builtin", "openblas", "torch",
                                                          "builtin/openblas", "builtin/torch",
                                                          "bf16" if bench_bf16 else ""))
        for key in gemm_keys:
            op, shape = key[1], rounds[0]["perpo"][key]["config"].get("shape", "")
            b = series("perpo", key)
            o = series("cblas", key)
            t = series("torch", key)
            ro = ratio_series("perpo", "cblas", key, True)
            rt = ratio_series("perpo", "torch", key, True)
            cell = lambda rs: ("%.2fx [%.2f..%.2f]" % summary(rs)) if rs else "-"
            bf = series("bf16", key)
            print(("%-16s %-18s %9s %9s %9s  %-20s %-20s %s" % (shape, op, fmt(summary(b)[0]),
                                                               fmt(summary(o)[0]) if o else "-",
                                                               fmt(summary(t)[0]) if t else "-", cell(ro), cell(rt),
                                                               fmt(summary(bf)[0]) if bf else "")).rstrip())

    peak_key = ("gemm_gflops", "square")
    sft_key = ("sft_step_gflops", "")
    fr = []
    for rd in rounds:
        if peak_key in rd.get("cblas", {}) and sft_key in rd.get("perpo", {}):
            fr.append(rd["perpo"][sft_key]["value"] / rd["cblas"][peak_key]["value"])
    if fr:
        m, lo, hi = summary(fr)
        print()
        print("SFT step fraction of peak (sft_step_gflops / OpenBLAS sgemm 1024^3, %d threads): "
              "%.1f%% [%.1f..%.1f]" % (a.threads, 100 * m, 100 * lo, 100 * hi))
        tf = []
        for rd in rounds:
            if peak_key in rd.get("cblas", {}) and sft_key in rd.get("torch", {}):
                tf.append(rd["torch"][sft_key]["value"] / rd["cblas"][peak_key]["value"])
        if tf:
            m, lo, hi = summary(tf)
            print("PyTorch SFT step fraction of the same peak: %.1f%% [%.1f..%.1f]" % (100 * m, 100 * lo, 100 * hi))
    print("raw JSON lines: build/bench-compare.jsonl")


if __name__ == "__main__":
    main()
