"""``vpt pretrain``, ``vpt eval`` and ``vpt export``: the command line over the agents."""

from __future__ import annotations

import json

import pytest
import torch

from agents.cli import main
from agents.export import load_encoder, load_system, save_encoder

TINY = [
    "--encoder-kwargs",
    '{"width": 8}',
    "--embed-dim",
    "16",
    "--hidden-dim",
    "16",
    "--decoder-dim",
    "16",
    "--source",
    "photos",
    "--view-size",
    "16",
    "--batch-size",
    "4",
    "--no-progress",
    "--threads",
    "1",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_pretrain_resume_eval_export(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "absimclr", "--steps", "2", "--out-dir", str(run), *TINY]) == 0
    record = json.loads((run / "run.json").read_text())
    assert record["system"]["method"] == "absimclr" and record["data"]["view_size"] == 16
    assert "absimclr: 2 steps" in capsys.readouterr().out
    # Same directory, more steps: resumes from step 2 (one metrics line per logged step, no duplicates).
    assert main(["pretrain", "--method", "absimclr", "--steps", "4", "--out-dir", str(run), *TINY]) == 0
    assert "absimclr: 4 steps" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 4
    # Another method in the same directory is refused, naming the clash.
    assert main(["pretrain", "--method", "simclr", "--steps", "4", "--out-dir", str(run), *TINY]) == 2
    assert "method" in capsys.readouterr().err

    out = tmp_path / "eval"
    # The run's 10 photos are too few to probe (their held-out classes are never trained on): scenes.
    args = ["eval", "--ckpt", str(run), "--source", "scenes", "--max-images", "40", "--linear-epochs", "2"]
    args += ["--attentive-epochs", "1", "--out", str(out), "--task", "objects"]
    assert main(args) == 0
    result = json.loads((out / "eval.json").read_text())
    assert set(result["results"]) == {"run", "random init"}
    for row in result["results"].values():
        assert {"linear", "knn", "attentive", "chance"} <= set(row)
    assert "| run |" in (out / "eval.md").read_text()

    path = tmp_path / "enc.safetensors"
    assert main(["export", "--ckpt", str(run), "--out", str(path)]) == 0
    enc = load_encoder(path)
    online = load_system(run).encoder.eval()
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(enc(x).pooled, online(x).pooled)


