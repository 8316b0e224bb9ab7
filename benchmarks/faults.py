"""Fault suite (issue 21): inject the faults a user meets and count what went wrong.

Usage: ``python benchmarks/faults.py [--kills 8] [--quick] [--out DIR]``.

Training faults run the real ``vpt pretrain`` (a tiny AB-SimCLR on the embedded photos, 12 steps,
a checkpoint every 3 keeping 2 step files) as subprocesses and compare every run with one
uninterrupted run of the same seed: weights, optimizer state, RNG states, step, every metrics line
(timings aside), ``run.json`` and the files left in the directory.

* ``kill -9`` at a random step (the parent watches ``metrics.jsonl`` and kills a few ms later);
  inside a checkpoint write (part of ``latest.pt`` written), between its fsync and rename, inside
  the hard link of a step copy, inside the ``run.json`` write of a fresh and of a resumed run. Each
  killed run is resumed until it finishes.
* Two writers in one directory, started together and 3 s apart; a second run after the first
  ended (which must resume it, a no-op).
* Resuming with another ``--lr``, ``--batch-size``, ``--view-size``, ``--max-images``, ``--seed``.
* A full disk: a 4 MiB tmpfs with room for one checkpoint (as root; elsewhere the checkpoint
  writer is patched to fail with ENOSPC, and the table says so); then space is freed and the run
  resumed.

Reader faults truncate small fixtures at every byte (``--quick``: every 7th): a WebDataset shard
(streamed and indexed), a CSV and a JSONL caption manifest, a COCO JSON. A shard's format ends
with a marker, so a sample is lost when the reader does not return it, wherever the cut fell; a
manifest has no end marker, so a row is lost when the prefix holds it whole (its line with the
line end) and the reader does not return it. A loss is counted when the reader counted a problem,
or refused the file with an error naming it.

Prints the table and writes ``faults.json`` and ``faults.md`` under ``--out`` (default
``benchmarks/results/faults``).
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12
PRETRAIN = [
    "pretrain", "--method", "absimclr", "--source", "photos", "--view-size", "16", "--batch-size", "4",
    "--encoder-kwargs", '{"width": 8}', "--embed-dim", "16", "--hidden-dim", "16", "--decoder-dim", "16",
    "--steps", str(STEPS), "--checkpoint-every", "3", "--keep-checkpoints", "2", "--log-every", "1",
    "--no-progress", "--threads", "1",
]  # fmt: skip
LOCKED = "in use by another run (pid"


# -- the child: vpt pretrain with a fault injected ----------------------------------------------------


def _child(spec: dict[str, Any], argv: list[str]) -> int:
    """Run ``vpt`` with ``argv`` after patching in the fault ``spec`` describes.

    ``{"kill": "write"|"replace"|"link", "file": name, "nth": n, "bytes": b}``: SIGKILL this process
    inside the n-th atomic write of ``file`` once ``b`` bytes are written, just before its rename,
    or just after the hard link of a step copy. ``{"enospc": name, "nth": n, "bytes": b}``: the n-th
    write of ``name`` fails with ENOSPC after ``b`` bytes (the full disk where no tmpfs can be
    mounted).
    """
    from agents import checkpoint  # patched before pretrain and trainer import atomic_write

    calls: collections.Counter[str] = collections.Counter()
    real_write, real_replace, real_link = checkpoint.atomic_write, os.replace, os.link
    target = spec.get("file") or spec.get("enospc")

    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    class Failing:
        def __init__(self, f: Any, room: int) -> None:
            self.f, self.room = f, room

        def write(self, data: Any) -> int:
            data = bytes(data)
            if len(data) > self.room:
                self.f.write(data[: self.room])
                self.f.flush()
                if "enospc" in spec:
                    raise OSError(28, os.strerror(28))
                die()
            self.room -= len(data)
            return self.f.write(data)

        def flush(self) -> None:
            self.f.flush()

    def atomic_write(path: Any, write: Any) -> Path:
        name = Path(path).name
        calls[name] += 1
        if (
            name == target
            and calls[name] == spec["nth"]
            and (spec.get("kill") == "write" or "enospc" in spec)
        ):
            return real_write(path, lambda f: write(Failing(f, spec["bytes"])))
        return real_write(path, write)

    def replace(src: Any, dst: Any) -> None:
        if spec.get("kill") == "replace" and Path(dst).name == target:
            calls["replace"] += 1
            if calls["replace"] == spec["nth"]:
                die()
        real_replace(src, dst)

    def link(src: Any, dst: Any) -> None:
        real_link(src, dst)
        calls["link"] += 1
        if spec.get("kill") == "link" and calls["link"] == spec["nth"]:
            die()

    checkpoint.atomic_write = atomic_write  # type: ignore[assignment]
    os.replace, os.link = replace, link  # type: ignore[assignment]
    from agents.cli import main

    return main(argv)


# -- the parent --------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def _cmd(out: Path, extra: list[str], spec: dict[str, Any] | None) -> list[str]:
    args = [*PRETRAIN, "--out-dir", str(out), *extra]
    if spec is None:
        return [sys.executable, "-m", "agents.cli", *args]
    return [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec), "--", *args]


def _run(out: Path, extra: list[str] = (), spec: dict[str, Any] | None = None) -> subprocess.CompletedProcess:  # type: ignore[assignment]
    return subprocess.run(
        _cmd(out, list(extra), spec), env=_env(), capture_output=True, text=True, timeout=600
    )


def _killed(rc: int) -> bool:
    return rc == -signal.SIGKILL


def _resume(out: Path, tries: int = 3) -> bool:
    """Resume ``out`` until a run finishes (True) or ``tries`` runs failed."""
    for _ in range(tries):
        if _run(out).returncode == 0:
            return True
    return False


def _equal(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b


def _metrics(out: Path) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k != "images_per_s"} for x in lines]


def _same_run(out: Path, ref: Path) -> str | None:
    """None if ``out`` holds exactly the run ``ref`` holds, else what differs."""
    from agents.checkpoint import load_checkpoint

    a, b = load_checkpoint(out / "latest.pt"), load_checkpoint(ref / "latest.pt")
    for part in ("step", "system", "optimizer", "scheduler", "rng"):
        if not _equal(a[part], b[part]):
            return f"latest.pt {part} differs"
    if _metrics(out) != _metrics(ref):
        return "metrics.jsonl differs"
    records = [json.loads((d / "run.json").read_text()) for d in (out, ref)]
    for r in records:
        r["train"].pop("out_dir")
    if records[0] != records[1]:
        return "run.json differs"
    files, expected = sorted(p.name for p in out.iterdir()), sorted(p.name for p in ref.iterdir())
    return None if files == expected else f"files {files}, expected {expected}"


def _row(name: str, **counts: Any) -> dict[str, Any]:
    base = {"fault": name, "injected": 0, "resumed exactly": "-", "silent mixes": 0, "refused, named": "-",
            "rows lost, counted": "-", "rows lost without a count": "-", "notes": []}  # fmt: skip
    base.update(counts)
    return base


def kill_faults(work: Path, ref: Path, kills: int, rng: random.Random) -> list[dict[str, Any]]:
    """kill -9 at random steps and inside each kind of write; every killed run resumed and compared."""
    trials: list[tuple[str, Any]] = [("kill -9 at a random step", None) for _ in range(kills)]
    trials += [
        ("kill -9 inside a checkpoint write", {"kill": "write", "file": "latest.pt", "nth": n, "bytes": b})
        for n, b in (
            (1, rng.randrange(1, 900_000)),
            (2, rng.randrange(1, 900_000)),
            (4, rng.randrange(1, 9000)),
        )
    ]
    trials += [
        ("kill -9 between checkpoint fsync and rename", {"kill": "replace", "file": "latest.pt", "nth": 2})
    ]
    trials += [("kill -9 inside a step-copy link", {"kill": "link", "file": None, "nth": 1})]
    trials += [
        ("kill -9 inside the run.json write", {"kill": "write", "file": "run.json", "nth": 1, "bytes": 700})
    ]
    trials += [("kill -9 inside the run.json write", "resumed")]  # of a resumed run
    rows: dict[str, dict[str, Any]] = {}
    for k, (name, spec) in enumerate(trials):
        out = work / f"kill{k}"
        row = rows.setdefault(name, _row(name, **{"resumed exactly": 0}))
        if spec is None or spec == "resumed":
            step = rng.randrange(1, STEPS - 1)
            proc = subprocess.Popen(
                _cmd(out, [], None), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            while proc.poll() is None:
                try:
                    done = len((out / "metrics.jsonl").read_text().splitlines())
                except OSError:
                    done = 0
                if done >= step:
                    time.sleep(rng.uniform(0.0, 0.05))
                    proc.kill()
                    break
                time.sleep(0.002)
            rc = proc.wait()
            if spec == "resumed" and _killed(rc):
                rc = _run(out, spec={"kill": "write", "file": "run.json", "nth": 1, "bytes": 700}).returncode
        else:
            rc = _run(out, spec=spec).returncode
        if not _killed(rc):
            row["notes"].append(f"trial {k}: the kill did not happen (exit {rc})")
            continue
        row["injected"] += 1
        leftovers = sorted(p.name for p in out.iterdir() if p.name.endswith((".tmp", ".link")))
        if not _resume(out):
            row["notes"].append(f"trial {k}: did not resume")
            continue
        why = _same_run(out, ref)
        if why is None:
            row["resumed exactly"] += 1
        else:
            row["silent mixes"] += 1
            row["notes"].append(f"trial {k}: {why}")
        row["temporaries"] = row.get("temporaries", 0) + len(leftovers)
    for row in rows.values():
        if row.get("temporaries"):
            row["notes"].append(
                f"{row.pop('temporaries')} temporary files left by the kills, removed by the resumes"
            )
    return list(rows.values())


def writer_faults(work: Path, ref: Path) -> list[dict[str, Any]]:
    """Two writers in one directory; a second run after the first ended; resuming with other settings."""
    row = _row("two writers in one directory", **{"refused, named": 0})
    for k, delay in enumerate((0.0, 3.0)):
        out = work / f"two{k}"
        first = subprocess.Popen(
            _cmd(out, [], None), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(delay)
        second = subprocess.Popen(
            _cmd(out, [], None), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        results = [(p.wait(timeout=600), p.communicate()[1]) for p in (first, second)]
        row["injected"] += 1
        codes = sorted(rc for rc, _ in results)
        refused = [err for rc, err in results if rc == 2 and LOCKED in err and str(out) in err]
        if codes == [0, 2] and refused and _same_run(out, ref) is None:
            row["refused, named"] += 1
        else:
            row["silent mixes"] += 1
            row["notes"].append(f"start {delay:g} s apart: exits {codes}, {_same_run(out, ref)}")
    after = _row("a second run after the first ended", **{"resumed exactly": 0})
    out = work / "after"
    shutil.copytree(ref, out)
    after["injected"] = 1
    proc = _run(out)
    why = _same_run(out, ref) if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr[-200:]}"
    if why is None:
        after["resumed exactly"] = 1
    else:
        after["silent mixes"] = 1
        after["notes"].append(why)
    other = _row("resume with other settings", **{"refused, named": 0})
    changes = {"train.lr": ["--lr", "0.002"], "train.batch_size": ["--batch-size", "8"],
               "data.view_size": ["--view-size", "32"], "data.max_images": ["--max-images", "5"],
               "train.seed": ["--seed", "1"]}  # fmt: skip
    for field, flags in changes.items():
        out = work / f"other-{field}"
        shutil.copytree(ref, out)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        proc = _run(out, flags)
        other["injected"] += 1
        unchanged = {p.name: p.read_bytes() for p in out.iterdir()} == before
        if proc.returncode == 2 and field in proc.stderr and unchanged:
            other["refused, named"] += 1
        else:
            other["silent mixes"] += 1
            other["notes"].append(
                f"{field}: exit {proc.returncode}, unchanged {unchanged}: {proc.stderr[-200:]}"
            )
    return [row, after, other]


def _mount_tmpfs(path: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` at ``path`` (root only); False where that is not possible."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


def disk_fault(work: Path, ref: Path) -> dict[str, Any]:
    """A full disk during a checkpoint write: a clear error, the last checkpoint intact, then resumed."""
    disk = work / "disk"
    disk.mkdir()
    mounted = _mount_tmpfs(disk, "4m")
    row = _row("full disk" + (" (4 MiB tmpfs)" if mounted else " (ENOSPC injected: no tmpfs)"),
               **{"resumed exactly": 0, "refused, named": 0})  # fmt: skip
    out = disk / "run"
    try:
        if mounted:
            free = shutil.disk_usage(disk).free
            (disk / "filler").write_bytes(b"\0" * max(0, free - 1_500_000))  # room for one checkpoint
            proc = _run(out)
        else:
            proc = _run(out, spec={"enospc": "latest.pt", "nth": 2, "bytes": 300_000})
        row["injected"] = 1
        says = "No space left on device" in proc.stderr and "latest.pt" in proc.stderr
        from agents.checkpoint import load_checkpoint

        kept = load_checkpoint(out / "latest.pt")["step"] if (out / "latest.pt").is_file() else None
        clean = not any(p.name.endswith(".tmp") for p in out.iterdir())
        if proc.returncode == 2 and says and kept is not None and clean:
            row["refused, named"] = 1
        else:
            row["notes"].append(
                f"exit {proc.returncode}, last checkpoint {kept}, clean {clean}: {proc.stderr[-300:]}"
            )
        row["notes"].append(f"stopped at: {proc.stderr.strip().splitlines()[-1] if proc.stderr else ''}")
        (disk / "filler").unlink(missing_ok=True)
        if _resume(out) and _same_run(out, ref) is None:
            row["resumed exactly"] = 1
        else:
            row["silent mixes"] = 1
            row["notes"].append(f"after freeing space: {_same_run(out, ref)}")
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=False)
    return row


# -- readers -----------------------------------------------------------------------------------------


def _cuts(n: int, quick: bool) -> range:
    return range(1, n, 7 if quick else 1)


def _png(red: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (red, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def shard_fault(work: Path, quick: bool) -> dict[str, Any]:
    """A 3-sample shard cut at every byte: streamed and indexed, samples lost and counted."""
    from vpt_env.data import WebDatasetSource, load_images

    reds = [40, 80, 120]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for k, r in enumerate(reds):
            for name, data in ((f"{k:04d}.png", _png(r)), (f"{k:04d}.txt", f"caption {k}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        end = tf.offset + 1024  # the end-of-archive marker, without the padding to a record
    whole = buf.getvalue()[:end]
    row = _row(
        "truncated WebDataset shard",
        **{"rows lost, counted": 0, "rows lost without a count": 0, "refused, named": 0},
    )

    def read(path: Path) -> list[tuple[int, bool]]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src = WebDatasetSource(path)
            streamed = [im for im, _ in src]
            indexed = WebDatasetSource(path)
            try:
                loaded = load_images(indexed)[0]
            except ValueError:
                loaded = []
        if _red(streamed) != _red(loaded):
            row["notes"].append(
                f"{path.stat().st_size} bytes: streamed {_red(streamed)}, indexed {_red(loaded)}"
            )
        return [(len(streamed), bool(src.skipped)), (len(loaded), bool(indexed.skipped))]

    # The format ends with a marker: every sample of the whole shard counts, in both modes.
    _truncate(row, work / "shard.tar", whole, quick, read, lambda cut: len(reds))
    return row


def _red(images: list[Any]) -> list[int]:
    return [int(im[0, 0, 0]) for im in images]


def _manifest_images(root: Path) -> list[str]:
    names = []
    for k in range(4):
        (root / f"im{k}.png").write_bytes(_png(40 * (k + 1)))
        names.append(f"im{k}.png")
    return names


def manifest_fault(work: Path, kind: str, quick: bool) -> dict[str, Any]:
    """A 4-row CSV or JSONL manifest cut at every byte: whole rows that go missing, counted or not."""
    from vpt_env.data import CaptionManifest

    root = work / f"manifest-{kind}"
    root.mkdir()
    names = _manifest_images(root)
    if kind == "csv":
        lines = ["image,caption\n"] + [
            f'{n},"a caption, with a comma"\n' if k != 2 else f'{n},"a caption\nover two lines"\n'
            for k, n in enumerate(names)
        ]
    else:
        lines = [json.dumps({"image": n, "caption": f"caption {k}"}) + "\n" for k, n in enumerate(names)]
    text = "".join(lines).encode()
    ends = []  # byte offset where each row's line (with its line end) ends
    pos = 0
    for line in lines:
        pos += len(line.encode())
        ends.append(pos)
    rows = ends[1:] if kind == "csv" else ends
    row = _row(
        f"truncated {kind.upper()} manifest",
        **{"rows lost, counted": 0, "rows lost without a count": 0, "refused, named": 0},
    )
    _truncate(
        row,
        root / f"m.{kind}",
        text,
        quick,
        _read_with(CaptionManifest),
        lambda cut: sum(e <= cut for e in rows),
    )
    return row


def _truncate(row: dict[str, Any], path: Path, text: bytes, quick: bool, read: Any, whole: Any) -> None:
    """Write ``text`` cut at every byte to ``path`` and ``read(path)`` it (``[(rows read, whether a
    problem was counted), ...]``, one pair per way of reading): count the refusals that name the
    file, and the rows lost (``whole(cut)``: the rows the cut file should still give)."""
    for cut in _cuts(len(text), quick):
        path.write_bytes(text[:cut])
        row["injected"] += 1
        try:
            results = read(path)
        except ValueError as err:
            if str(path) in str(err):
                row["refused, named"] += 1
            else:
                row["rows lost without a count"] += whole(cut)
                row["notes"].append(f"cut {cut}: {err}")
            continue
        for got, counted in results:
            lost = max(0, whole(cut) - got)
            row["rows lost, counted" if counted else "rows lost without a count"] += lost


def _read_with(reader: Any) -> Any:
    """``read`` for :func:`_truncate` of a reader class (one way of reading: construction)."""

    def read(path: Path) -> list[tuple[int, bool]]:
        src = reader(path)
        return [(len(src), bool(src.skipped))]

    return read


def coco_fault(work: Path, quick: bool) -> dict[str, Any]:
    """A COCO JSON cut at every byte: refused by name, or read whole."""
    from vpt_env.data import CocoSource

    root = work / "coco"
    root.mkdir()
    names = _manifest_images(root)
    data = {
        "images": [{"id": k, "file_name": n, "width": 8, "height": 8} for k, n in enumerate(names)],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": k, "image_id": k, "category_id": 1, "bbox": [1, 1, 4, 4]} for k in range(4)],
    }
    text = json.dumps(data, indent=1).encode()
    row = _row(
        "truncated COCO JSON",
        **{"rows lost, counted": 0, "rows lost without a count": 0, "refused, named": 0},
    )
    _truncate(
        row, root / "instances.json", text, quick, CocoSource, lambda cut: len(names)
    )  # parses whole or not
    return row


# -- the table ---------------------------------------------------------------------------------------

COLUMNS = ("fault", "injected", "resumed exactly", "silent mixes", "refused, named", "rows lost, counted",
           "rows lost without a count")  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]) for c in COLUMNS) + " |")
    total = {c: sum(r[c] for r in rows if isinstance(r[c], int)) for c in COLUMNS[1:]}
    lines.append("| **total** | " + " | ".join(str(total[c]) for c in COLUMNS[1:]) + " |")
    return "\n".join(lines)


def main() -> int:
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        return _child(json.loads(sys.argv[i + 1]), sys.argv[sys.argv.index("--") + 1 :])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=8, help="kill -9 trials at random steps")
    p.add_argument("--quick", action="store_true", help="2 random kills, every 7th byte of the fixtures")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "faults"))
    args = p.parse_args()
    rng = random.Random(args.seed)
    kills = 2 if args.quick else args.kills
    start = time.monotonic()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vpt-faults-") as tmp:
        work = Path(tmp)
        ref = work / "reference"
        proc = _run(ref)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        rows += kill_faults(work, ref, kills, rng)
        rows += writer_faults(work, ref)
        rows.append(disk_fault(work, ref))
        rows.append(shard_fault(work, args.quick))
        rows.append(manifest_fault(work, "csv", args.quick))
        rows.append(manifest_fault(work, "jsonl", args.quick))
        rows.append(coco_fault(work, args.quick))
    seconds = time.monotonic() - start
    text = table(rows)
    print(text)
    for r in rows:
        for note in r["notes"]:
            print(f"  {r['fault']}: {note}")
    print(f"{seconds:.0f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "faults.json").write_text(
        json.dumps({"rows": rows, "seconds": seconds, "args": vars(args)}, indent=2)
    )
    (out / "faults.md").write_text(text + "\n")
    bad = sum(
        r["silent mixes"]
        + (r["rows lost without a count"] if isinstance(r["rows lost without a count"], int) else 0)
        for r in rows
    )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
