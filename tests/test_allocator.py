"""keep_freed_memory: large blocks are reused instead of mapped and zeroed again."""

from __future__ import annotations

import subprocess
import sys

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


def test_freed_large_blocks_are_reused_without_page_faults() -> None:
    assert _page_faults("default") > 8 * 80_000  # every allocation faulted its pages in
    assert _page_faults("keep") < 1_000  # the freed block reused as it was
