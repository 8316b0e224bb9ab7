"""docs/make_figures.py run small, and the reference lines and joined pairs of the reproduction plots."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from reproduction.report import curves_figure, pairs_figure, summarise  # noqa: E402

TASKS = ("scene", "region", "heldout")
PROBES = ("linear", "knn", "attentive")


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_figures"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_script_small_writes_every_picture(tmp_path: Path) -> None:
    mf = _script()
    lines = mf.make_figures(mf.FigureConfig.small(tmp_path))
    reports = [p for p in (ROOT / "docs" / "results").glob("*/results.json")]
    names = [f"gallery-{env_id}.png" for env_id in mf.ENV_IDS] + ["rollout-ImageSearch-v0.gif"]
    names += [f"results-{p.parent.name}-{kind}.png" for p in reports for kind in ("curves", "pairs")]
    assert "results-reproduce-cpu-quick-pairs.png" in names  # the committed format-2 report
    for name in names:
        path = tmp_path / name
        assert path.is_file(), name
        assert any(line.startswith(str(path)) for line in lines), name
        with Image.open(path) as im:
            assert 100 <= im.width <= 4000 and 60 <= im.height <= 4000, (name, im.size)
    with Image.open(tmp_path / "rollout-ImageSearch-v0.gif") as gif:
        assert gif.n_frames >= 4
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert any("valuemaps/abclip.png" in line and "not copied" in line for line in lines)


def test_rollout_draws_the_goal_and_every_step() -> None:
    mf = _script()
    r = mf.rollout("ImageSearchDiscrete-v0", steps=3, seed=0, scenes=8)
    assert r.goal_name and r.goal_caption and r.goal_boxes
    assert len(r.boxes) == len(r.views) == len(r.ious) == len(r.actions) + 1 <= 4
    fig = mf.gallery_figure(r)
    assert "ImageSearchDiscrete-v0" in fig.get_suptitle() and r.goal_name in fig.get_suptitle()
    source = fig.subfigs[0].axes[0]
    assert len(source.patches) == len(r.boxes) + len(r.goal_boxes)  # a box per step, and the goals


def _evals() -> list[dict[str, Any]]:
    """Two seeds of random, supervised, simclr and absimclr; region chance far below the scores."""
    score = {"random": 0.40, "supervised": 0.70, "simclr": 0.55, "absimclr": 0.58}
    out = []
    for row, base in score.items():
        for seed in (0, 1):
            final = {}
            for task, metric, chance in (("scene", "map", 0.38), ("region", "top1", 0.1)):
                final[task] = {"metric": metric, "chance": chance}
                for k, probe in enumerate(PROBES):
                    final[task][probe] = {metric: base + 0.01 * k + 0.02 * seed}
            half = {
                t: {**c, **{p: {c["metric"]: c[p][c["metric"]] - 0.05} for p in PROBES}}
                for t, c in final.items()
            }
            out.append({"row": row, "seed": seed, "ordering": 0, "final": final, "curve": {"2": half}})
    return out


def _labels(ax: Any) -> set[str]:
    return {line.get_label() for line in ax.get_lines()}


def _has_references(ax: Any, metric: str) -> None:
    assert {"random-init floor", "supervised ceiling", "chance"} <= _labels(ax)
    assert metric in ax.get_ylabel() and "%" in ax.get_ylabel()
    chance = next(line for line in ax.get_lines() if line.get_label() == "chance").get_ydata()[0]
    lo, hi = ax.get_ylim()
    assert lo <= chance <= hi or "chance" in ax.get_title()  # drawn, or named in the title


def test_report_figures_draw_references_and_join_pairs() -> None:
    evals = _evals()
    summary = summarise(evals, TASKS)
    curves = curves_figure(
        summary, evals, "t", steps=4, batch_size=8, tasks=("scene", "region"), probes=("linear",)
    )
    assert curves is not None
    scene, region = curves.axes[:2]
    _has_references(scene, "mAP")
    _has_references(region, "top-1 accuracy")
    assert scene.get_title().startswith("scene task, linear probe")
    assert "chance 10.0 %" in region.get_title()  # 10 % is far below 40-70 %: named, not drawn
    assert scene.get_ylim()[0] <= 38.0 <= scene.get_ylim()[1]  # 38 % is near: drawn
    assert "images seen" in scene.get_xlabel()
    assert {"supervised", "simclr", "absimclr"} <= _labels(scene)
    pairs = pairs_figure(summary, evals, "t")
    assert pairs is not None
    panels = [ax for ax in pairs.axes if ax.get_title()]
    assert len(panels) == 2 * len(PROBES)  # the tasks with results, by every probe
    for ax in panels:
        _has_references(ax, "mAP" if ax.get_title().startswith("scene") else "top-1")
        joins = [line for line in ax.get_lines() if list(line.get_xdata()) == [-0.2, 0.2]]
        assert len(joins) == 2  # absimclr joined to simclr at each seed
        assert all(line.get_ydata()[1] > line.get_ydata()[0] for line in joins)
        assert all("right row higher" in line.get_label() for line in joins)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["simclr", "absimclr"]


def test_bad_sizes_are_refused_naming_the_parameter(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    figures = _script()
    with pytest.raises(ValueError, match="gif_episodes must be a positive int, got 0"):
        figures.FigureConfig(out=tmp_path, gif_episodes=0)
    with pytest.raises(SystemExit):
        figures.main(["--out", str(tmp_path), "--steps", "-1"])
    assert "--steps must be a positive int, got -1" in capsys.readouterr().err


def test_summarise_takes_a_probe_that_did_not_run() -> None:
    """A multi-label result whose probes could not run carries no chance: the summary says so
    (chance None, the probe listed as not run) instead of failing."""
    ran = {"metric": "map", "linear": {"map": 0.4}, "chance": 0.3}
    skipped = {"metric": "map", "not_run": {"linear": "no test image has an object"}}
    evals = [{"row": "clip", "final": {"scene": skipped}}, {"row": "abclip", "final": {"scene": ran}}]
    summary = summarise(evals, ("scene",))
    assert summary["clip"]["scene"]["chance"] is None and summary["clip"]["scene"]["not_run"] == ["linear"]
    assert summary["abclip"]["scene"]["chance"] == pytest.approx(0.3)
