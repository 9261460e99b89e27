"""The Docker packaging: docker/Dockerfile, .dockerignore and docker/compose.yaml.

The Dockerfile checks are plain text parsing and always run: every package folder
that pyproject.toml maps with ``[tool.setuptools] package-dir`` must be copied into
the image, so adding a package folder without updating the Dockerfile fails here
instead of as an ImportError inside a container.

The compose checks ask ``docker compose config`` (no engine needed) for the fully
interpolated model and check the wiring between services. They skip when the
``docker`` client or its ``compose`` v2 plugin is missing.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker" / "compose.yaml"

APP_SERVICES = ("worker", "stations", "alerts")
ALL_SERVICES = {"kafka", "surrealdb", *APP_SERVICES}


# --------------------------------------------------------------------------- #
# Dockerfile parsing
# --------------------------------------------------------------------------- #


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def _package_dirs() -> dict[str, str]:
    """``{import package: source folder}`` from ``[tool.setuptools] package-dir``."""
    package_dir = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert package_dir, "pyproject.toml [tool.setuptools] package-dir is empty"
    return dict(package_dir)


def _instructions(text: str) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` per instruction; joins ``\\`` continuations, drops comments."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, args = full.partition(" ")
            out.append((keyword.upper(), args.strip()))
    if pending.strip():
        keyword, _, args = pending.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def _split_args(args: str) -> list[str]:
    """Arguments of an instruction in JSON (exec) form or shell form."""
    if args.startswith("["):
        value = json.loads(args)
        assert isinstance(value, list)
        return [str(v) for v in value]
    return shlex.split(args)


def _leading_flags(args: str) -> tuple[list[str], str]:
    """Split ``--flag=value`` options off the front of an instruction's arguments."""
    flags: list[str] = []
    rest = args.strip()
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        flags.append(flag)
        rest = rest.strip()
    return flags, rest


def _base_image(from_args: str) -> str:
    return _leading_flags(from_args)[1].split()[0]


def _norm(path: str) -> str:
    path = path.strip()
    while path.startswith("./"):
        path = path[2:]
    return path.rstrip("/") or "."


def _context_copies(instructions: list[tuple[str, str]]) -> set[str]:
    """Source paths that COPY/ADD take from the build context (not ``--from`` a stage)."""
    sources: set[str] = set()
    for keyword, args in instructions:
        if keyword not in ("COPY", "ADD"):
            continue
        flags, rest = _leading_flags(args)
        if any(f.startswith("--from") for f in flags):
            continue
        paths = _split_args(rest)
        assert len(paths) >= 2, f"{keyword} {args!r} needs a source and a destination"
        sources.update(_norm(p) for p in paths[:-1])
    return sources


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    assert DOCKERFILE.is_file(), f"missing {DOCKERFILE}"
    return _instructions(DOCKERFILE.read_text(encoding="utf-8"))


def test_instruction_parser_joins_continuations() -> None:
    text = 'FROM x AS b\n# c\nRUN a \\\n  # inside\n  && b\nCOPY --chown=1:1 ["a b", "c/"]\n'
    assert _instructions(text) == [
        ("FROM", "x AS b"),
        ("RUN", "a && b"),
        ("COPY", '--chown=1:1 ["a b", "c/"]'),
    ]
    assert _context_copies(_instructions(text)) == {"a b"}
    copies = _context_copies(_instructions("COPY --from=builder /x /y\nCOPY ./a/ b c/\n"))
    assert copies == {"a", "b"}
    assert _base_image("--platform=$BUILDPLATFORM python:3.11-slim AS builder") == (
        "python:3.11-slim"
    )


def test_dockerfile_copies_every_package_folder(dockerfile: list[tuple[str, str]]) -> None:
    copied = _context_copies(dockerfile)
    if "." in copied:
        return  # the whole context is copied; nothing can be forgotten
    missing = {
        package: folder
        for package, folder in _package_dirs().items()
        if _norm(folder) not in copied
    }
    assert not missing, (
        f"docker/Dockerfile does not COPY these package-dir folders from pyproject.toml: "
        f"{missing}; add a `COPY <folder>/ <folder>/` line for each"
    )


def test_dockerfile_copies_build_metadata(dockerfile: list[tuple[str, str]]) -> None:
    copied = _context_copies(dockerfile)
    readme = _pyproject()["project"].get("readme")
    if isinstance(readme, dict):
        readme = readme.get("file")
    needed = {"pyproject.toml"} | ({_norm(readme)} if isinstance(readme, str) else set())
    assert "." in copied or needed <= copied, f"not copied into the image: {needed - copied}"


