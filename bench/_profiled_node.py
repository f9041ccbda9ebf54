"""``python -m mesh.node`` under cProfile, counting CPU time (not wall time, which on a busy
machine mostly shows the process waiting for a core), with its imports left out.

Usage::

    python bench/_profiled_node.py OUT.prof --agent echo --nats nats://127.0.0.1:4222
"""

from __future__ import annotations

import cProfile
import sys
import time

from mesh import node


def main() -> int:
    """Run the node with the rest of the arguments; write the profile to the first."""
    if len(sys.argv) < 2:
        print("usage: python bench/_profiled_node.py OUT.prof NODE-ARGS...", file=sys.stderr)
        return 2
    out, argv = sys.argv[1], sys.argv[2:]
    profile = cProfile.Profile(time.process_time)
    try:
        return profile.runcall(node.main, argv)
    finally:
        profile.dump_stats(out)


if __name__ == "__main__":
    sys.exit(main())
