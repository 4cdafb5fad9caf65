"""Embeddings of many videos, written to resumable shards (the same as ``slowfast-zoo features``).

    python examples/extract_features.py videos.txt -o feats/ --model slowfast_r50_8x8 --per window --window 2,1
    # many machines: run the same command on each with --rank R --world-size N (or torchrun's $RANK / $WORLD_SIZE)
    # interrupted? run it again: finished shards are skipped, no shard file is ever half-written

Read them back with ``slowfast_zoo.features.load_features("feats/")``.
"""

from __future__ import annotations

import sys

from slowfast_zoo.cli import main as cli


def main(argv: list[str] | None = None) -> int:
    """``slowfast-zoo features ARGS``; in your own code call ``slowfast_zoo.features.extract`` directly."""
    return cli(["features", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