def test_dockerfile_installs_the_package(dockerfile: list[tuple[str, str]]) -> None:
    installs: list[list[str]] = []
    for keyword, args in dockerfile:
        if keyword != "RUN":
            continue
        words = shlex.split(args, posix=True)
        for i in range(len(words) - 1):
            if words[i].endswith("pip") and words[i + 1] == "install":
                tail: list[str] = []
                for w in words[i + 2 :]:
                    if w in ("&&", ";", "||", "|"):
                        break
                    tail.append(w)
                installs.append(tail)
    local = [t for t in installs if any(_norm(w.split("[")[0]) == "." for w in t)]
    assert local, f"no `pip install .` in docker/Dockerfile (pip installs seen: {installs})"
    for tail in local:
        assert not {"-e", "--editable"} & set(tail), (
            "the image must not use an editable install: the source tree is not in the "
            "runtime stage"
        )


def test_dockerfile_runtime_stage(dockerfile: list[tuple[str, str]]) -> None:
    stages = _stages(dockerfile)
    assert len(stages) >= 2, "expected a multi-stage build (builder + runtime)"
    bases = [_base_image(stage[0][1]) for stage in stages]
    assert all(b == "python:3.11-slim" for b in bases if b.startswith("python:")), bases
    runtime = stages[-1]
    assert _base_image(runtime[0][1]) == "python:3.11-slim"

    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"runtime USER is {users[-1]!r}"

    scripts = _pyproject()["project"]["scripts"]
    entrypoints = [_split_args(args) for keyword, args in runtime if keyword == "ENTRYPOINT"]
    assert entrypoints and entrypoints[-1] == ["convergence"]
    assert "convergence" in scripts, "ENTRYPOINT names a console script pyproject does not define"
    cmds = [_split_args(args) for keyword, args in runtime if keyword == "CMD"]
    assert cmds and cmds[-1] == ["run"]


def _ignore_patterns() -> list[str]:
    if not DOCKERIGNORE.is_file():
        return []
    patterns = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            patterns.append(line.lstrip("/").rstrip("/"))
    return patterns


def test_dockerignore_keeps_build_inputs() -> None:
    patterns = _ignore_patterns()
    assert {".venv", ".git"} <= set(patterns), ".dockerignore should exclude .venv and .git"
    readme = _pyproject()["project"].get("readme")
    inputs = ["pyproject.toml", *[_norm(f) for f in _package_dirs().values()]]
    if isinstance(readme, str):
        inputs.append(readme)
    for path in inputs:
        for pat in patterns:
            candidates = {pat, pat.removeprefix("**/")}
            assert not any(fnmatch.fnmatchcase(path, c) for c in candidates), (
                f".dockerignore pattern {pat!r} excludes {path!r}, which the image needs"
            )


# --------------------------------------------------------------------------- #
# docker compose config
# --------------------------------------------------------------------------- #


@cache
def _compose_tool() -> tuple[list[str], bool] | str:
    """``(argv prefix, speaks JSON)`` of the Compose CLI to use, or why there is none.

    The Compose v2 plugin (``docker compose``) is preferred; Debian's docker-compose v1
    (``apt-get install docker-compose``, what CI installs) validates the same file and
    prints YAML.
    """
    docker = shutil.which("docker")
    if docker is not None:
        try:
            proc = subprocess.run(
                [docker, "compose", "version"], capture_output=True, text=True, timeout=60
            )
            if proc.returncode == 0:
                return [docker, "compose"], True
        except (OSError, subprocess.TimeoutExpired):
            pass
    v1 = shutil.which("docker-compose")
    if v1 is not None:
        return [v1], False
    return (
        "neither `docker compose` (the Compose v2 plugin) nor `docker-compose` (v1) is "
        "installed; install the docker-compose-plugin package, or Debian's docker-compose"
    )


