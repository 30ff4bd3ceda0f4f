#!/usr/bin/env python3
"""Checks the deployment files under deploy/ (and the Dockerfile) against each other, the docs and
the herald binary, in a few seconds, with no container daemon and no root:

- deploy/herald.toml lists exactly the keys of docs/configuration.md's table, each with the
  documented default, and Herald accepts it both as shipped and with every default uncommented;
- deploy/systemd/herald.service carries the hardening and signal settings docs/deploy.md
  promises, stops later than Herald's drain, and `systemd-analyze verify` passes on it (on a copy
  whose ExecStart is the binary just built: /usr/bin/herald exists only once the .deb is installed),
  and `systemd-analyze security` scores its sandbox at 2.0 or better;
- the .deb's file list ([package.metadata.deb] in api/Cargo.toml): every asset is in the tree and
  lands where the unit and the docs expect it (the .deb itself needs a release build, so it is not
  built here; docs/deploy.md has the command);
- deploy/sysctl/60-herald.conf names kernel settings this kernel has;
- the Dockerfile: two stages, a non-root user, a HEALTHCHECK on /readyz;
- deploy/compose/compose.yaml: its services, every file it mounts, the HERALD_* variables it sets
  (each a documented key), the nginx lines it rewrites, Prometheus' targets and Grafana's
  provisioning; `docker compose config -q` too where the compose plugin is installed, and the
  image built and its configuration checked where a container daemon answers.

Usage: scripts/check-deploy.py target/debug/herald  (scripts/test runs it after the build).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# Files compose.yaml mounts whose absence is reported rather than failed: none now (the dashboard
# and the alerts have landed); kept for a mount added ahead of its file.
PENDING: set[str] = set()

# systemd-analyze security --threshold, in tenths of its 0-10 exposure score.
SECURITY_THRESHOLD = 20

failures = []


def fail(message):
    failures.append(message)
    print(f"  FAIL {message}")


def ok(message):
    print(f"  ok   {message}")


# --- docs/configuration.md ----------------------------------------------------------------------


def documented_keys():
    """The main table of docs/configuration.md: {key: default cell}, in the table's order."""
    text = (ROOT / "docs/configuration.md").read_text()
    keys = {}
    in_table = False
    for line in text.splitlines():
        if line.startswith("| key | default |"):
            in_table = True
            continue
        if in_table and line.startswith("|---"):
            continue
        if in_table and not line.startswith("|"):
            break
        if in_table:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            keys[cells[0].strip("`")] = cells[1]
    if len(keys) < 50:
        sys.exit(f"check-deploy: found only {len(keys)} keys in docs/configuration.md's table")
    return keys


def literal_default(cell):
    """The TOML value of a default cell written as one backticked literal, or None (none, empty,
    `–`, prose): `127.0.0.1:8080` is a string, `16` a number, `["a"]` a list."""
    match = re.fullmatch(r"`([^`]*)`", cell)
    if not match:
        return None
    text = match.group(1)
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def env_name(key):
    return "HERALD_" + key.replace(".", "_").upper()


# --- deploy/herald.toml ---------------------------------------------------------------------------


def commented_settings(path):
    """The `#key = value` lines of a fully commented TOML file, as {dotted key: value text},
    sections taken from `#[section]` lines; the `#[[sites]]` example is left out."""
    settings = {}
    section = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("#[["):
            section = "[[sites]]"
        elif match := re.fullmatch(r"#\[([a-z_]+)\]", line):
            section = match.group(1)
        elif match := re.fullmatch(r"#([a-z_]+) = (.+)", line):
            if section == "[[sites]]":
                continue
            key = f"{section}.{match.group(1)}" if section else match.group(1)
            if key in settings:
                fail(f"{path.name}:{number}: {key} listed twice")
            settings[key] = match.group(2)
        elif line and not line.startswith("# ") and line != "#":
            fail(f"{path.name}:{number}: neither `#key = value`, `#[section]` nor `# ` prose: {line}")
    return settings


