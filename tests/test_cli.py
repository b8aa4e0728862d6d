"""The `lyricdist` command itself: help for every command, one-line errors, missing extras named."""

from __future__ import annotations

import importlib.util

import pytest
from jsonargparse.typing import PositiveInt

from conftest import CONFIGS
from lyricdist import cli, options


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_help_lists_its_options_with_defaults(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lyricdist {command}")
    if command != "similarity":  # a command of subcommands: its help lists them
        assert "default:" in out


def test_a_missing_extra_is_named_in_one_line(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lyricsgenius" else real(name, *a))
    assert cli.main(["scrape", "--help"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "lyricsgenius" in err and "pip install 'lyricdist[scrape]'" in err


def test_require_names_the_extra():
    from lyricdist.errors import LyricdistError

    with pytest.raises(LyricdistError, match=r"plotting needs no_such_module_xyz.*pip install 'lyricdist\[viz\]'"):
        options.require("no_such_module_xyz", "viz", "plotting")


def test_a_typed_function_is_a_command_with_range_checks_from_its_types(monkeypatch, capsys):
    calls = []

    def greet(name: str, times: PositiveInt = 1, loud: bool = False) -> int:
        """Say hello.

        Args:
            name: who to greet
            times: how many times
            loud: shout
        """
        calls.append((name, times, loud))
        return 0

    import types

    module = types.ModuleType("lyricdist_fake_cmd")
    module.greet = greet
    monkeypatch.setitem(__import__("sys").modules, "lyricdist_fake_cmd", module)
    monkeypatch.setitem(cli.COMMANDS, "greet", ("lyricdist_fake_cmd:greet", "say hello"))
    assert cli.main(["greet", "Ann", "--times", "2", "--loud", "true"]) == 0
    assert calls == [("Ann", 2, True)]
    with pytest.raises(SystemExit):
        cli.main(["greet", "--help"])
    out = capsys.readouterr().out
    assert "how many times" in out and "default: 1" in out
    assert cli.main(["greet", "Ann", "--times", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "times" in err


@pytest.mark.parametrize("argv, message", [
    (["sample", "ckpt", "--temperature", "[0.5, 0]"], 'Parser key "temperature"'),
    (["sample", "ckpt", "--alpha", "2"], 'Parser key "alpha": Not of type ClosedUnitInterval: 2 does not conform'),
    (["collab", "a", "b", "--mode", "duet"], "Expected a typing.Literal['alternate', 'blend', 'condition']. Got value: duet"),
    (["prepare", "demo", "--out", "x", "--script", "latin"], 'Parser key "script"'),
    (["prepare", "demo"], "the following arguments are required: out"),
    (["demo", "--max_steps", "0"], 'Parser key "max_steps"'),
    (["train", "--config", "configs/tiny.yaml", "--train.lr", "0"], 'Parser key "train.lr"'),
])
def test_argument_errors_are_jsonargparses_own_in_one_line(argv, message, capsys, tmp_path, monkeypatch):
    """jsonargparse parses and checks every command's options (ranges from the types): its message, on one line."""
    monkeypatch.chdir(tmp_path)
    argv = [str(CONFIGS / "tiny.yaml") if a == "configs/tiny.yaml" else a for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, present, absent", [
    (["prepare", "--help"], ["hf:USER/DATASET[@REVISION][:SPLIT]"], []),
    (["similarity", "eval", "--help"], ["usage: lyricdist similarity eval "], ["__main__"]),
    (["similarity", "embed", "--help"], ["usage: lyricdist similarity embed ", "--tracking.project"],
     ["log_checkpoints"]),  # embed logs no checkpoints
])
def test_help_says_what_the_command_takes(argv, present, absent, capsys):
    with pytest.raises(SystemExit):
        cli.main(argv)
    out = " ".join(capsys.readouterr().out.split())  # help wraps lines
    assert all(p in out for p in present) and not any(a in out for a in absent), out


def test_accelerates_gradient_accumulation_is_not_ignored_silently(monkeypatch, capsys, demo_corpus, tmp_path):
    """`accelerate launch --gradient_accumulation_steps 4` sets this variable; lyricdist's loop accumulates with
    train.grad_accum, so it says so instead of dropping the setting without a word."""
    from conftest import tiny_config
    from lyricdist.run import make_accelerator

    cfg = tiny_config(demo_corpus, tmp_path)
    make_accelerator(cfg)
    assert "gradient_accumulation_steps" not in capsys.readouterr().out
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "4")
    make_accelerator(cfg)
    out = capsys.readouterr().out
    assert "gradient_accumulation_steps=4 is ignored" in out and "--train.grad_accum 4" in out, out
