"""benchmarks/reproduce.py (issue 7): the smoke profile end to end, resumption, the plan and the rows."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agents.pretrain import DataConfig

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "reproduce.py"
ROWS = ("random", "simclr", "absimclr")
TASKS = ("scene", "region", "heldout")
PROBES = ("linear", "knn", "attentive")

sys.path.insert(0, str(ROOT / "benchmarks"))
from reproduction.cli import apply_overrides, parse_ints  # noqa: E402
from reproduction.profiles import PROFILES, expand_rows, parse_row, run_configs, run_identity  # noqa: E402
from reproduction.report import paired_differences, run_times  # noqa: E402
from reproduction.runner import plan, run_status, train_run  # noqa: E402


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--profile", "smoke", "--out", str(out), "--threads", "1", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _state(out: Path) -> dict[str, int]:
    """mtime of every file of every run directory."""
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("*/s*o*/*") if p.is_file()}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("reproduce") / "smoke"
    return out, _run(out)


def test_smoke_writes_table_json_and_plots(
    smoke: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = smoke
    for name in ("table.md", "results.json", "curves.png", "pairs.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    record = json.loads((out / "results.json").read_text())
    assert record["machine"]["cpu_count"] and record["machine"]["torch_threads"] == 1
    assert record["profile"]["name"] == "smoke"
    for row in ROWS:
        for task in TASKS:
            for probe in PROBES:
                cell = record["summary"][row][task][probe]
                assert isinstance(cell["mean"], float) and 0.0 <= cell["mean"] <= 1.0, (row, task, probe)
                assert cell["n"] == 1
    assert {r["key"] for r in record["runs"]} == {f"{row}/s0o0" for row in ROWS}
    trained = [r for r in record["runs"] if r["row"] != "random"]
    assert all(r["train"]["images_seen"] == 4 * 8 for r in trained)
    # Intermediate checkpoints were probed for the images-seen curve: every one below the last step
    # (none deleted by the keep limit, also when steps are not a multiple of curve_points + 1).
    every = max(1, 4 // 3)
    assert all(sorted(map(int, r["eval"]["curve"])) == list(range(every, 4, every)) for r in trained)
    table = (out / "table.md").read_text()
    assert "smoke" in table and "absimclr vs simclr" in table
    assert "AB minus its base, run by run" in table
    assert record["paired"]["absimclr vs simclr"]["scene"]["linear"]["n"] == 1
    for row in ROWS:
        assert f"| {row} |" in table
    # Each task's probe time is recorded, and the table reports time per run of every row.
    assert all(r["eval"]["final"][task]["wall_s"] > 0 for r in record["runs"] for task in TASKS)
    assert "## Time per run" in table
    assert record["times"]["random"]["training_s"] is None and record["times"]["random"]["probing_n"] == 1
    assert all(record["times"][row]["training_n"] == 1 for row in ROWS if row != "random")
    # Mechanism metrics of every trained run, final and at each curve point; the data's action
    # information is the same for base and AB (same fixed batches), the AB metrics only for AB.
    mech = {r["row"]: r["eval"]["mechanism"] for r in trained}
    for r in trained:
        assert mech[r["row"]]["final"] and set(mech[r["row"]]["curve"]) == set(r["eval"]["curve"])
    assert mech["simclr"]["final"]["oracle_info"] == mech["absimclr"]["final"]["oracle_info"] > 0
    assert math.isnan(mech["simclr"]["final"]["q_gain"]) and math.isfinite(
        mech["absimclr"]["final"]["q_gain"]
    )
    assert record["mechanism"]["absimclr"]["grad_cosine"]["n"] == 1
    assert "## Mechanism metrics" in table and "q_gain_fraction" in table
    # One value map per AB row, linked from the table.
    assert (out / "valuemaps" / "absimclr.png").is_file() and (out / "valuemaps" / "absimclr.json").is_file()
    assert not (out / "valuemaps" / "simclr.png").exists()
    assert "valuemaps/absimclr.png" in table


def test_run_times_hand_case() -> None:
    def run(row: str, train_s: float | None, probe_s: list[float] | None) -> dict:
        final = {t: {"wall_s": s} for t, s in zip(TASKS, probe_s or [], strict=False)}
        if probe_s is None:  # a run probed before probe times were recorded
            final = {t: {"linear": {"top1": 0.5}} for t in TASKS}
        train = None if train_s is None else {"wall_s_last_call": train_s}
        return {"row": row, "train": train, "eval": {"final": final}}

    times = run_times(
        [
            run("simclr", 10.0, [1.0, 2.0, 3.0]),
            run("simclr", 20.0, [2.0, 2.0, 2.0]),
            run("simclr", 30.0, None),
            run("random", None, [0.5, 0.5, 1.0]),
        ]
    )
    assert list(times) == ["random", "simclr"]
    assert times["simclr"] == {"training_s": 20.0, "training_n": 3, "probing_s": 6.0, "probing_n": 2}
    assert times["random"] == {"training_s": None, "training_n": 0, "probing_s": 2.0, "probing_n": 1}


def test_second_invocation_skips_finished_runs(
    smoke: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = smoke
    before = _state(out)
    assert any(k.endswith("metrics.jsonl") for k in before) and any(k.endswith("eval.json") for k in before)
    proc = _run(out)
    assert proc.stdout.count("done, skipped") == len(ROWS)
    assert "-> training" not in proc.stdout
    assert _state(out) == before  # no retraining, no re-probing


def test_dry_run_lists_the_plan(smoke: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = smoke
    proc = _run(out, "--dry-run", "--rows", "simclr,absimclr,absimclr-noact")
    lines = proc.stdout.splitlines()
    assert "plan: 3 runs" in lines
    assert any("simclr/s0o0" in line and "done" in line for line in lines)
    assert any(
        "absimclr-noact/s0o0" in line and "todo" in line and "steps left      4" in line for line in lines
    )
    assert "training steps left: 4" in proc.stdout
    assert not (out / "absimclr-noact").exists()


def test_feature_geometry_reads_the_finished_runs(
    smoke: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    out, _ = smoke
    dest = tmp_path / "geometry.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "feature_geometry.py"),
        "--profile",
        "smoke",
        "--out",
        str(out),
        "--rows",
        "random,simclr,absimclr-noact",
        "--threads",
        "1",
        "--json",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads(dest.read_text())
    assert [r["run"] for r in record["runs"]] == ["random/s0o0", "simclr/s0o0"]
    assert record["skipped"] == ["absimclr-noact/s0o0"]  # never trained: reported, not measured
    for r in record["runs"]:
        assert r["participation_ratio"] >= 1.0 - 1e-6 and r["effective_rank"] >= 1.0 - 1e-6
        assert 0.0 < r["top_share"] <= 1.0 and -1.0 <= r["mean_cosine"] <= 1.0
        assert 0.0 <= r["knn"] <= 1.0 and 0.0 <= r["knn_whitened"] <= 1.0
    ev = json.loads((out / "simclr" / "s0o0" / "eval.json").read_text())
    simclr = record["runs"][1]
    # The unwhitened kNN is the benchmark's own kNN probe, and the linear figure is read from it.
    assert simclr["knn"] == pytest.approx(ev["final"]["heldout"]["knn"]["top1"])
    assert simclr["linear"] == ev["final"]["heldout"]["linear"]["top1"]


def test_paired_differences_hand_case() -> None:
    def ev(row: str, seed: int, ordering: int, linear: float, knn: float) -> dict:
        result = {"metric": "top1", "linear": {"top1": linear}, "knn": {"top1": knn}}
        return {"row": row, "seed": seed, "ordering": ordering, "final": {"region": result}}

    evals = [
        ev("simclr", 0, 0, 0.50, 0.40),
        ev("absimclr", 0, 0, 0.60, 0.30),
        ev("simclr", 1, 0, 0.70, 0.40),
        ev("absimclr", 1, 0, 0.60, 0.30),
        ev("simclr", 0, 1, 0.40, 0.40),
        ev("absimclr", 0, 1, 0.70, 0.40),
        ev("absimclr", 2, 0, 0.99, 0.99),  # no simclr run of seed 2: not paired
        ev("clip", 0, 0, 0.5, 0.5),  # no abclip run: no pair
    ]
    paired = paired_differences(evals, ("region",))
    assert list(paired) == ["absimclr vs simclr"]
    linear = paired["absimclr vs simclr"]["region"]["linear"]
    # diffs (seed, ordering) sorted: (0,0) +0.1, (0,1) +0.3, (1,0) -0.1; mean 0.1, sample std 0.2
    assert linear["diffs"] == pytest.approx([0.1, 0.3, -0.1])
    assert linear["mean"] == pytest.approx(0.1) and linear["std"] == pytest.approx(0.2)
    assert linear["n"] == 3 and linear["wins"] == 2
    knn = paired["absimclr vs simclr"]["region"]["knn"]
    assert knn["wins"] == 0 and knn["mean"] == pytest.approx(-0.2 / 3)  # ties are not wins
    # An ablation row is paired with its base and with its AB row.
    ablated = paired_differences([*evals, ev("absimclr-crops", 0, 0, 0.80, 0.40)], ("region",))
    assert list(ablated) == ["absimclr vs simclr", "absimclr-crops vs simclr", "absimclr-crops vs absimclr"]
    assert ablated["absimclr-crops vs simclr"]["region"]["linear"]["diffs"] == pytest.approx([0.3])
    assert ablated["absimclr-crops vs absimclr"]["region"]["knn"]["diffs"] == pytest.approx([0.1])


def test_parse_ints_names_the_flag() -> None:
    assert parse_ints("0, 2,", "--seeds") == (0, 2)
    for bad in ("a", "", "1,-1", "0.5"):
        with pytest.raises(SystemExit, match="--orderings"):
            parse_ints(bad, "--orderings")


def test_rows_and_ablation_knobs() -> None:
    assert parse_row("random").method is None
    row = parse_row("abclip-gamma0.9-noact")
    assert row.method == "abclip" and row.base == "clip"
    assert row.system == {"gamma": 0.9, "ab_actions": False}
    assert parse_row("abdino-noema").system == {"ab_ema_target": False}
    assert parse_row("absimclr-iou0.3_0.6").data == {"iou_range": (0.3, 0.6)}
    assert parse_row("abdino-crops-gamma0").data == {"ab_views": "crops"}
    assert parse_row("abdino-nopsigrad").system == {"ab_psi_grad": False}
    assert parse_row("abdino-w0.25-crops").system == {"ab_weight": 0.25}
    # The departures from docs/method.md that earlier profiles made by default are named rows now.
    assert parse_row("absimclr-augab").data == {"ab_views": "shared"}
    assert parse_row("abdino-v2").train == {"views_per_image": 2}
    assert parse_row("abclip-scale0.2").data == {"scale": (0.2, 1.0)}
    bad_rows = ("clip-noact", "dino-crops", "absimclr-nopsigrad", "abclip-warp", "abclip-w", "dino-w0.5")
    more_bad = ("abdino-v1", "abdino-v2-v4", "abdino-scale0", "abdino-scale1.5", "abdino-crops-augab")
    for bad in (*bad_rows, *more_bad, "byol", "abclip-iou0.6_0.3", "abdino-w0.25-w0.5", "abclip-noact-noact"):
        with pytest.raises(ValueError):
            parse_row(bad)
    quick = PROFILES["cpu-quick"]
    assert expand_rows(quick, None) == ["random", "supervised", "clip", "abclip"]
    ablations = expand_rows(quick, "ablations")
    assert ablations[0] == "abclip" and "abclip-noact" in ablations and "abclip-gamma0" in ablations
    assert {"abclip-v2", "abclip-scale0.2"} <= set(ablations)
    assert "abclip-augab" not in ablations  # CLIP's views are not augmented: it would be abclip again
    assert len(expand_rows(quick, "all")) == 8 + 9
    dino_ablations = expand_rows(dataclasses.replace(quick, ablation_of="abdino"), "ablations")
    assert "abdino-augab" in dino_ablations


def test_profiles_hold_the_comparison_fixed(tmp_path: Path) -> None:
    assert {"smoke", "cpu-quick", "cpu-full", "gpu"} <= set(PROFILES)
    full = PROFILES["cpu-full"]
    assert len(full.seeds) >= 3 and len(full.orderings) == 2
    assert {"clip", "abclip", "simclr", "absimclr", "dino", "abdino"} <= set(full.rows)
    runs = plan(full, expand_rows(full, None), tmp_path)
    pairs = len(full.rows) - 2  # the six pair rows; random runs per seed, supervised once
    assert full.first_seed_rows == ("supervised",)
    assert len(runs) == len(full.seeds) + 1 + pairs * len(full.seeds) * len(full.orderings)
    # cpu-full holds cpu-quick's comparison fixed: the same configs, so the same run identities.
    quick_runs = plan(PROFILES["cpu-quick"], ["random", "clip", "abclip"], tmp_path)
    quick = {run.key: run.identity for run in quick_runs}
    assert all(run.identity == quick[run.key] for run in runs if run.key in quick)
    by_key = {run.key: run for run in runs}
    for base, ab in (("clip", "abclip"), ("dino", "abdino")):
        (db, sb, tb), (da, sa, ta) = (run_configs(full, by_key[f"{r}/s1o1"].row, 1) for r in (base, ab))
        assert (tb.steps, tb.batch_size, tb.views_per_image, tb.seed) == (
            ta.steps,
            ta.batch_size,
            ta.views_per_image,
            ta.seed,
        )
        assert tb.seed == 1  # the ordering drives the sampler
        assert db == da and (sb.encoder, sb.encoder_kwargs) == (sa.encoder, sa.encoder_kwargs)
    # The captions name size and position, never colour (colour words were CLIP's shortcut, c4/c10).
    assert full.scenes["caption_words"] == ("size", "position")
    # docs/method.md's views (issue 19): 4 per image, crops of 5-100%, AB's crop-only (the configs' defaults).
    assert all((p.train.views_per_image, p.data.scale) == (4, (0.05, 1.0)) for p in PROFILES.values())
    assert DataConfig().ab_views == "crops"
    _, system, _ = run_configs(full, parse_row("abclip-noact"))
    assert system.ab_actions is False


def test_run_identity_holds_what_changes_the_numbers() -> None:
    """Every knob, config field, seed, ordering, probe setting and kind of device changes a run's
    identity; where it runs, how it logs and what the profile is called do not."""
    smoke = PROFILES["smoke"]
    row = parse_row("absimclr")
    ident = run_identity(smoke, row, 0, 0)
    assert ident == run_identity(smoke, parse_row("absimclr"), 0, 0)  # a pure function
    assert len({ident, run_identity(smoke, row, 1, 0), run_identity(smoke, row, 0, 1)}) == 3
    for name in ("absimclr-noact", "absimclr-gamma0", "absimclr-v2", "absimclr-scale0.2", "absimclr-augab"):
        assert run_identity(smoke, parse_row(name), 0, 0) != ident, name
    for change in (
        ["train.lr=0.002"], ["system.embed_dim=8"], ["data.view_size=12"], ["scenes.n_images=40"],
        ["probe_images=30"], ["linear_epochs=4"], ['data.device="cuda"'],
    ):  # fmt: skip
        assert run_identity(apply_overrides(smoke, change), row, 0, 0) != ident, change
    for same in (
        ['description="other"'], ['rows=["simclr"]'], ["seeds=[5]"], ["data.threads=2"],
        ["train.max_time_s=60"], ["curve_points=3"], ['tasks=["scene"]'], ["est_step_s=9"],
    ):  # fmt: skip
        assert run_identity(apply_overrides(smoke, same), row, 0, 0) == ident, same
    cuda0, cuda1 = (apply_overrides(smoke, [f'data.device="cuda:{i}"']) for i in (0, 1))
    assert run_identity(cuda0, row, 0, 0) == run_identity(cuda1, row, 0, 0)
    # The untrained encoder depends on the encoder and the seed, not on the training.
    rand = parse_row("random")
    base = run_identity(smoke, rand, 0, 0)
    assert run_identity(apply_overrides(smoke, ["train.lr=0.5"]), rand, 0, 0) == base
    assert run_identity(apply_overrides(smoke, ['system.encoder_kwargs={"width": 4}']), rand, 0, 0) != base
    with pytest.raises(SystemExit, match=r"unknown profile field 'steps'.*train\.<name>"):
        apply_overrides(smoke, ["steps=5"])
    with pytest.raises(SystemExit, match="no_such"):
        apply_overrides(smoke, ["train.no_such=5"])
    # One setting, one identity, however its number is written.
    assert run_identity(apply_overrides(smoke, ["system.ab_weight=1"]), row, 0, 0) == ident
    assert run_identity(apply_overrides(smoke, ["system.ab_weight=1.0"]), row, 0, 0) == ident
    # Fields the harness sets per run, and bad scene or probe values, are refused at once.
    for bad, why in (
        ['data.source="photos"', "the harness sets this field"],
        ["train.seed=3", "the harness sets this field"],
        ["scenes.bogus=1", "bogus"],
        ['probe_images="abc"', "probe_images must be an int"],
        ["knn_k=0", "knn_k must be an int >= 1"],
    ):
        with pytest.raises(SystemExit, match=why):
            apply_overrides(smoke, [bad])


def test_a_directory_trained_with_other_configs_is_refused(tmp_path: Path, one_thread: None) -> None:
    """A knob whose meaning changed (noema was ema_rate=1) cannot pass old results off as new: the
    finished record of another identity counts as absent, and the checkpoint is refused by name."""
    smoke = PROFILES["smoke"]
    (run,) = plan(smoke, ["abdino-noema"], tmp_path)
    assert run_status(run, smoke.tasks) == "todo"
    record = train_run(run, smoke)
    assert record is not None and record["identity"] == run.identity
    assert run_status(run, smoke.tasks) == "trained"
    train = json.loads((run.dir / "train.json").read_text())
    (run.dir / "train.json").write_text(json.dumps({**train, "identity": "0" * 16}))
    assert run_status(run, smoke.tasks) == "partial"  # a finished run of another identity: resumed
    stored = json.loads((run.dir / "run.json").read_text())
    legacy = {k: v for k, v in stored["system"].items() if k != "ab_ema_target"}
    (run.dir / "run.json").write_text(json.dumps({**stored, "system": {**legacy, "ema_rate": 1.0}}))
    with pytest.raises(ValueError, match=r"trained with other settings: system\.ema_rate=1\.0"):
        train_run(run, smoke)
    # pretrain would extend a run to more steps or move it to another device; a reproduction run
    # is the same run only at the same length on the same kind of device.
    (run.dir / "run.json").write_text(json.dumps(stored))
    changes = ((["train.steps=6"], "train.steps=4"), (['data.device="cuda"'], "data.device='cpu'"))
    for change, field in changes:
        other = apply_overrides(smoke, change)
        (moved,) = plan(other, ["abdino-noema"], tmp_path)
        assert moved.dir == run.dir and moved.identity != run.identity
        with pytest.raises(ValueError, match=f"trained with other settings: {re.escape(field)}"):
            train_run(moved, other)


def test_shards_then_report_only(tmp_path: Path) -> None:
    # Two processes' worth of shards (run one after the other here), then one report of both.
    out = tmp_path / "sharded"
    first = _run(out, "--rows", "random,simclr", "--shard", "0/2", "--no-plots")
    second = _run(out, "--rows", "random,simclr", "--shard", "1/2", "--no-plots")
    assert "shard 0/2: 1 runs" in first.stdout and "shard 1/2: 1 runs" in second.stdout
    assert not (out / "table.md").exists()  # shards write no report
    assert all((out / row / "s0o0" / "eval.json").is_file() for row in ("random", "simclr"))
    report = _run(out, "--rows", "random,simclr,absimclr", "--report-only", "--no-plots")
    assert "-> training" not in report.stdout
    assert "not run (--report-only): 1 runs: absimclr/s0o0 (todo)" in report.stdout
    table = (out / "table.md").read_text()
    assert "| simclr |" in table and "| absimclr |" not in table
    assert "Not finished, so not in these tables (1 runs):** absimclr/s0o0 (todo)" in table
    assert json.loads((out / "results.json").read_text())["missing"] == ["absimclr/s0o0 (todo)"]


def test_time_budget_starts_no_new_run(tmp_path: Path) -> None:
    out = tmp_path / "budget"
    proc = _run(out, "--rows", "random,simclr", "--time-budget", "0.5", "--no-plots")
    # The first run starts at once; probing it takes longer than 0.5 s, so the second never starts.
    assert "[1/2] random/s0o0: todo -> training" in proc.stdout
    assert "past the time budget of 0.5 s): 1 runs: simclr/s0o0 (todo)" in proc.stdout
    assert not (out / "simclr").exists()


def test_bad_shard_is_refused(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SCRIPT), "--profile", "smoke", "--out", str(tmp_path), "--shard", "2/2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0 and "--shard '2/2': expected K/N" in proc.stderr
    cmd = [sys.executable, str(SCRIPT), "--profile", "smoke", "--out", str(tmp_path), "--time-budget", "-5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0 and "--time-budget -5.0: expected seconds >= 0" in proc.stderr
