"""Embeddings of many videos, written to resumable shards (the same as ``slowfast-zoo features``).

    python examples/extract_features.py videos.txt -o feats/ --model slowfast_r50_8x8 --per window --window 2,1
    # many machines: run the same command on each with --rank R --world-size N (or torchrun's $RANK / $WORLD_SIZE)
    # interrupted? run it again: finished shards are skipped, no shard file is ever half-written

Read them back with ``slowfast_zoo.features.load_features("feats/")``.
"""

from __future__ import annotations

import argparse
import sys

from slowfast_zoo import features


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    features.add_arguments(parser)
    return features.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