def check_config_file(herald, docs):
    print("== deploy/herald.toml against docs/configuration.md and the binary")
    path = ROOT / "deploy/herald.toml"
    settings = commented_settings(path)
    missing = [key for key in docs if key not in settings]
    extra = [key for key in settings if key not in docs]
    if missing:
        fail(f"herald.toml lacks documented keys: {', '.join(missing)}")
    if extra:
        fail(f"herald.toml has keys docs/configuration.md does not document: {', '.join(extra)}")
    if not missing and not extra:
        ok(f"the same {len(docs)} keys as docs/configuration.md")

    defaults = {}
    for key, cell in docs.items():
        want = literal_default(cell)
        if want is None or key not in settings:
            continue
        got = tomllib.loads(f"v = {settings[key]}")["v"]
        if got != want:
            fail(f"herald.toml: {key} = {settings[key]}, but the documented default is {cell}")
        defaults[key] = settings[key]
    ok(f"{len(defaults)} defaults as documented (the other keys have none: examples)")

    env = {name: value for name, value in os.environ.items() if not name.startswith("HERALD_")}
    run = subprocess.run(
        [herald, "--check-config", "--config", str(path)], env=env, capture_output=True, text=True
    )
    if run.returncode != 0:
        fail(f"herald --check-config on herald.toml as shipped: exit {run.returncode}: {run.stderr.strip()}")
    else:
        ok("herald --check-config accepts it as shipped")

    # Every default uncommented: proves each written value is one Herald takes for that key.
    sections = {}
    for key, value in defaults.items():
        section, _, name = key.rpartition(".")
        sections.setdefault(section, []).append(f"{name} = {value}")
    text = "\n".join(sections.pop("", [])) + "\n"
    for section, lines in sections.items():
        text += f"\n[{section}]\n" + "\n".join(lines) + "\n"
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as uncommented:
        uncommented.write(text)
        uncommented.flush()
        run = subprocess.run(
            [herald, "--check-config", "--config", uncommented.name],
            env=env,
            capture_output=True,
            text=True,
        )
    if run.returncode != 0:
        fail(f"herald --check-config with every default uncommented: exit {run.returncode}: {run.stderr.strip()}")
    else:
        ok("herald --check-config accepts every default uncommented")


# --- the .deb -----------------------------------------------------------------------------------


def deb_metadata():
    manifest = tomllib.loads((ROOT / "api/Cargo.toml").read_text())
    return manifest["package"]["metadata"]["deb"]


def check_deb(deb):
    print("== the .deb's contents ([package.metadata.deb] in api/Cargo.toml)")
    before = len(failures)
    installed = {}
    for source, destination, mode in deb["assets"]:
        target = destination + Path(source).name if destination.endswith("/") else destination
        installed[target] = mode
        if source == "target/release/herald":
            continue
        if not (ROOT / "api" / source).resolve().is_file():
            fail(f"asset {source} (to {destination}) is not in the tree")
    wanted = {
        "usr/bin/herald": "755",
        "etc/herald/herald.toml": "644",
        "usr/lib/sysctl.d/60-herald.conf": "644",
    }
    for path, mode in wanted.items():
        if installed.get(path) != mode:
            fail(f"the .deb must install /{path} with mode {mode}; assets give {installed.get(path)}")
    if "/etc/herald/herald.toml" not in deb.get("conf-files", []):
        fail("/etc/herald/herald.toml must be a conffile (an upgrade keeps the operator's edits)")
    units = deb["systemd-units"]
    unit_dir = (ROOT / "api" / units["unit-scripts"]).resolve()
    if not (unit_dir / f"{units['unit-name']}.service").is_file():
        fail(f"systemd-units: no {units['unit-name']}.service in {unit_dir}")
    postinst = (ROOT / "api" / deb["maintainer-scripts"]).resolve() / "postinst"
    if not os.access(postinst, os.X_OK):
        fail(f"{postinst} is missing or not executable")
    elif "#DEBHELPER#" not in postinst.read_text():
        fail("postinst lacks #DEBHELPER#, where cargo-deb puts the unit's enable snippet")
    elif subprocess.run(["sh", "-n", str(postinst)]).returncode != 0:
        fail("postinst is not valid sh")
    if len(failures) == before:
        ok(f"{len(installed)} files, each in the tree (but the release binary), where the unit expects them")
    return installed


# --- systemd ------------------------------------------------------------------------------------