def _v1_as_v2(model: dict[str, Any], args: tuple[str, ...]) -> dict[str, Any]:
    """Normalise v1's ``config`` to v2's model: commands as lists, long-syntax volumes and
    ports, inactive profiles out.

    v1 validates the same file but prints string commands as written and lists services
    of every profile; v2 (what users run) splits commands and keeps only enabled profiles.
    """
    enabled = {args[i + 1] for i, a in enumerate(args[:-1]) if a == "--profile"}
    services = {}
    for name, svc in model.get("services", {}).items():
        profiles = svc.get("profiles") or []
        if profiles and not enabled & set(profiles):
            continue
        if isinstance(svc.get("command"), str):
            svc["command"] = shlex.split(svc["command"])
        vols = []
        for v in svc.get("volumes") or []:
            if isinstance(v, str):  # v1 prints the short syntax: source:target[:mode]
                source, target = v.split(":")[:2]
                kind = "bind" if source.startswith(("/", ".")) else "volume"
                v = {"type": kind, "source": source, "target": target}
            vols.append(v)
        if vols:
            svc["volumes"] = vols
        ports = []
        for p in svc.get("ports") or []:
            if isinstance(p, str):  # v1: [host_ip:]published:target[/proto]
                parts = p.split("/")[0].split(":")
                p = {"target": int(parts[-1]), "published": parts[-2] if len(parts) > 1 else None,
                     "host_ip": parts[0] if len(parts) > 2 else None}
            ports.append(p)
        if ports:
            svc["ports"] = ports
        services[name] = svc
    return {**model, "services": services}


def _compose_unavailable() -> str | None:
    """Why no Compose CLI can be used here, or None when one can."""
    tool = _compose_tool()
    return tool if isinstance(tool, str) else None


def _compose_config(tmp: Path, *args: str, **env: str) -> dict[str, Any]:
    """``docker compose config --format json`` with no outside influence but ``env``."""
    tool = _compose_tool()
    if isinstance(tool, str):
        pytest.skip(tool)
    argv, speaks_json = tool
    # Drop the caller's CONVERGENCE_*/COMPOSE_* settings and any docker/.env so the
    # defaults written in compose.yaml are what gets checked.
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONVERGENCE_", "COMPOSE_", "SURREALDB_"))
    }
    empty_env_file = tmp / "empty.env"
    empty_env_file.write_text("", encoding="utf-8")
    fmt = ["--format", "json"] if speaks_json else []
    proc = subprocess.run(
        [*argv, "--env-file", str(empty_env_file), "-f", str(COMPOSE_FILE), *args, "config", *fmt],
        capture_output=True, text=True, timeout=120, env={**clean, **env}, cwd=ROOT,
    )
    assert proc.returncode == 0, f"{' '.join(argv)} config failed:\n{proc.stderr}"
    model = json.loads(proc.stdout) if speaks_json else _v1_as_v2(yaml.safe_load(proc.stdout), args)
    assert isinstance(model, dict)
    return model


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The interpolated model with every profile enabled."""
    return _compose_config(tmp_path_factory.mktemp("compose"), "--profile", "tools")


def _services(model: dict[str, Any]) -> dict[str, Any]:
    services = model["services"]
    assert isinstance(services, dict)
    return services


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "expected environment as a mapping in the JSON model"
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def _advertised_plaintext(compose: dict[str, Any]) -> str:
    """``host:port`` of kafka's PLAINTEXT advertised listener."""
    listeners = _env(_services(compose)["kafka"])["KAFKA_ADVERTISED_LISTENERS"].split(",")
    plain = [x for x in listeners if x.startswith("PLAINTEXT://")]
    assert len(plain) == 1, listeners
    return plain[0].removeprefix("PLAINTEXT://")


def test_services(compose: dict[str, Any], tmp_path: Path) -> None:
    assert set(_services(compose)) == ALL_SERVICES
    assert _services(compose)["alerts"].get("profiles") == ["tools"]
    # Without the profile a plain `up` does not start the alert viewer.
    default = _compose_config(tmp_path)
    assert set(_services(default)) == ALL_SERVICES - {"alerts"}


