"""Heap at its peak per socket, by allocation site: heaptrack's collapsed stacks (peak cost),
largest first, each named by its innermost frames (function and file)."""
import sys

stacks, sockets = sys.argv[1], int(sys.argv[2])
noise = ("_R", "catch_unwind", "call_once", "do_call", "poll_future", "{closure", "alloc_impl",
         "allocate", "box_new", "with_capacity_in", "try_allocate", "alloc (", "new<> (boxed")
rows = []
total = 0
for line in open(stacks):
    stack, _, cost = line.rstrip().rpartition(" ")
    if not cost.isdigit():
        continue
    total += int(cost)
    frames = [f for f in stack.split(";") if not f.startswith(noise)]
    rows.append((int(cost), " < ".join(reversed(frames[-5:]))))
rows.sort(reverse=True)
print(f"total at peak: {total / 1e6:.1f} MB = {total / sockets / 1024:.2f} KiB per socket")
for cost, where in rows[:15]:
    print(f"{cost / sockets:8.0f} B  {where[:150]}")
