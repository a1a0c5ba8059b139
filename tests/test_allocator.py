"""chordrec.allocator: large blocks are reused instead of mapped and zeroed again, and
handed back when a run ends."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A child process allocates, fills and frees a 320 MB tensor (a CRNN evaluation batch's
# convolution output) 24 times and prints the minor page faults of the last 8: by
# default glibc maps fresh pages for every allocation (82,000 faults of 4 KiB each);
# with the setting the heap settles after 6-10 allocations and reuses the freed block.
CHILD = """
import resource, sys
import torch
from chordrec.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
for i in range(24):
    if i == 16:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.empty(80 * 1024 * 1024, dtype=torch.float32)
    block.fill_(1.0)
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.slow
def test_freed_large_blocks_are_reused_without_page_faults() -> None:
    assert _page_faults("default") > 8 * 80_000  # every allocation faulted its pages in
    assert _page_faults("keep") < 1_000  # the freed block reused as it was


# A child process keeps a freed 320 MB block in its heap, then hands it back: its
# resident memory (MB) after the free, and after release_freed_memory.
RELEASE_CHILD = """
import os
import torch
from chordrec.allocator import freed_memory_kept
def resident_mb():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
with freed_memory_kept():
    block = torch.empty(80 * 1024 * 1024, dtype=torch.float32)
    block.fill_(1.0)
    del block
    kept = resident_mb()
print(kept, resident_mb())
"""


def test_freed_memory_is_handed_back_when_the_block_ends() -> None:
    """A run keeps its freed blocks while it runs and returns them at its end, so a
    joblib worker running job after job does not look as if it leaked."""
    done = subprocess.run(
        [sys.executable, "-c", RELEASE_CHILD], capture_output=True, text=True, check=True
    )
    kept, released = (int(value) for value in done.stdout.split())
    assert kept - released > 250  # the 320 MB block was resident until the end
