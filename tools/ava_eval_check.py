"""Check ``slowfast_zoo.metrics.ava_frame_map`` against the authors' own AVA evaluators on random cases.

No evaluator code is part of this project: each is run from a checkout given on the command line, in a child
process, exactly as its authors call it:

- ``--pyslowfast PATH`` (facebookresearch/SlowFast): ``slowfast/utils/ava_eval_helper.py`` (``read_labelmap``,
  ``read_exclusions``, ``read_csv``, ``run_evaluation``) on ``ava_evaluation/``. Its imports of PySlowFast's
  distributed helpers and path manager are stubbed (``is_master_proc`` -> False, ``pathmgr.open`` -> ``open``).
- ``--activitynet PATH`` (activitynet/ActivityNet): ``Evaluation/get_ava_performance.py`` ``run_evaluation``, with
  the numpy aliases it uses and newer numpy removed (``np.bool``, ``np.float``, ``np.NAN``) put back.

Each case has tied scores (4 decimals), crowded keyframes (75 detections), degenerate boxes, exact duplicates,
keyframes without ground truth, excluded keyframes, detections at keyframes the ground truth does not list, an action
outside the label map and a label-map class without ground truth. Prints how many evaluations matched to 1e-9 (per
class and overall) and exits 1 on any mismatch.

    python tools/ava_eval_check.py --pyslowfast ../SlowFast --activitynet ../ActivityNet --cases 300
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PYSLOWFAST = """
import json, logging, sys, types
from pathlib import Path
logging.disable(logging.CRITICAL)
root, cases = Path(sys.argv[1]), Path(sys.argv[2])
sys.path.insert(0, str(root))
import ava_evaluation
from ava_evaluation import object_detection_evaluation, standard_fields
stubs = {"slowfast": types.ModuleType("slowfast"), "slowfast.utils": types.ModuleType("slowfast.utils")}
stubs["slowfast.utils.distributed"] = types.SimpleNamespace(is_master_proc=lambda: False)
stubs["slowfast.utils.env"] = types.SimpleNamespace(pathmgr=types.SimpleNamespace(open=open))
for name in ("vision", "vision.fair", "vision.fair.slowfast"):
    stubs[name] = types.ModuleType(name)
stubs["vision.fair.slowfast.ava_evaluation"] = ava_evaluation
sys.modules.update(stubs)
import importlib.util
spec = importlib.util.spec_from_file_location("ava_eval_helper", root / "slowfast/utils/ava_eval_helper.py")
h = importlib.util.module_from_spec(spec); spec.loader.exec_module(h)
out = {}
for case in sorted(cases.glob("case*")):
    cats, wl = h.read_labelmap(case / "label_map.pbtxt")
    m = h.run_evaluation(cats, h.read_csv(case / "groundtruth.csv", wl, load_score=False),
                         h.read_csv(case / "detections.csv", wl, load_score=True),
                         h.read_exclusions(case / "excluded_timestamps.csv"))
    out[case.name] = {k.rsplit("/", 1)[-1] if "Category" in k else "mAP": float(v) for k, v in m.items()}
print(json.dumps(out))
"""

ACTIVITYNET = """
import json, logging, sys
from pathlib import Path
import numpy as np
for name, value in (("bool", bool), ("float", float), ("int", int), ("NAN", np.nan)):
    if not hasattr(np, name):
        setattr(np, name, value)
logging.disable(logging.CRITICAL)
root, cases = Path(sys.argv[1]), Path(sys.argv[2])
sys.path[:0] = [str(root / "Evaluation"), str(root / "Evaluation" / "ava")]
import get_ava_performance as g
out = {}
for case in sorted(cases.glob("case*")):
    got = {}
    g.pprint.pprint = lambda metrics, indent=None: got.update(metrics)
    with open(case / "label_map.pbtxt") as l, open(case / "groundtruth_activitynet.csv") as gt, \\
            open(case / "detections.csv") as d:
        g.run_evaluation(l, gt, d)
    out[case.name] = {k.rsplit("/", 1)[-1] if "Category" in k else "mAP": float(v) for k, v in got.items()}
