"""Row fingerprints and ``reproduce.py --reuse`` (issue 7): runs stay valid when only what their row
never reads changes, and a reused run is checked, not trusted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "reproduce.py"

sys.path.insert(0, str(ROOT / "benchmarks"))
from reproduce import runner  # noqa: E402
from reproduce.cli import apply_overrides  # noqa: E402
from reproduce.profiles import PROFILES, parse_row  # noqa: E402
from reproduce.reuse import stored_profile  # noqa: E402

from agents.export import load_encoder  # noqa: E402
from vpt_env.data.embedded import EMBEDDED  # noqa: E402

SMOKE = PROFILES["smoke"]
# Other captions on every scene, naming other things: what CLIP reads changes, nothing else.
OTHER_CAPTIONS = ["scenes.caption_fraction=1.0", 'scenes.caption_words=["colour"]']


def _cli(out: Path, *extra: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--profile", "smoke", "--out", str(out), "--threads", "1", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc


def test_row_fingerprints_leave_out_only_the_captions() -> None:
    other = apply_overrides(SMOKE, [f"--set {s}"[6:] for s in OTHER_CAPTIONS])
    assert other.fingerprint() != SMOKE.fingerprint()
    for name in ("random", "supervised", "simclr", "absimclr", "dino", "abdino", "abdino-noema"):
        row = parse_row(name)
        assert not row.reads_captions
        assert other.fingerprint(row) == SMOKE.fingerprint(row), name
        assert SMOKE.fingerprint(row) != SMOKE.fingerprint()
    for name in ("clip", "abclip", "abclip-noact"):
        row = parse_row(name)
        assert row.reads_captions
        assert SMOKE.fingerprint(row) == SMOKE.fingerprint()  # CLIP's runs keep the profile's fingerprint
        assert other.fingerprint(row) != SMOKE.fingerprint(row), name
    # Where uncaptioned scenes lose their labels, the caption fraction counts for every row.
    captioned = [*OTHER_CAPTIONS, 'scenes.annotate="captioned"']
    simclr = parse_row("simclr")
    assert apply_overrides(SMOKE, captioned).fingerprint(simclr) != apply_overrides(
        SMOKE, ['scenes.annotate="captioned"']
    ).fingerprint(simclr)
    # Anything else still counts, for every row.
    longer = apply_overrides(SMOKE, ["steps=5"])
    for name in ("simclr", "clip"):
        assert longer.fingerprint(parse_row(name)) != SMOKE.fingerprint(parse_row(name))
    # A run stamped with the whole profile's fingerprint (before row fingerprints) still counts.
    row = parse_row("dino")
    assert SMOKE.made_by(SMOKE.fingerprint(), row) and SMOKE.made_by(SMOKE.fingerprint(row), row)
    assert not SMOKE.made_by(other.fingerprint(), row) and not SMOKE.made_by(None, row)


def test_rows_reading_no_caption_train_the_same_under_any_captions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """What makes leaving the captions out of those rows' fingerprints sound: trained under two
    caption settings, each such row ends with the same loss and the same encoder weights, while
    CLIP (which reads them) does not."""
    other = apply_overrides(SMOKE, OTHER_CAPTIONS)
    results: dict[str, list[tuple[float, dict[str, torch.Tensor]]]] = {}
    for k, profile in enumerate((SMOKE, other)):
        # A fresh registry and scene memo per profile: each trains on scenes built with its own captions.
        monkeypatch.setattr(runner, "_SCENES", {})
        for name in [n for n in EMBEDDED if n.startswith("reproduce-smoke-")]:
            monkeypatch.delitem(EMBEDDED, name)
        for name in ("supervised", "simclr", "absimclr", "dino", "abdino", "clip"):
            (run,) = runner.plan(profile, [name], tmp_path / str(k))
            record = runner.train_run(run, profile, "cpu")
            assert record is not None and record["fingerprint"] == profile.fingerprint(run.row)
            weights = load_encoder(run.dir, "cpu").state_dict()
            results.setdefault(name, []).append((record["loss"], weights))
        captions = runner.scene_source(profile, split="train")
        assert captions.config.caption_fraction == profile.scenes["caption_fraction"]
    for name, ((loss_a, w_a), (loss_b, w_b)) in results.items():
        same = loss_a == loss_b and all(torch.equal(w_a[key], w_b[key]) for key in w_a)
        assert same == (name != "clip"), (name, loss_a, loss_b)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished smoke report: random, simclr and absimclr."""
    out = tmp_path_factory.mktemp("reuse") / "first"
    _cli(out, "--no-plots")
    return out


