"""The README's set-up contract: its test command is .ci/run's, its torch pin satisfies pyproject's floor without
pyproject pinning a build, its examples need no files users lack, and its links to docs/ resolve."""

from __future__ import annotations

import re

from conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def _commands() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", README, re.S)


def test_the_readme_test_command_is_the_one_ci_runs():
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in _commands(), ci
    assert "git clone" in README[: README.index(ci)]  # the commands start from a clone, and say so


def test_the_torch_pin_of_the_commands_satisfies_pyproject_which_pins_no_build():
    from packaging.requirements import Requirement
    from packaging.version import Version

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    deps = {Requirement(d).name: Requirement(d) for d in
            tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    assert not any(s.operator == "==" or "+" in s.version for s in deps["torch"].specifier)  # no (CPU) build pinned
    pins = set(re.findall(r"pip install torch==([\d.]+)", README))
    assert pins and all(deps["torch"].specifier.contains(Version(v)) for v in pins), pins


def test_examples_use_no_path_users_do_not_have_and_links_resolve():
    assert "../shared" not in README
    for link in re.findall(r"\]\((docs/[^)]+)\)", README):
        assert (REPO / link).is_file(), link