def test_kafka_single_node_kraft(compose: dict[str, Any]) -> None:
    kafka = _services(compose)["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert set(env["KAFKA_LISTENERS"].split(",")) == {"PLAINTEXT://:9092", "CONTROLLER://:9093"}
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert len(voters) == 1
    voter_id, _, voter_addr = voters[0].partition("@")
    assert voter_id == env["KAFKA_NODE_ID"]
    assert voter_addr.rsplit(":", 1)[1] == "9093", "voter must be the CONTROLLER listener"
    assert _advertised_plaintext(compose) == "kafka:9092"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "true"
    test = kafka["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert test[1] == "/opt/kafka/bin/kafka-broker-api-versions.sh"
    assert _option(test, "--bootstrap-server") == "localhost:9092"


def test_surrealdb_server(compose: dict[str, Any]) -> None:
    db = _services(compose)["surrealdb"]
    assert db["image"] == "surrealdb/surrealdb:v2"
    cmd = db["command"]
    assert cmd[0] == "start"
    path = cmd[-1]
    assert path.startswith(("rocksdb:", "surrealkv:")), f"not a persistent engine: {path}"
    volume_targets = [v["target"] for v in db["volumes"] if v["type"] == "volume"]
    store = path.split(":", 1)[1].lstrip("/")
    assert any(store.startswith(t.lstrip("/") + "/") for t in volume_targets), (
        f"{path} is not on a named volume ({volume_targets})"
    )
    assert any(p["target"] == 8000 for p in db["ports"])
    test = db["healthcheck"]["test"]
    assert test[:3] == ["CMD", "/surreal", "is-ready"]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_share_the_image(compose: dict[str, Any], name: str) -> None:
    svc = _services(compose)[name]
    assert Path(svc["build"]["context"]).resolve() == ROOT
    assert svc["build"]["dockerfile"] == "docker/Dockerfile"
    assert svc["image"] == _services(compose)["worker"]["image"]
    assert svc.get("entrypoint") is None, "the image's ENTRYPOINT (convergence) must be kept"


def test_worker_wiring(compose: dict[str, Any]) -> None:
    services = _services(compose)
    worker = services["worker"]
    assert worker["command"] == ["cluster", "worker"]
    env = _env(worker)
    assert env["CONVERGENCE_KAFKA_BOOTSTRAP"] == _advertised_plaintext(compose)

    url = urlsplit(env["CONVERGENCE_DB"])
    assert url.scheme in ("ws", "wss")
    assert url.hostname == "surrealdb" and url.hostname in services
    surreal_cmd = services["surrealdb"]["command"]
    bind = _option(surreal_cmd, "--bind") if "--bind" in surreal_cmd else "0.0.0.0:8000"
    assert url.port == int(bind.rsplit(":", 1)[1])
    assert env["CONVERGENCE_DB_USER"] == _option(surreal_cmd, "--user")
    assert env["CONVERGENCE_DB_PASSWORD"] == _option(surreal_cmd, "--pass")
    # metrics reachable from the compose network, on one fixed port per container
    assert env["CONVERGENCE_METRICS_HOST"] == "0.0.0.0" and env["CONVERGENCE_METRICS_PORT"] == "9100"
    assert "ports" not in worker

    deps = worker["depends_on"]
    assert set(deps) == {"kafka", "surrealdb"}
    assert all(d["condition"] == "service_healthy" for d in deps.values())
    assert worker["deploy"]["replicas"] == 1


def test_stations_wiring(compose: dict[str, Any]) -> None:
    stations = _services(compose)["stations"]
    cmd = stations["command"]
    assert cmd[:2] == ["stations", "run"]
    assert _option(cmd, "--kafka") == _advertised_plaintext(compose)
    env = _env(stations)
    assert env["CONVERGENCE_STATIONS"] == "247"
    assert env["CONVERGENCE_SEED"].isdigit()
    assert stations["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_alerts_wiring(compose: dict[str, Any]) -> None:
    alerts = _services(compose)["alerts"]
    cmd = alerts["command"]
    assert cmd[:2] == ["alerts", "tail"]
    assert _option(cmd, "--kafka") == _advertised_plaintext(compose)
    assert alerts["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_knobs_are_interpolated(tmp_path: Path) -> None:
    model = _compose_config(
        tmp_path,
        CONVERGENCE_WORKERS="3",
        CONVERGENCE_STATIONS="12",
        CONVERGENCE_SEED="42",
        CONVERGENCE_KAFKA_VERSION="3.9.1",
        SURREALDB_VERSION="v2.3.10",
    )
    services = _services(model)
    assert services["worker"]["deploy"]["replicas"] == 3
    assert _env(services["stations"])["CONVERGENCE_STATIONS"] == "12"
    assert _env(services["worker"])["CONVERGENCE_SEED"] == "42"
    assert services["kafka"]["image"] == "apache/kafka:3.9.1"
    assert services["surrealdb"]["image"] == "surrealdb/surrealdb:v2.3.10"
    # Wiring is not taken from the caller's environment.
    leaked = _compose_config(tmp_path, CONVERGENCE_KAFKA_BOOTSTRAP="127.0.0.1:9092")
    assert _env(_services(leaked)["worker"])["CONVERGENCE_KAFKA_BOOTSTRAP"] == "kafka:9092"