def test_reuse_takes_the_runs_whose_row_fingerprint_matches(finished: Path, tmp_path: Path) -> None:
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
        assert new["eval"]["final"] == old["eval"]["final"] and new["eval"]["curve"] == old["eval"]["curve"]
        if old["train"] is not None:
            assert {k: v for k, v in new["train"].items() if k != "reused_from"} == old["train"]
        assert new["eval"]["reused_from"]["fingerprint"] == old["eval"]["fingerprint"]
        assert new["eval"]["fingerprint"] == SMOKE.fingerprint(parse_row(old["row"]))
    assert record["summary"]["simclr"] == first["summary"]["simclr"]
    # A second call finds them done in their directories (and equal to the file's); none is copied again.
    again = _cli(out, *rows, *sets, "--reuse", str(results), "--report-only", "--no-plots")
    assert "simclr/s0o0: done, skipped" in again.stdout
    assert f"reused 0 finished runs from {results}" in again.stdout
    assert "3 runs from first/results.json" in (out / "table.md").read_text()


def test_reuse_checks_copies_against_each_other_and_the_runs_here(finished: Path, tmp_path: Path) -> None:
    first = json.loads((finished / "results.json").read_text())
    tampered = json.loads(json.dumps(first))
    run = next(r for r in tampered["runs"] if r["row"] == "simclr")
    run["eval"]["final"]["scene"]["linear"]["map"] += 1e-9
    bad = tmp_path / "tampered.json"
    bad.write_text(json.dumps(tampered))
    # Against the run finished here.
    proc = _cli(finished, "--reuse", str(bad), "--report-only", "--no-plots", ok=False)
    assert "simclr/s0o0:" in proc.stderr and "differ (final)" in proc.stderr
    # Against another copy, in the final scores, the training record or a curve point; nothing at all
    # is written, not even the runs that agree (random).
    out = tmp_path / "fresh"
    args = ("--reuse", str(finished / "results.json"), "--reuse", str(bad), "--report-only", "--no-plots")
    proc = _cli(out, *args, ok=False)
    assert "differ (final) though the fingerprints match" in proc.stderr
    assert not out.exists()
    for where, change in (
        ("train", lambda r: r["train"].update(loss=r["train"]["loss"] + 1e-9)),
        ("curve step", lambda r: next(iter(r["eval"]["curve"].values()))["scene"]["linear"].update(map=0.5)),
    ):
        other = json.loads(json.dumps(first))
        change(next(r for r in other["runs"] if r["row"] == "absimclr"))
        bad.write_text(json.dumps(other))
        proc = _cli(out, *args, ok=False)
        assert f"absimclr/s0o0: {finished / 'results.json'} and {bad} differ ({where}" in proc.stderr
        assert not out.exists()
    # Timings may differ: they are not numbers a run measured.
    timed = json.loads(json.dumps(first))
    for r in timed["runs"]:
        for task in r["eval"]["final"].values():
            task["wall_s"] = 0.5
    ok = tmp_path / "timed.json"
    ok.write_text(json.dumps(timed))
    _cli(finished, "--reuse", str(ok), "--report-only", "--no-plots")