print(json.dumps(out))
"""


def _box(rng: random.Random) -> list[float]:
    x1, y1 = rng.random() * 0.8, rng.random() * 0.8
    return [x1, y1, x1 + 0.05 + rng.random() * 0.2, y1 + 0.05 + rng.random() * 0.2]


def _row(r: tuple) -> str:
    if len(r) == 2:
        return f"{r[0]},{r[1]:04d}"
    tail = [f"{r[7]:.4f}"] if len(r) > 7 else []
    return ",".join([r[0], f"{r[1]:04d}", *(f"{v:.3f}" for v in r[2:6]), str(r[6]), *tail])


def write_case(seed: int, folder: Path) -> None:
    """One random case in both ground-truth layouts (PySlowFast's with an exclusion file, ActivityNet's)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    classes = sorted(rng.sample(range(1, 81), rng.randint(2, 7)))  # the last one never gets ground truth
    keys = [(f"v{seed}_{i}", t) for i in range(rng.randint(1, 4)) for t in range(902, 902 + rng.randint(3, 9))]
    excluded = set(rng.sample(keys, min(len(keys) // 4, 4)))
    gt, gt_anet, det = [], [], []
    for key in keys:
        people = [_box(rng) for _ in range(rng.randint(0, 4))]
        mine = []
        for person in people:
            pool = [*classes[:-1], 99]  # 99: an action outside the label map
            mine += [(*key, *person, a) for a in rng.sample(pool, rng.randint(1, min(3, len(pool))))]
        gt += mine
        if key not in excluded:
            gt_anet += mine or [key]
        for _ in range(75 if rng.random() < 0.1 else rng.randint(0, 12)):
            b = (
                [c + rng.uniform(-0.03, 0.03) for c in rng.choice(people)]
                if people and rng.random() < 0.6
                else _box(rng)
            )
            if rng.random() < 0.05:
                b[2] = b[0] - 0.01  # degenerate
            score = round(rng.choice([0.5, 0.8, 0.1, rng.random()]), 4)
            det += [(*key, *b, rng.choice([*classes, 99]), score)] * (2 if rng.random() < 0.1 else 1)
    det += [(v, t + 50, *_box(rng), classes[0], 0.9) for v, t in rng.sample(keys, 2)]  # keyframes nobody lists
    rng.shuffle(det)
    for name, rows in (("groundtruth.csv", gt), ("groundtruth_activitynet.csv", gt_anet), ("detections.csv", det)):
        (folder / name).write_text("".join(_row(r) + "\n" for r in rows))
    (folder / "excluded_timestamps.csv").write_text("".join(_row(k) + "\n" for k in sorted(excluded)))
    (folder / "label_map.pbtxt").write_text("".join(f'item {{\n  name: "a{c}"\n  id: {c}\n}}\n' for c in classes))


def _authors(script: str, checkout: str, cases: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), checkout, str(cases)], capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"the evaluator at {checkout} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pyslowfast", help="a facebookresearch/SlowFast checkout")
    parser.add_argument("--activitynet", help="an activitynet/ActivityNet checkout")
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from slowfast_zoo.tasks.metrics import ava_frame_map

    with tempfile.TemporaryDirectory() as tmp:
        cases = Path(tmp)
        for seed in range(args.seed, args.seed + args.cases):
            write_case(seed, cases / f"case{seed}")
        checked = mismatches = 0
        for protocol, script, checkout in (
            ("pyslowfast", PYSLOWFAST, args.pyslowfast),
            ("activitynet", ACTIVITYNET, args.activitynet),
        ):
            if not checkout:
                continue
            for name, theirs in _authors(script, checkout, cases).items():
                case = cases / name
                gt = case / ("groundtruth.csv" if protocol == "pyslowfast" else "groundtruth_activitynet.csv")
                excluded = case / "excluded_timestamps.csv" if protocol == "pyslowfast" else None
                ours = ava_frame_map(gt, case / "detections.csv", case / "label_map.pbtxt", excluded, protocol=protocol)
                mine = {"mAP": ours.map, **ours.named()}
                checked += 1
                for key, value in theirs.items():
                    same = (math.isnan(value) and math.isnan(mine[key])) or abs(value - mine[key]) <= 1e-9
                    if not same:
                        mismatches += 1
                        print(f"{protocol} {name} {key}: authors {value!r}, zoo {mine[key]!r}")
        print(f"{checked} evaluations, {mismatches} values differ by more than 1e-9")
    return 1 if mismatches or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
