# AB-TEMP (branch v18-thin-halo): device 0 timeline of the sharded scaling step; remove before merging.
"""Kernel time per step on device 0: ours, bf16 N1 C32->32 256^3 k3, one device vs D / H over 4 (CUPTI via
torch.profiler sees XLA's kernels)."""
import collections, json, sys, tempfile
sys.path.insert(0, "scripts")
import jax, jax.numpy as jnp, numpy as np, torch
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from torch.profiler import profile, ProfilerActivity
from scaling import SHARDINGS, conv_fn, step_fn
x = jax.random.normal(jax.random.PRNGKey(0), (1, 32, 256, 256, 256), jnp.float32).astype(jnp.bfloat16)
w = (jax.random.normal(jax.random.PRNGKey(1), (32, 32, 3, 3, 3)) / 15).astype(jnp.bfloat16)
b = jnp.zeros((32,), jnp.bfloat16)
step = jax.jit(step_fn(conv_fn("ours", 1)))
def prof(name, args, steps=5):
    for _ in range(3): jax.block_until_ready(step(*args))
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        for _ in range(steps): out = step(*args)
        jax.block_until_ready(out)
    f = tempfile.mktemp(suffix=".json"); p.export_chrome_trace(f)
    ev = [e for e in json.load(open(f))["traceEvents"] if e.get("cat") in ("kernel", "gpu_memset", "gpu_memcpy")]
    dev0 = [e for e in ev if e.get("args", {}).get("device", 0) == 0]
    tot = collections.Counter(); cnt = collections.Counter()
    for e in dev0: tot[e["name"][:100]] += e["dur"]; cnt[e["name"][:100]] += 1
    span = (max(e["ts"] + e["dur"] for e in dev0) - min(e["ts"] for e in dev0)) / steps / 1e3
    print(f"== {name}: device 0 busy {sum(tot.values())/steps/1e3:.3f} ms/step, span {span:.3f} ms/step, {len(dev0)//steps} activities/step")
    for k, v in tot.most_common(18): print(f"   {v/steps/1e3:8.3f} ms  x{cnt[k]//steps}  {k}")
prof("1 device", jax.device_put((x, w, b), jax.devices()[0]))
mesh = Mesh(np.array(jax.devices()[:4]), ("d",))
for s in ("D", "H"):
    xs = jax.device_put(x, NamedSharding(mesh, SHARDINGS[s]))
    ws, bs = (jax.device_put(t, NamedSharding(mesh, P())) for t in (w, b))
    prof(f"{s} over 4", (xs, ws, bs))