def test_export_pt_round_trip_and_bad_files(tmp_path):
    from agents.encoders import make_encoder

    enc = make_encoder("cnn", width=8)
    path = save_encoder(enc, tmp_path / "e.pt")
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(load_encoder(path)(x).tokens, enc.eval()(x).tokens)
    with pytest.raises(ValueError, match=r"safetensors or \.pt"):
        save_encoder(enc, tmp_path / "e.bin")
    torch.save({"format": "other"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not an encoder exported by vpt"):
        load_encoder(tmp_path / "x.pt")


def test_version(capsys):
    import vpt_env

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"vpt-env {vpt_env.__version__}"


def test_pretrain_help_is_plain_text_with_choices_and_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    out = capsys.readouterr().out
    assert "``" not in out and ":data:" not in out and ":func:" not in out and ":class:" not in out
    assert "Choices: abclip, abdino, absimclr" in " ".join(out.split())
    assert "(default: 'absimclr')" in " ".join(out.split())


def test_bad_flags_name_the_field(tmp_path, capsys):
    assert main(["pretrain", "--method", "byol", "--steps", "1", "--out-dir", str(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err
    assert "method" in err and "abclip" in err
    with pytest.raises(SystemExit):
        main(["pretrain", "--steps", "many"])


def test_pretrain_under_torchrun_environment(tmp_path):
    """Two gloo ranks launched as torchrun would: one run directory, rank 0's metrics, same weights."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "agents.cli",
        "pretrain",
        "--method",
        "simclr",
        "--steps",
        "2",
        "--out-dir",
        str(run),
        *TINY,
    ]
    procs = []
    for r in range(2):
        env = {
            **os.environ,
            "RANK": str(r),
            "LOCAL_RANK": str(r),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
        }
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
    from agents.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run / "latest.pt")
    assert ckpt["step"] == 2 and ckpt["world_size"] == 2


@pytest.mark.parametrize(
    "method", ["abclip", "abdino", "absimclr", "absupervised", "clip", "dino", "simclr", "supervised"]
)
def test_every_method_trains_from_the_cli_on_the_scenes(tmp_path, method):
    args = ["pretrain", "--method", method, "--steps", "1", "--out-dir", str(tmp_path), *TINY]
    args[args.index("photos")] = "scenes"
    assert main([*args, "--max-images", "24", "--text-dim", "16", "--dino-prototypes", "32"]) == 0
    assert (tmp_path / "latest.pt").is_file()


def test_pretrain_on_a_folder_of_images(tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")  # skipped and counted, not fatal
    args = ["pretrain", "--method", "abdino", "--steps", "2", "--out-dir", str(tmp_path / "run"), *TINY]
    args[args.index("photos")] = str(folder)
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable image"):
        assert main([*args, "--dino-prototypes", "32"]) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["data"]["source"] == str(folder)


def test_pretrain_on_scenes_given_as_json(tmp_path):
    spec = '{"scenes": {"size": 48, "n_images": 12, "objects": [1, 2]}}'
    args = ["pretrain", "--method", "simclr", "--steps", "1", "--out-dir", str(tmp_path), *TINY]
    args[args.index("photos")] = spec
    assert main(args) == 0
    from agents.pretrain import build_sampler, read_run

    data, _, _ = read_run(tmp_path)
    sampler = build_sampler(data)
    assert len(sampler.pool) == 12 and tuple(sampler.pool.image_hw[0].tolist()) == (48.0, 48.0)
    args[args.index(spec)] = '{"photos": {}}'
    assert main(args) == 2


def test_ab_views_crops_reaches_the_sampler_of_ab_methods_only():
    from agents.pretrain import DataConfig, build_sampler

    data = DataConfig(source="photos", view_size=16)
    assert data.ab_views == "crops"  # the paper's default (docs/method.md)
    assert build_sampler(data, method="abdino").crop_views
    assert not build_sampler(data, method="dino").crop_views
    shared = DataConfig(source="photos", view_size=16, ab_views="shared")  # the ablation
    assert not build_sampler(shared, method="abdino").crop_views
    batch = build_sampler(data, method="absimclr").sample(2, 2)
    assert batch.crop_views is not None and batch.crop_views.shape == batch.views.shape
    assert build_sampler(data, method="abclip").sample(2, 2).crop_views is None  # not augmented
    with pytest.raises(ValueError, match="ab_views must be one of"):
        DataConfig(ab_views="plain")
    with pytest.raises(TypeError, match="augment must be None, True or False"):
        DataConfig(augment="no")


def test_missing_and_corrupt_files_give_clear_errors(tmp_path, capsys):
    assert main(["eval", "--ckpt", str(tmp_path / "nothing")]) == 2
    assert "no encoder, run directory or checkpoint" in capsys.readouterr().err
    bad = tmp_path / "enc.safetensors"
    bad.write_bytes(b"garbage")
    assert main(["eval", "--ckpt", str(bad)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["pretrain", "--method", "simclr", "--steps", "1", "--out-dir", str(run), *TINY]) == 0
    (run / "latest.pt").write_bytes(b"truncated")
    assert main(["export", "--ckpt", str(run), "--out", str(tmp_path / "e.safetensors")]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert main(["pretrain", "--scale", "0.5", "0.1", "--out-dir", str(tmp_path / "x"), *TINY]) == 2
    assert "scale must be" in capsys.readouterr().err


def test_a_corrupt_run_record_is_a_clear_error_and_loses_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["pretrain", "--method", "simclr", "--steps", "2", "--out-dir", str(run), *TINY]
    assert main(args) == 0
    ckpt = (run / "latest.pt").read_bytes()
    for corrupt in ('{"data": {"source": "pho', "[1, 2]", '{"data": {}, "system": 3, "train": {}}'):
        (run / "run.json").write_text(corrupt)
        # Resuming and reading the run both stop with an error naming the file; the checkpoint stays.
        assert main([*args[:4], "4", *args[5:]]) == 2
        err = capsys.readouterr().err
        assert "run.json" in err and "not" in err and "--out-dir" in err
        assert main(["eval", "--ckpt", str(run)]) == 2
        assert "run.json" in capsys.readouterr().err
        assert (run / "latest.pt").read_bytes() == ckpt
    # The record is checked before the images load: a missing source does not hide it.
    missing = [*args[:4], "4", *args[5:]]
    missing[missing.index("photos")] = str(tmp_path / "missing")
    assert main(missing) == 2 and "run.json" in capsys.readouterr().err
    # Deleting the bad record, as the error says, resumes from the checkpoint (step 2 -> 4).
    (run / "run.json").unlink()
    assert main([*args[:4], "4", *args[5:]]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 4 and steps == sorted(set(steps))


def _random_encoder(tmp_path):
    from agents.encoders import make_encoder

    torch.manual_seed(1)
    return save_encoder(make_encoder("cnn", width=8), tmp_path / "enc.safetensors")


def test_eval_ends_with_the_sentence_its_numbers_make(tmp_path, capsys, monkeypatch):
    import vpt_env.progress

    monkeypatch.setattr(vpt_env.progress, "INTERVAL_S", 1e-9)  # stderr is no terminal: a line per update
    out = tmp_path / "eval"
    args = ["eval", "--ckpt", str(_random_encoder(tmp_path)), "--source", "scenes", "--max-images", "60"]
    args += ["--task", "objects", "--view-size", "16", "--linear-epochs", "2", "--attentive-epochs", "1"]
    assert main([*args, "--name", "trained", "--out", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    record = json.loads((out / "eval.json").read_text())
    run, base = record["results"]["trained"], record["results"]["random init"]
    diffs = [100 * (run[p]["top1"] - base[p]["top1"]) for p in ("linear", "knn", "attentive")]
    sentence = (
        f"trained against random init (same architecture, seed 0), object-region top-1: linear "
        f"{diffs[0]:+.1f} points, kNN {diffs[1]:+.1f}, attention pooling {diffs[2]:+.1f}; one seed, "
        "differences of a few points are within seed-to-seed noise."
    )
    assert stdout.splitlines()[-2] == sentence and record["summary"] == sentence
    assert sentence in (out / "eval.md").read_text()
    # Progress went to stderr, one encoder after the other; stdout holds the table and the sentence.
    assert "probe" not in stdout.replace("attention pooling", "")
    for start in ("reading images: ", "rendering probe views: ", "trained: linear probe: 2/2 epochs"):
        assert any(line.startswith(start) for line in stderr.splitlines()), start
    assert "random init: attention-pooling probe: done" in stderr
    # --no-progress: nothing but the warnings on stderr.
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    assert all(line.startswith("vpt eval: warning:") for line in capsys.readouterr().err.splitlines())


def test_eval_on_a_source_too_small_warns_and_reports_probes_not_run(tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["eval", "--ckpt", str(_random_encoder(tmp_path)), "--source", "photos", "--max-images", "0"]
    args += ["--view-size", "16"]
    assert main([*args, "--linear-epochs", "2", "--attentive-epochs", "1", "--out", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    warnings = [line for line in stderr.splitlines() if line.startswith("vpt eval: warning:")]
    assert len(warnings) == 1  # the same split for both encoders: said once
    assert "8 train and 2 test examples of 10 classes" in warnings[0] and "no probe runs" in warnings[0]
    record = json.loads((out / "eval.json").read_text())
    assert record["warnings"] == [warnings[0].removeprefix("vpt eval: warning: ")]
    for row in record["results"].values():
        assert set(row["not_run"]) == {"linear", "knn", "attentive"}
        assert not {"linear", "knn", "attentive"} & set(row)
    assert "| enc | not run | not run | not run |" in stdout
    assert "no probe ran on both, nothing to compare." in stdout