def test_reuse_refuses_a_file_that_is_not_a_report_of_this_version(finished: Path, tmp_path: Path) -> None:
    record = json.loads((finished / "results.json").read_text())
    assert stored_profile(record, finished).fingerprint() == SMOKE.fingerprint()
    record["profile"]["fingerprint"] = "0123456789ab"  # made when a field meant something else
    with pytest.raises(ValueError, match=r"gives fingerprint \w+ here, not the 0123456789ab"):
        stored_profile(record, tmp_path)
    record["profile"]["colour_augment"] = 1
    with pytest.raises(ValueError, match=r"profile fields \['colour_augment'\] are unknown"):
        stored_profile(record, tmp_path)
    with pytest.raises(ValueError, match=r"not a reproduce\.py results\.json"):
        stored_profile({"runs": []}, tmp_path)
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    proc = _cli(tmp_path / "out", "--reuse", str(junk), "--report-only", ok=False)
    assert f"--reuse {junk}: cannot read it as JSON" in proc.stderr
    proc = _cli(tmp_path / "out", "--reuse", str(tmp_path / "missing.json"), "--report-only", ok=False)
    assert f"--reuse {tmp_path / 'missing.json'}: cannot read it (No such file or directory)" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_reuse_checks_the_stored_recipe(finished: Path, tmp_path: Path) -> None:
    """A run's configs travel in its train.json (``recipe``): a stored run made with another recipe
    for the row (a knob or default whose meaning changed) is not reused, nor is an ablation row's
    run stored without one; a plain row's run without one is reused and counted as unchecked."""
    first = json.loads((finished / "results.json").read_text())
    ab = next(r for r in first["runs"] if r["row"] == "absimclr")
    assert ab["train"]["recipe"]["system"]["ab_actions"] is True
    noact = {**json.loads(json.dumps(ab)), "key": "absimclr-noact/s0o0", "row": "absimclr-noact"}
    other = tmp_path / "other-recipe.json"
    other.write_text(json.dumps({**first, "runs": [noact]}))
    out = tmp_path / "a"
    report = ("--report-only", "--no-plots")
    proc = _cli(out, "--rows", "absimclr-noact", "--reuse", str(other), *report, ok=False)  # none to report
    assert "reused 0 finished runs" in proc.stdout
    why = "trained with system ab_actions=True, but the row's recipe now gives ab_actions=False"
    assert f"not reused (1): absimclr-noact/s0o0 ({why})" in proc.stdout
    assert not (out / "absimclr-noact").exists()
    # Records made before the recipe was stored.
    bare = json.loads(json.dumps({**first, "runs": [*first["runs"], noact]}))
    for r in bare["runs"]:
        if r["train"]:
            del r["train"]["recipe"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(bare))
    proc = _cli(tmp_path / "b", "--rows", "simclr,absimclr-noact", "--reuse", str(old), *report)
    assert f"reused 1 finished runs from {old} (1 without a recipe record to check)" in proc.stdout
    assert "absimclr-noact/s0o0 (no recipe record" in proc.stdout
    assert (tmp_path / "b" / "simclr" / "s0o0" / "train.json").is_file()
    assert f"1 runs from {tmp_path.name}/old.json" in (tmp_path / "b" / "table.md").read_text()
    assert "(1 trained before configs were recorded)" in (tmp_path / "b" / "table.md").read_text()


def test_reuse_takes_no_run_made_on_another_device(finished: Path, tmp_path: Path) -> None:
    record = json.loads((finished / "results.json").read_text())
    record["machine"]["device"] = "cuda:0"  # bf16 autocast there: other numbers
    cuda = tmp_path / "cuda.json"
    cuda.write_text(json.dumps(record))
    proc = _cli(tmp_path / "out", "--reuse", str(cuda), "--report-only", "--no-plots", ok=False)
    assert "reused 0 finished runs" in proc.stdout and "simclr/s0o0 (made on cuda, not cpu)" in proc.stdout


def test_dry_run_counts_what_reuse_would_take_and_writes_nothing(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "dry"
    proc = _cli(out, "--reuse", str(finished / "results.json"), "--dry-run")
    assert "would reuse (the plan below lists them as todo) 3 finished runs" in proc.stdout
    assert not out.exists()


def test_a_reused_run_is_checked_against_the_recipe_later(finished: Path, tmp_path: Path) -> None:
    out = tmp_path / "reused"
    _cli(out, "--rows", "simclr", "--reuse", str(finished / "results.json"), "--report-only", "--no-plots")
    (run,) = runner.plan(SMOKE, ["simclr"], out)
    assert runner.run_status(run, SMOKE) == "done" and not (run.dir / "run.json").exists()
    train = json.loads((run.dir / "train.json").read_text())
    train["recipe"]["train"]["lr"] = 0.5  # as if the row's recipe had changed since
    (run.dir / "train.json").write_text(json.dumps(train))
    with pytest.raises(ValueError, match=r"simclr/s0o0 trained with train lr=0\.5, but the row's recipe now"):
        runner.run_status(run, SMOKE)


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
