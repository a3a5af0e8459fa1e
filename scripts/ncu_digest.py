"""Digest of an `ncu --page raw` log: per kernel launch, its duration (us), instructions, DRAM and L1 busy (%), warps
an SM, registers, cycles between issues, and the seven largest stall reasons (cycles an issued instruction).

    ncu --section SpeedOfLight --section WarpStateStats --section InstructionStats --section Occupancy \
        --section MemoryWorkloadAnalysis --section LaunchStats --page raw python3 PROGRAM > LOG
    python3 scripts/ncu_digest.py LOG [TITLE]
"""
import re, sys
txt = open(sys.argv[1]).read().split("\n")
blocks, cur = [], None
for line in txt:
    m = re.match(r"^  (\S.*?) \(\d+, \d+, \d+\)x\(\d+, \d+, \d+\)", line)
    if m:
        cur = {"name": m.group(1)[:60], "m": {}}; blocks.append(cur); continue
    if cur is None: continue
    parts = line.split()
    if len(parts) >= 2 and "__" in parts[0]:
        cur["m"][parts[0]] = parts[-1]
print("==", sys.argv[2] if len(sys.argv) > 2 else sys.argv[1], len(blocks), "launches")
for b in blocks:
    m = b["m"]
    g = lambda k: m.get(k, "?")
    stalls = []
    for k, v in m.items():
        r = re.match(r"smsp__average_warps_issue_stalled_(\w+)_per_issue_active\.ratio", k)
        if r:
            try: stalls.append((float(v.replace(",", "")), r.group(1)))
            except ValueError: pass
    stalls.sort(reverse=True)
    print(f"{b['name']}: dur {g('gpu__time_duration.sum')} us, inst {g('smsp__inst_executed.sum')}, "
          f"dram {g('gpu__dram_throughput.avg.pct_of_peak_sustained_elapsed')} %, "
          f"l1 {g('l1tex__throughput.avg.pct_of_peak_sustained_active')} %, "
          f"warps/SM {g('sm__warps_active.avg.per_cycle_active')}, regs {g('launch__registers_per_thread')}, "
          f"cyc/issue {g('smsp__average_warp_latency_per_inst_issued.ratio')}")
    print("   stalls/issue: " + ", ".join(f"{n} {v:.2f}" for v, n in stalls[:7]))
