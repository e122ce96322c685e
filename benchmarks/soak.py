"""Soak: kill one training run again and again at random steps; it must end as if never killed.

    python benchmarks/soak.py [--kills 10] [--seed 0] [--out DIR]

Runs `python -m fcn_tf.train` (tiny FCN-8s on synthetic scenes, `--deterministic`,
`--save-every 3`, 30 epochs) and, `--kills` times, sends it SIGKILL or SIGTERM (seeded coin) at
a seeded random moment after its model is built, then reruns the same command. Afterwards it
trains the same settings once without interruption and compares: the final weights must be
bit-identical and the histories equal. Prints a line per kill (signal, exit status, where the
run resumed from and what it had saved when killed) and the verdict; exits 1 if the runs
differ, a rerun failed or a traceback was printed.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

FLAGS = ["--synthetic-images", "24", "--epochs", "30", "--image-shape", "64x192",
         "--batch-size", "2", "--width", "0.05", "--fc-units", "16", "--deterministic",
         "--save-every", "3", "--run-name", "soak"]  # fmt: skip


def saved(out: Path) -> str:
    path = out / ".soak.partial" / "checkpoints" / "resume.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return "nothing"
    return f"epoch {state['epoch']} + {state.get('step', 0)} steps"


def soak(kills: int, seed: int, root: Path) -> bool:
    rng = random.Random(seed)
    out = root / "killed"
    command = [sys.executable, "-m", "fcn_tf.train", *FLAGS, "--output-dir", str(out)]
    done, ok = 0, True
    start = time.perf_counter()
    while done < kills:
        before = saved(out)
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        lines = []
        for line in process.stderr:  # until the model is built: training starts next
            lines.append(line)
            if " parameters; " in line:
                break
        reader = threading.Thread(target=lines.extend, args=(process.stderr,), daemon=True)
        reader.start()
        time.sleep(rng.uniform(3.0, 12.0))  # tracing takes a few seconds, then ~0.5 s an epoch
        if process.poll() is not None:
            print(f"run finished before kill {done + 1}; stopping the soak early")
            break
        how = rng.choice([signal.SIGKILL, signal.SIGTERM])
        process.send_signal(how)
        process.wait()
        reader.join()
        stderr = "".join(lines)
        done += 1
        expected = {signal.SIGKILL: -9, signal.SIGTERM: 143}[how]
        traceback = "Traceback" in stderr
        ok &= process.returncode == expected and not traceback
        print(f"kill {done:2d}: {how.name:7s} exit {process.returncode:4d}; resumed from "
              f"{before}, saved {saved(out)}{'; TRACEBACK' if traceback else ''}")  # fmt: skip
    if not (out / "soak").exists():
        final = subprocess.run(command, capture_output=True, text=True)
        ok &= final.returncode == 0
        print(f"final rerun: exit {final.returncode}, {time.perf_counter() - start:.0f} s in all")
    straight = root / "straight"
    subprocess.run([*command[:-1], str(straight)], check=True, capture_output=True)
    return same_run(out / "soak", straight / "soak") and ok


def same_run(a: Path, b: Path) -> bool:
    import numpy as np

    from fcn_tf.inference import load_model

    history = (a / "history.csv").read_text() == (b / "history.csv").read_text()
    weights = [load_model(p / "model.keras")[0].get_weights() for p in (a, b)]
    identical = all(np.array_equal(x, y) for x, y in zip(*weights, strict=True))
    print(f"history equal: {history}; final weights bit-identical: {identical}")
    return history and identical


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        ok = soak(args.kills, args.seed, args.out or Path(scratch))
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
