"""Run identities and ``reproduce.py --reuse`` (issues 7 and 22): runs stay valid when only what
their row never reads changes, a stored run is taken exactly when its identity is a planned run's,
and reports of the older format are converted once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "reproduce.py"
#: A report of format 1 (row fingerprints), as the cpu-quick reproduction of 2026-12-03 wrote it.
V1_REPORT = ROOT / "docs" / "results" / "reproduce-cpu-quick" / "results.v1.json"

sys.path.insert(0, str(ROOT / "benchmarks"))
from reproduction import runner  # noqa: E402
from reproduction.cli import apply_overrides  # noqa: E402
from reproduction.profiles import PROFILES, parse_row, run_identity  # noqa: E402
from reproduction.reuse import read_results  # noqa: E402
from upgrade_results import main as upgrade_main  # noqa: E402
from upgrade_results import upgrade_results  # noqa: E402

from agents.export import load_encoder  # noqa: E402

SMOKE = PROFILES["smoke"]
# Other captions on every scene, naming other things: what CLIP reads changes, nothing else.
OTHER_CAPTIONS = ["scenes.caption_fraction=1.0", 'scenes.caption_words=["colour"]']


def _cli(out: Path, *extra: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--profile", "smoke", "--out", str(out), "--threads", "1", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc


def test_identities_leave_out_only_the_captions() -> None:
    other = apply_overrides(SMOKE, OTHER_CAPTIONS)
    for name in ("random", "supervised", "simclr", "absimclr", "dino", "abdino", "abdino-noema"):
        row = parse_row(name)
        assert not row.reads_captions
        assert run_identity(other, row, 0, 0) == run_identity(SMOKE, row, 0, 0), name
    for name in ("clip", "abclip", "abclip-noact"):
        row = parse_row(name)
        assert row.reads_captions
        assert run_identity(other, row, 0, 0) != run_identity(SMOKE, row, 0, 0), name
    # Where uncaptioned scenes lose their labels, the caption fraction counts for every row.
    captioned = [*OTHER_CAPTIONS, 'scenes.annotate="captioned"']
    simclr = parse_row("simclr")
    assert run_identity(apply_overrides(SMOKE, captioned), simclr, 0, 0) != run_identity(
        apply_overrides(SMOKE, ['scenes.annotate="captioned"']), simclr, 0, 0
    )
    # Anything else still counts, for every row.
    longer = apply_overrides(SMOKE, ["train.steps=5"])
    for name in ("simclr", "clip"):
        assert run_identity(longer, parse_row(name), 0, 0) != run_identity(SMOKE, parse_row(name), 0, 0)


def test_rows_reading_no_caption_train_the_same_under_any_captions(tmp_path: Path, one_thread: None) -> None:
    """What makes leaving the captions out of those rows' identities sound: trained under two
    caption settings, each such row ends with the same loss and the same encoder weights, while
    CLIP (which reads them) does not."""
    other = apply_overrides(SMOKE, OTHER_CAPTIONS)
    results: dict[str, list[tuple[float, dict[str, torch.Tensor]]]] = {}
    for k, profile in enumerate((SMOKE, other)):
        for name in ("supervised", "simclr", "absimclr", "dino", "abdino", "clip"):
            (run,) = runner.plan(profile, [name], tmp_path / str(k))
            record = runner.train_run(run, profile)
            assert record is not None and record["identity"] == run.identity
            stored = json.loads((run.dir / "run.json").read_text())["data"]["source"]
            assert json.loads(stored)["scenes"]["caption_fraction"] == profile.scenes["caption_fraction"]
            weights = load_encoder(run.dir, "cpu").state_dict()
            results.setdefault(name, []).append((record["loss"], weights))
    for name, ((loss_a, w_a), (loss_b, w_b)) in results.items():
        same = loss_a == loss_b and all(torch.equal(w_a[key], w_b[key]) for key in w_a)
        assert same == (name != "clip"), (name, loss_a, loss_b)


def test_fields_of_other_families_leave_a_row_unchanged(tmp_path: Path, one_thread: None) -> None:
    """Fields only one family reads (``dino_*``, CLIP's text tower and caption crops, ...) are left
    out of the other rows' identities: trained under other values of them, another family's row
    ends with the same loss and weights, while the family that reads them does not."""
    changes = {
        "dino": ["system.dino_local_size=8", "system.dino_prototypes=8", "data.dino_global_scale=[0.6,1.0]"],
        "clip": ["system.text_dim=8", "system.clip_init_temperature=0.2", "data.caption_view_scale=[0.5,1]"],
        "simclr": ["system.simclr_temperature=0.3"],
        "supervised": ['system.supervised_target="label"'],
    }

    def train(profile: Any, name: str, where: str) -> tuple[str, float, dict[str, torch.Tensor]]:
        (run,) = runner.plan(profile, [name], tmp_path / where)
        record = runner.train_run(run, profile)
        return run.identity, record["loss"], load_encoder(run.dir, "cpu").state_dict()

    for family, sets in changes.items():
        other = apply_overrides(SMOKE, sets)
        for name in ("supervised", "simclr", "absimclr", "dino", "abdino", "clip", "abclip"):
            same_id = run_identity(SMOKE, parse_row(name), 0, 0) == run_identity(other, parse_row(name), 0, 0)
            assert same_id == (parse_row(name).base != family), (family, name)
        if family == "supervised":
            continue
        checked = {"dino": ("dino", "absimclr"), "clip": ("clip", "abdino"), "simclr": ("simclr", "abclip")}
        for name in checked[family]:
            (id_a, loss_a, w_a), (id_b, loss_b, w_b) = (
                train(p, name, f"{family}-{name}-{k}") for k, p in enumerate((SMOKE, other))
            )
            same = loss_a == loss_b and all(torch.equal(w_a[key], w_b[key]) for key in w_a)
            assert same == (id_a == id_b) == (parse_row(name).base != family), (family, name)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished smoke report: random, simclr and absimclr."""
    out = tmp_path_factory.mktemp("reuse") / "first"
    _cli(out, "--no-plots")
    return out


def test_reuse_takes_the_runs_whose_identity_matches(finished: Path, tmp_path: Path) -> None:
    results = finished / "results.json"
    out = tmp_path / "other-captions"
    sets = [a for s in OTHER_CAPTIONS for a in ("--set", s)]
    rows = ("--rows", "random,simclr,absimclr,clip")
    proc = _cli(out, *rows, *sets, "--reuse", str(results), "--report-only", "--no-plots")
    assert f"reused 3 finished runs from {results}" in proc.stdout
    assert "not run (--report-only): 1 runs: clip/s0o0 (todo)" in proc.stdout  # CLIP reads the captions
    table = (out / "table.md").read_text()
    assert "Reused from earlier reports" in table and "3 runs from first/results.json" in table
    record = json.loads((out / "results.json").read_text())
    first = json.loads(results.read_text())
    for new, old in zip(record["runs"], first["runs"], strict=True):
        assert {k: v for k, v in new["eval"].items() if k != "reused_from"} == old["eval"]
        if old["train"] is not None:
            assert {k: v for k, v in new["train"].items() if k != "reused_from"} == old["train"]
        assert new["eval"]["reused_from"]["file"] == str(results)
    assert record["summary"]["simclr"] == first["summary"]["simclr"]
    # A second call finds them done in their directories; none is copied again.
    again = _cli(out, *rows, *sets, "--reuse", str(results), "--report-only", "--no-plots")
    assert "simclr/s0o0: done, skipped" in again.stdout
    assert f"reused 0 finished runs from {results}" in again.stdout
    assert "3 runs from first/results.json" in (out / "table.md").read_text()
    # Another identity (another lr) takes nothing: those runs would train again.
    proc = _cli(tmp_path / "lr", "--set", "train.lr=0.002", "--reuse", str(results), "--dry-run")
    assert f"would reuse (the plan below lists them as todo) 1 finished runs from {results}" in proc.stdout
    assert "random/s0o0" in proc.stdout  # the one: an untrained encoder has no lr


def test_reuse_takes_only_finished_runs_and_refuses_other_files(finished: Path, tmp_path: Path) -> None:
    first = json.loads((finished / "results.json").read_text())
    assert read_results(finished / "results.json")["format"] == 2
    partial = json.loads(json.dumps(first))
    for r in partial["runs"]:
        if r["row"] == "simclr":
            del r["eval"]["final"]["heldout"]
        if r["row"] == "absimclr":
            r["train"] = None
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(partial))
    proc = _cli(tmp_path / "out", "--reuse", str(path), "--dry-run")
    assert "would reuse (the plan below lists them as todo) 1 finished runs" in proc.stdout
    assert "simclr/s0o0 (probes unfinished)" in proc.stdout
    assert "absimclr/s0o0 (no training record)" in proc.stdout
    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: v for k, v in first.items() if k != "format"}))
    proc = _cli(tmp_path / "out", "--reuse", str(old), "--report-only", ok=False)
    assert "made by an older version (format 1, not 2)" in proc.stderr
    assert f"upgrade_results.py {old}" in proc.stderr
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    proc = _cli(tmp_path / "out", "--reuse", str(junk), "--report-only", ok=False)
    assert f"--reuse {junk}: cannot read it as JSON" in proc.stderr
    proc = _cli(tmp_path / "out", "--reuse", str(tmp_path / "missing.json"), "--report-only", ok=False)
    assert f"--reuse {tmp_path / 'missing.json'}: cannot read it (No such file or directory)" in proc.stderr
    with pytest.raises(ValueError, match=r"not a reproduce\.py results\.json"):
        (tmp_path / "x.json").write_text("{}")
        read_results(tmp_path / "x.json")
    assert not (tmp_path / "out").exists()


