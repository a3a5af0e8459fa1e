#!/usr/bin/env bash
# AB-TEMP (branch v18-thin-halo; remove before merging): on a 4-GPU machine after scripts/setup.sh, the spatially
# sharded step with the slab's own call + thin halo calls (default) against the extended slab (JAXCONV3D_AB_OLD=1),
# alternated twice, then the per-kernel timeline of device 0 for each. Usage: bash scripts/ab_thin_halo.sh OUTDIR
set -u
out=${1:?OUTDIR}
for i in 1 2; do
  for mode in thin old; do
    env $([ $mode = old ] && echo JAXCONV3D_AB_OLD=1) timeout 200 scripts/py scripts/scaling.py --devices 1 4 \
      --dtype bfloat16 --shardings D H --impls ours --reps 6 2>&1 | grep -v Warn | sed "s/^/[$mode $i] /" | tee -a "$out/ab_thin_halo.txt"
  done
done
for mode in thin old; do
  env $([ $mode = old ] && echo JAXCONV3D_AB_OLD=1) timeout 120 scripts/py scripts/prof_shard_tmp.py 2>&1 | grep -v -i warn \
    | sed "s/^/[$mode] /" | tee -a "$out/ab_thin_halo_prof.txt"
done
