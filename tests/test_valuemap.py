"""``vpt valuemap``: Q(l | whole image, move) over a grid of moves, for tiny trained AB runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _system_helpers import SMALL
from PIL import Image

from agents.cli import main
from agents.export import load_system
from agents.pretrain import DataConfig, pretrain
from agents.systems import SystemConfig
from agents.trainer import TrainConfig
from agents.valuemap import heldout_source, move_grid, write_value_map
from vpt_env.core.render import render_crops
from vpt_env.data.pool import ImagePool
from vpt_env.data.scenes import SceneSource

pytestmark = pytest.mark.usefixtures("one_thread")

SCENES = {
    "size": 32, "n_images": 16, "objects": [1, 3], "object_sets": ["digits"], "object_size": [0.3, 0.5],
    "background": ["flat"], "caption_fraction": 0.9,
}  # fmt: skip
VIEW = 16
METHODS = ("absimclr", "abclip", "absupervised", "abdino")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two training steps of each AB method, and of SimCLR (a base), on 16 tiny scenes."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for method in (*METHODS, "simclr"):
        pretrain(
            DataConfig(source=json.dumps({"scenes": SCENES}), view_size=VIEW, threads=1),
            SystemConfig(method, **{**SMALL, "text_max_len": 64}),
            TrainConfig(steps=2, batch_size=8, out_dir=str(root / method), progress=False),
        )
        out[method] = str(root / method)
    return out


@pytest.fixture(scope="module")
def test_scenes() -> SceneSource:
    """The test split of the runs' scenes: what ``vpt valuemap`` maps by default."""
    return SceneSource(**{k: tuple(v) if isinstance(v, list) else v for k, v in SCENES.items()}, split="test")


def _first_with(source: SceneSource, objects: int) -> int:
    return next(i for i in range(len(source)) if len(source.annotation(i).boxes) >= objects)


def _run_cli(run: str, out, *extra: str) -> dict:
    assert main(["valuemap", "--ckpt", run, "--out", str(out), *extra]) == 0
    (js,) = out.glob("*.json")
    (png,) = out.glob("*.png")
    with Image.open(png) as im:
        assert im.mode == "RGB" and im.width >= 400 and im.height >= 300
    return json.loads(js.read_text())


def _start_view(source: SceneSource, index: int) -> torch.Tensor:
    """The whole image at the view size, rendered independently of agents.valuemap."""
    pool = ImagePool.from_source(source, min_side=VIEW)
    return render_crops(pool, torch.tensor([index]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), VIEW)[0]


def _object_crops(source: SceneSource, index: int) -> torch.Tensor:
    pool = ImagePool.from_source(source, min_side=VIEW)
    boxes = torch.from_numpy(source.annotation(index).boxes)
    return render_crops(pool, torch.full((len(boxes),), index), boxes, VIEW).clamp(0, 1)


def _q_direct(system, view: torch.Tensor, move: list[float], psi: torch.Tensor) -> torch.Tensor:
    """Q(. | x, a) by the formula, from the system's own encoder, decoder and temperature."""
    with torch.no_grad():
        tokens = system.encoder(view[None]).tokens
        phi = system.decoder(tokens, torch.tensor([[move]]))[0, 0]
        logits = F.normalize(phi, dim=-1) @ F.normalize(psi, dim=-1).T / system.config.ab_temperature
    return logits.softmax(-1)


def _near(moves: list, box: list[float]) -> tuple[int, int]:
    """The grid cell whose move centre is nearest the box's centre (the test's hand-picked move)."""

    def centre(b: list[float]) -> tuple[float, float]:
        return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2

    cells = [(r, c) for r in range(len(moves)) for c in range(len(moves))]
    return min(cells, key=lambda rc: math.dist(centre(moves[rc[0]][rc[1]]), centre(box)))


def _check_map(data: dict, grid: int, n_labels: int) -> torch.Tensor:
    q = torch.tensor(data["q"])
    assert q.shape == (grid, grid, n_labels) and len(data["annotations"]) == n_labels
    assert torch.allclose(q.sum(-1), torch.ones(grid, grid), atol=1e-5) and bool((q >= 0).all())
    for m in data["maps"]:
        assert torch.equal(torch.tensor(m["q"]), q[..., m["annotation"]])
    return q


