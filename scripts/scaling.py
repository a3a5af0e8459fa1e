"""Multi-device scaling of forward+backward under plain `jax.jit` (issue 8): ours against lax.conv_general_dilated.

For each device count n in --devices (each <= the visible count) and each sharding of the activation (batch; D; D
over n), one step is `jax.value_and_grad` of sum(sin(conv(x, w, b))) with respect to x, w and b, jitted with x (and
the cotangents) sharded and w, b replicated. Reported per (implementation, sharding, n):
  - ms per step: median of --reps timed loops (a loop of calls between two block_until_ready, like `jaxconv3d bench`);
  - parallel efficiency: t(1 device, ours) / (n x t(n devices));
  - whether the compiled program all-gathers an activation (a halo plan has only collective-permutes);
  - the largest |difference| against the same step on one device, relative to its largest value;
  - bytes per device the compiled step needs (arguments + results + XLA temporaries, `memory_analysis()`).

    python scripts/scaling.py --devices 1 2 4 --dtype bfloat16 --shape 1 32 32 256 256 256 --json out/scaling.json
    python scripts/scaling.py --devices 4 --shape 1 32 32 704 704 704 --skip-single   # larger than one GPU

On a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=4 gives four host devices (small shapes only).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jaxconv3d

SHARDINGS = {  # name -> PartitionSpec of the NCDHW activation over a 1-D mesh axis "d"
    "batch": P("d"),
    "D": P(None, None, "d"),
    "H": P(None, None, None, "d"),
}


def conv_fn(impl: str, padding: int):
    if impl == "ours":
        return lambda x, w, b: jaxconv3d.conv3d(x, w, b, padding=padding)

    def lax_conv(x, w, b):
        # float32 at HIGHEST, i.e. float32-accurate like ours (XLA's default on a GPU is TF32 for float32)
        y = jax.lax.conv_general_dilated(x, w, (1, 1, 1), [(padding, padding)] * 3,
                                         dimension_numbers=("NCDHW", "OIDHW", "NCDHW"),
                                         precision=jax.lax.Precision.HIGHEST)
        return y + b.reshape(1, -1, 1, 1, 1)

    return lax_conv


def step_fn(conv):
    loss = lambda x, w, b: jnp.sum(jnp.sin(conv(x, w, b).astype(jnp.float32)))
    return jax.value_and_grad(loss, argnums=(0, 1, 2))


def timed(fn, args, reps: int, min_loop_ms: float = 20.0) -> float:
    jax.block_until_ready(fn(*args))  # compile
    calls = 1
    while True:
        t = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        if (time.perf_counter() - t) * 1e3 >= min_loop_ms or calls >= 1000:
            break
        calls *= 2
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - t) * 1e3 / calls)
    return statistics.median(samples)


def program_bytes(compiled) -> int | None:
    """Bytes one device needs for the compiled step: its arguments, results and XLA's temporaries (per-device sizes
    of the SPMD program; `memory_stats()`'s peak would carry over from the configurations timed before)."""
    try:
        m = compiled.memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)
    except Exception:  # a backend without the analysis
        return None


def max_rel_diff(got, want) -> float:
    worst = 0.0
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
        worst = max(worst, float(np.abs(g - r).max() / max(np.abs(r).max(), 1e-300)))
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--shape", type=int, nargs=6, default=[1, 32, 32, 256, 256, 256],
                    metavar=("N", "C", "O", "D", "H", "W"))
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--shardings", nargs="+", default=["batch", "D"], choices=sorted(SHARDINGS))
    ap.add_argument("--impls", nargs="+", default=["ours", "lax"], choices=["ours", "lax"])
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--skip-single", action="store_true", help="no 1-device reference (a volume too large for one)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    n_, c, o, d, h, w_ = args.shape
    dtype = jnp.dtype(args.dtype)
    visible = jax.devices()
    key = jax.random.PRNGKey(0)
    kx, kw, kb = jax.random.split(key, 3)
    x = jax.random.normal(kx, (n_, c, d, h, w_), jnp.float32).astype(dtype)
    w = (jax.random.normal(kw, (o, c, args.kernel, args.kernel, args.kernel), jnp.float32)
         / math.sqrt(c * args.kernel**3)).astype(dtype)
    b = jax.random.normal(kb, (o,), jnp.float32).astype(dtype)
    pad = args.kernel // 2
    print(f"devices: {len(visible)} x {visible[0].device_kind}; x {x.shape} {args.dtype}, w {w.shape}, padding {pad}")

    rows, single = [], {}
    for impl in args.impls:
        step = jax.jit(step_fn(conv_fn(impl, pad)))
        if not args.skip_single:
            one = jax.device_put((x, w, b), visible[0])
            single[impl] = (timed(step, one, args.reps), jax.device_get(step(*one)))
        for n in args.devices:
            if n > len(visible):
                print(f"skip {n} devices: only {len(visible)} visible")
                continue
            mesh = Mesh(np.array(visible[:n]), ("d",))
            for name in args.shardings if n > 1 else ["batch"]:
                spec = SHARDINGS[name]
                if n > 1 and x.shape[len(spec) - 1] % n:
                    print(f"skip {impl} {name} over {n}: extent {x.shape[len(spec) - 1]} not divisible")
                    continue
                xs = jax.device_put(x, NamedSharding(mesh, spec))
                ws, bs = (jax.device_put(t, NamedSharding(mesh, P())) for t in (w, b))
                compiled = step.lower(xs, ws, bs).compile()
                hlo = compiled.as_text()
                ms = timed(step, (xs, ws, bs), args.reps)
                row = dict(impl=impl, sharding=name, devices=n, ms=ms, all_gather="all-gather" in hlo,
                           collective_permute="collective-permute" in hlo,
                           bytes_per_device=program_bytes(compiled))
                if impl in single:
                    row["max_rel_diff_vs_1"] = max_rel_diff(jax.device_get(step(xs, ws, bs)), single[impl][1])
                if "ours" in single:
                    row["efficiency_vs_ours_1"] = single["ours"][0] / (n * ms)
                rows.append(row)
                eff = row.get("efficiency_vs_ours_1")
                print(f"{impl:5s} {name:6s} {n} dev: {ms:9.3f} ms/step"
                      + (f"  efficiency {eff:5.2f}" if eff is not None else "")
                      + f"  all-gather {row['all_gather']!s:5s}"
                      + (f"  diff {row['max_rel_diff_vs_1']:.1e}" if "max_rel_diff_vs_1" in row else "")
                      + (f"  memory {row['bytes_per_device'] / 2**20:.1f} MiB/device"
                         if row["bytes_per_device"] else ""),
                      flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(devices=[str(v) for v in visible], shape=args.shape, kernel=args.kernel, dtype=args.dtype,
                           single_device_ms={k: v[0] for k, v in single.items()}, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