def test_upgrade_converts_a_format_1_report_once(tmp_path: Path) -> None:
    """The cpu-quick report of 2026-12-03 (format 1): converted, each run carries the identity that
    cpu-quick and cpu-full give it now (its stored configs checked against the row's), so --reuse
    takes its CLIP/ABCLIP runs into cpu-full; a tampered copy loses the runs that no longer check."""
    path = tmp_path / "results.json"
    shutil.copy(V1_REPORT, path)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "upgrade_results.py"), str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "10 runs stamped with their identity" in proc.stdout and "left out" not in proc.stdout
    assert json.loads((tmp_path / "results.v1.json").read_text()) == json.loads(V1_REPORT.read_text())
    record = read_results(path)
    # cpu-full as it was then (30% of the scenes captioned; DINO's local crop size, changed since,
    # is no field of the CLIP rows), and the random rows of cpu-full now.
    then = apply_overrides(PROFILES["cpu-full"], ["scenes.caption_fraction=0.3"])
    runs = runner.plan(then, ["random", "clip", "abclip"], tmp_path)
    full = {run.key: run.identity for run in runs}
    assert all(r["eval"]["identity"] == full[r["key"]] for r in record["runs"] if r["key"] in full)
    assert sum(r["key"] in full for r in record["runs"]) == 9  # random x 3, clip x 3, abclip x 3
    now = {run.key: run.identity for run in runner.plan(PROFILES["cpu-full"], ["random", "clip"], tmp_path)}
    matches = [r["eval"]["identity"] == now[r["key"]] for r in record["runs"] if r["key"] in now]
    assert matches == [True, False] * 3  # (random, clip) per seed
    v1 = json.loads(V1_REPORT.read_text())
    tampered = json.loads(json.dumps(v1))
    abclip = next(r for r in tampered["runs"] if r["key"] == "abclip/s1o0")
    abclip["train"]["recipe"]["system"]["gamma"] = 0.9
    clip = next(r for r in tampered["runs"] if r["key"] == "clip/s1o0")
    clip["eval"]["fingerprint"] = "0123456789ab"
    _, left_out = upgrade_results(tampered)
    assert left_out == [
        "clip/s1o0 (records of another profile)",
        "abclip/s1o0 (trained with system.gamma=0.9, the row now gives 0.5)",
    ]
    # A run stored without its configs predates the configs' newer fields: it gets the identity of
    # their legacy values (the bases' own crops off), not that of today's defaults.
    bare = json.loads(json.dumps(v1))
    for r in bare["runs"]:
        if r["train"]:
            del r["train"]["recipe"]
    converted = {r["key"]: r["eval"]["identity"] for r in upgrade_results(bare)[0]["runs"]}
    assert converted["clip/s0o0"] != full["clip/s0o0"]
    legacy = apply_overrides(then, ["data.caption_view_scale=null", "data.dino_global_scale=null"])
    assert converted["clip/s0o0"] == run_identity(legacy, parse_row("clip"), 0, 0)
    assert converted["random/s0o0"] == full["random/s0o0"]
    tampered["profile"]["lr"] = 0.5  # the profile no longer gives back its fingerprint
    with pytest.raises(ValueError, match="does not give back its fingerprint"):
        upgrade_results(tampered)
    with pytest.raises(ValueError, match=r"not a results\.json of format 1"):
        upgrade_results(record)
    broken = json.loads(json.dumps(v1))
    del broken["runs"][2]["row"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(SystemExit, match=r"not a readable results\.json of format 1 \(KeyError: 'row'\)"):
        upgrade_main([str(tmp_path / "broken.json")])
    assert not (tmp_path / "broken.v1.json").exists()  # nothing written


def test_dry_run_counts_what_reuse_would_take_and_writes_nothing(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "dry"
    proc = _cli(out, "--reuse", str(finished / "results.json"), "--dry-run")
    assert "would reuse (the plan below lists them as todo) 3 finished runs" in proc.stdout
    assert not out.exists()


def test_reused_runs_keep_their_mechanism_and_draw_no_value_map_without_a_checkpoint(
    finished: Path, tmp_path: Path
) -> None:
    """A reused run has no checkpoint here: the report (plots on) must neither load one for its
    value map nor measure its mechanism again; the mechanism metrics come with its eval.json."""
    results = finished / "results.json"
    out = tmp_path / "with-plots"
    proc = _cli(out, "--reuse", str(results))
    assert f"reused 3 finished runs from {results}" in proc.stdout
    assert not (out / "absimclr" / "s0o0" / "latest.pt").exists()
    assert not (out / "valuemaps" / "absimclr.png").exists() and (out / "curves.png").is_file()
    first = {r["key"]: r for r in json.loads(results.read_text())["runs"]}
    for run in json.loads((out / "results.json").read_text())["runs"]:
        if run["row"] != "random":
            assert run["eval"]["mechanism"] == first[run["key"]]["eval"]["mechanism"]