@pytest.mark.parametrize("method", METHODS)
def test_value_map_is_q_of_each_move(method, runs, test_scenes, tmp_path, device):
    index = _first_with(test_scenes, 2)
    grid, size = 5, 0.4
    extra = ["--image", str(index), "--grid", str(grid), "--move-size", str(size), "--device", str(device)]
    if method == "absimclr":
        extra += ["--distractors", "0"]  # L = this image's objects, so the test can build all of psi
    data = _run_cli(runs[method], tmp_path, *extra)
    ann = test_scenes.annotation(index)
    classes = test_scenes.classes
    assert data["method"] == method and data["image_index"] == index and data["view_size"] == VIEW
    assert [o["name"] for o in data["objects"]] == [classes[c] for c in ann.box_labels]
    # The moves: squares of side 0.4 (the image is square) whose centres span the image evenly.
    moves = torch.tensor(data["moves"])
    centres = torch.linspace(size / 2, 1 - size / 2, grid)
    grid_xy = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), -1)  # [r, c] = (x_c, y_r)
    assert torch.allclose((moves[..., :2] + moves[..., 2:]) / 2, grid_xy, atol=1e-6)
    assert torch.allclose(moves[..., 2:] - moves[..., :2], torch.full((grid, grid, 2), size), atol=1e-6)

    system = load_system(runs[method]).eval()
    view = _start_view(test_scenes, index)
    present = list(dict.fromkeys(ann.box_labels.tolist()))
    with torch.no_grad():
        if method == "absupervised":
            psi = system.class_embed.weight
            assert data["annotations"] == classes
            assert [m["annotation"] for m in data["maps"]] == present
        elif method == "abclip":
            texts = [f"a {c}" for c in classes] + list(ann.captions)
            assert data["annotations"] == texts and ann.captions
            psi = system.psi_head(system.text(texts))
            assert [m["annotation"] for m in data["maps"]] == [*present, len(classes)]
        elif method == "absimclr":
            psi = system.psi_head(system.encoder(_object_crops(test_scenes, index)).pooled)
            assert [m["annotation"] for m in data["maps"]] == list(range(len(ann.boxes)))
        else:
            psi = system.head.prototypes
            teacher = system.ema["head"](system.ema["encoder"](_object_crops(test_scenes, index)).pooled)
            top = ((teacher - system.center) / system.config.dino_teacher_temp).argmax(-1).tolist()
            assert [m["annotation"] for m in data["maps"]] == top
            assert [m["objects"] for m in data["maps"]] == [[k] for k in range(len(ann.boxes))]
    q = _check_map(data, grid, psi.shape[0])
    r, c = _near(data["moves"], ann.boxes[0].tolist())
    expected = _q_direct(system, view, data["moves"][r][c], psi)
    # The map ran on ``device``, the formula on the CPU.
    assert torch.allclose(q[r, c], expected, atol=1e-5 if device.type == "cpu" else 1e-4), (q[r, c], expected)
    # Q depends on the move: another cell gives other values (the map is not one repeated vector).
    assert not torch.allclose(q[0, 0], q[-1, -1], atol=1e-6)


def test_simclr_distractors_and_python_entry_point(runs, test_scenes, tmp_path):
    """The reproduction's call: a loaded system and a source object, default move size and grid."""
    system = load_system(runs["absimclr"])
    index = _first_with(test_scenes, 1)
    png, js = write_value_map(system, test_scenes, index, tmp_path, view_size=VIEW, distractors=5, stem="m")
    assert png == tmp_path / "m.png" and png.is_file()
    data = json.loads(js.read_text())
    m = len(test_scenes.annotation(index).boxes)
    _check_map(data, 9, m + 5)
    assert all(" in image " in name or name.startswith("image ") for name in data["annotations"][m:])
    # Default move size: the median longer side of the image's boxes (the scenes are square).
    boxes = test_scenes.annotation(index).boxes
    assert data["move_size"] == pytest.approx(float(np.median((boxes[:, 2:] - boxes[:, :2]).max(axis=1))))


def test_move_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="grid must be an int in"):
        move_grid(1, (0.5, 0.5))
    with pytest.raises(ValueError, match="size must be"):
        move_grid(3, (0.0, 0.5))


def test_heldout_source():
    assert heldout_source("photos") is None
    src = heldout_source(json.dumps({"scenes": SCENES}))
    assert src.config.split == "test" and len(src) == SCENES["n_images"]


def test_errors_name_the_argument(runs, tmp_path, capsys):
    assert main(["valuemap", "--ckpt", runs["simclr"], "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs an AB run" in err and "method=simclr" in err
    assert main(["valuemap", "--ckpt", runs["absimclr"], "--image", "16", "--out", str(tmp_path)]) == 2
    assert "--image must be in [0, 16)" in capsys.readouterr().err
    assert main(["valuemap", "--ckpt", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "--ckpt" in capsys.readouterr().err
    empty = json.dumps({"scenes": {**SCENES, "annotate": "captioned", "caption_fraction": 0.0}})
    assert main(["valuemap", "--ckpt", runs["abclip"], "--source", empty, "--out", str(tmp_path)]) == 2
    assert "no annotated object boxes" in capsys.readouterr().err
    for flag, value in (("--grid", "1"), ("--grid", "x"), ("--move-size", "0"), ("--image", "-1")):
        with pytest.raises(SystemExit) as exit_info:
            main(["valuemap", "--ckpt", runs["abclip"], flag, value])
        assert exit_info.value.code == 2
        assert f"argument {flag}: must be" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
