"""Embeddings of a video list on a Ray cluster, in a dozen lines of Ray Data (``pip install "slowfast-zoo[ray]"``).

    python examples/ray_features.py videos.csv out/ --model slowfast_r50_8x8 --actors 4 --gpus 1

``videos.csv`` has a ``path`` column (optional ``start`` / ``end`` seconds); ``out`` may be ``s3://...``. For the
zoo's own resumable shards use ``slowfast-zoo features ... --engine ray`` instead.
"""

from __future__ import annotations

import argparse

import ray

from slowfast_zoo.tasks.ray_data import DecodeClips, EmbedClips


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("csv")
    p.add_argument("out")
    p.add_argument("--model", default="slowfast_r50_8x8", help="name, hf-hub:org/repo or local-dir:PATH")
    p.add_argument("--actors", type=int, default=1)
    p.add_argument("--gpus", type=float, default=0, help="GPUs per model actor")
    args = p.parse_args(argv)

    ray.init()  # joins the cluster in $RAY_ADDRESS (or `ray start`ed on this node), else starts a local one
    ds = ray.data.read_csv(args.csv)
    ds = ds.map_batches(DecodeClips(args.model, views="fast"), batch_size=1)  # CPU tasks: frames -> views
    ds = ds.map_batches(
        EmbedClips,  # one model per actor, built by slowfast_zoo.create (weights verified)
        fn_constructor_args=(args.model,),
        batch_size=8,
        compute=ray.data.ActorPoolStrategy(size=args.actors),
        num_gpus=args.gpus,
    )
    ds.write_parquet(args.out)  # path, start, end, error, windows, num_views, embedding


if __name__ == "__main__":
    main()