def unit_settings(text):
    settings = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def seconds(value):
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    if not match:
        fail(f"cannot read a duration from {value!r}")
        return 0
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def check_unit(herald, docs, installed):
    print("== deploy/systemd/herald.service")
    path = ROOT / "deploy/systemd/herald.service"
    text = path.read_text()
    settings = unit_settings(text)
    required = {
        "DynamicUser": "yes",
        "LimitNOFILE": "1048576",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "KillSignal": "SIGTERM",
        "Restart": "on-failure",
    }
    for key, value in required.items():
        if settings.get(key) != [value]:
            fail(f"herald.service: want {key}={value}, found {settings.get(key)}")
    # Herald drains for readiness_delay_ms, then up to grace_secs: systemd must not SIGKILL first.
    drain = literal_default(docs["shutdown.grace_secs"]) + literal_default(
        docs["shutdown.readiness_delay_ms"]
    ) / 1000
    stop = seconds(settings.get("TimeoutStopSec", ["0"])[0])
    if stop <= drain:
        fail(f"TimeoutStopSec={stop} s is not above Herald's drain ({drain} s: readiness delay + grace)")
    else:
        ok(f"TimeoutStopSec={stop} s > the drain's {drain:g} s; hardening and signals as documented")
    # The group postinst creates is the one the unit reads its configuration with.
    postinst = (ROOT / "deploy/debian/postinst").read_text()
    for group in settings.get("SupplementaryGroups", []):
        if f"addgroup --system --quiet {group}" not in postinst:
            fail(f"SupplementaryGroups={group}, but deploy/debian/postinst does not create it")
    binaries = {word for line in settings.get("ExecStart", []) for word in line.split()[:1]}
    if binaries != {"/" + path for path in installed if path.endswith("bin/herald")}:
        fail(f"ExecStart runs {binaries}, not the binary the .deb installs")

    verify = shutil.which("systemd-analyze")
    if verify is None:
        fail("systemd-analyze not found (Debian's systemd package; scripts/install-test-deps.sh)")
        return
    # verify needs ExecStart's binary to exist: a copy pointed at the one just built.
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "herald.service"
        copy.write_text(text.replace("/usr/bin/herald", str(Path(herald).resolve())))
        run = subprocess.run([verify, "verify", str(copy)], capture_output=True, text=True)
        # The sandbox must not loosen unnoticed: systemd's own exposure score (0 best, 10 worst;
        # 1.6 when this was written) kept at 2.0 or below.
        security = subprocess.run(
            [verify, "security", "--offline=yes", f"--threshold={SECURITY_THRESHOLD}", str(copy)],
            capture_output=True,
            text=True,
        )
    # verify exits 0 on unknown keys and bad values, which it only prints: any output fails.
    output = (run.stdout + run.stderr).strip()
    if run.returncode != 0 or output:
        fail(f"systemd-analyze verify: exit {run.returncode}: {output}")
    else:
        ok("systemd-analyze verify: clean")
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
    if security.returncode != 0 or not score:
        found = score.group(1) if score else security.stderr.strip()
        fail(f"systemd-analyze security: exposure {found}, above {SECURITY_THRESHOLD / 10}")
    else:
        ok(f"systemd-analyze security: exposure {score.group(1)} (at most {SECURITY_THRESHOLD / 10})")


def check_sysctl():
    print("== deploy/sysctl/60-herald.conf")
    count = 0
    for line in (ROOT / "deploy/sysctl/60-herald.conf").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = (part.strip() for part in line.partition("="))
        count += 1
        if not Path("/proc/sys", key.replace(".", "/")).exists():
            fail(f"sysctl {key} does not exist on this kernel")
        if not value.isdigit():
            fail(f"sysctl {key} = {value!r} is not a number")
    ok(f"{count} settings, each known to this kernel")


# --- container ----------------------------------------------------------------------------------


def check_dockerfile():
    print("== Dockerfile")
    before = len(failures)
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    if len(stages) < 2:
        fail(f"Dockerfile: want a build and a runtime stage, found {stages}")
    runtime = text[text.rindex("\nFROM ") :]
    user = re.findall(r"^USER (\S+)", runtime, re.M)
    if not user or user[-1].split(":")[0] in ("root", "0"):
        fail(f"Dockerfile: the runtime stage must run as a non-root USER, found {user}")
    if not re.search(r"^HEALTHCHECK .*\n?.*/readyz", runtime, re.M):
        fail("Dockerfile: no HEALTHCHECK on /readyz")
    if len(failures) == before:
        ok(f"stages {' → '.join(stages)}, USER {user[-1]}, HEALTHCHECK on /readyz")


def check_compose(docs):
    print("== deploy/compose/compose.yaml")
    folder = ROOT / "deploy/compose"
    compose = yaml.safe_load((folder / "compose.yaml").read_text())
    services = compose["services"]
    want = {"redis", "herald1", "herald2", "herald3", "nginx", "prometheus", "grafana"}
    if set(services) != want:
        fail(f"services {sorted(services)}, want {sorted(want)}")
        return
    documented = {env_name(key) for key in docs}
    nodes = ["herald1", "herald2", "herald3"]
    for name in nodes:
        environment = services[name]["environment"]
        unknown = [var for var in environment if var not in documented]
        if unknown:
            fail(f"{name}: {unknown} are no documented key's variable (Herald would exit 64)")
        if environment.get("HERALD_ENGINE") != "redis":
            fail(f"{name}: HERALD_ENGINE must be redis, so the three nodes share channels")
        if not environment.get("HERALD_REDIS_URL", "").startswith("redis://redis:"):
            fail(f"{name}: HERALD_REDIS_URL must name the redis service")

    mounts = 0
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                continue
            mounts += 1
            path = (folder / source).resolve()
            relative = str(path.relative_to(ROOT))
            if path.exists():
                try:
                    if path.suffix in (".yml", ".yaml"):
                        yaml.safe_load(path.read_text())
                    elif path.suffix == ".json":
                        json.loads(path.read_text())
                except (yaml.YAMLError, json.JSONDecodeError) as error:
                    fail(f"{name} mounts {relative}, which does not parse: {error}")
            elif relative in PENDING:
                print(f"  note {name} mounts {relative}, not in this tree yet (issue 16, dashboards and alerts)")
            else:
                fail(f"{name} mounts {source}, which does not exist")
    ok(f"{mounts} mounted files and folders checked, {len(nodes)} nodes' variables documented")

    # The nginx command rewrites deploy/nginx/herald.conf's node lines: each must be there, or
    # sed would leave 127.0.0.1 in and nginx would balance onto nothing.
    nginx_conf = (ROOT / "deploy/nginx/herald.conf").read_text()
    command = " ".join(services["nginx"]["command"])
    for old, new in re.findall(r"s\|(server [^|]+;)\|(server [^|]+;)\|", command):
        if old not in nginx_conf:
            fail(f"nginx: deploy/nginx/herald.conf has no line `{old}` to rewrite")
        if new.split()[1].split(":")[0] not in services:
            fail(f"nginx: `{new}` names no service")
    if command.count("server herald") != len(nodes):
        fail("nginx: the command must point one upstream line at each node")

    prometheus = yaml.safe_load((folder / "prometheus/prometheus.yml").read_text())
    targets = {
        target
        for job in prometheus["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    metrics_port = services["herald1"]["environment"]["HERALD_METRICS_LISTEN"].rsplit(":", 1)[1]
    if targets != {f"{node}:{metrics_port}" for node in nodes}:
        fail(f"prometheus.yml scrapes {sorted(targets)}, not each node's metrics port {metrics_port}")
    mounted = {v.split(":")[1] for v in services["prometheus"]["volumes"]}
    for rules in prometheus.get("rule_files", []):
        if rules not in mounted:
            fail(f"prometheus.yml reads {rules}, which compose.yaml does not mount")
    providers = yaml.safe_load((folder / "grafana/provisioning/dashboards/herald.yml").read_text())
    grafana_mounts = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    for provider in providers["providers"]:
        if not any(m.startswith(provider["options"]["path"] + "/") for m in grafana_mounts):
            fail(f"grafana: no dashboard mounted under {provider['options']['path']}")
    ok("nginx's node lines, Prometheus' targets and rules, Grafana's dashboard folder agree")

    docker = shutil.which("docker")
    env = dict(os.environ, HERALD_PUBLISH_SECRET="check-deploy-secret-of-32-bytes!")
    has_compose = docker and subprocess.run(
        [docker, "compose", "version"], capture_output=True
    ).returncode == 0
    if has_compose:
        run = subprocess.run(
            [docker, "compose", "-f", str(folder / "compose.yaml"), "config", "-q"],
            env=env,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            fail(f"docker compose config -q: {run.stderr.strip()}")
        else:
            ok("docker compose config -q")
    else:
        print("  skip docker compose config -q: the compose plugin is not installed (checked above instead)")

    if docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        # A release build inside the image: minutes, and only where a daemon answers.
        run = subprocess.run([docker, "build", "-q", "-t", "herald:check-deploy", str(ROOT)])
        if run.returncode != 0:
            fail("docker build failed")
            return
        run = subprocess.run(
            [docker, "run", "--rm", "-e", "HERALD_PUBLISH_SECRET", "herald:check-deploy", "--check-config"],
            env=env,
        )
        if run.returncode != 0:
            fail("the image's herald --check-config failed")
        else:
            ok("docker build, and the image's configuration is valid")
    else:
        print("  skip docker build: no container daemon answers here (docs/deploy.md has the command)")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: scripts/check-deploy.py path/to/herald")
    herald = sys.argv[1]
    docs = documented_keys()
    check_config_file(herald, docs)
    installed = check_deb(deb_metadata())
    check_unit(herald, docs, installed)
    check_sysctl()
    check_dockerfile()
    check_compose(docs)
    if failures:
        sys.exit(f"check-deploy: {len(failures)} failure(s)")
    print("check-deploy: all deployment files agree")


if __name__ == "__main__":
    main()
