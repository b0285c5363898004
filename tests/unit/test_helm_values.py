"""The Helm chart, checked without `helm`: every `.Values` path a template uses exists in values.yaml, every
environment variable the chart sets is a real setting, and the documented defaults hold together."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "scheduler"
TEMPLATES = CHART / "templates"

# `.Values.a.b` (also `$.Values.a.b`); a path ends at the first character that cannot continue an identifier.
VALUES_PATH = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
# Environment variables the chart writes itself: keys of ConfigMap/Secret data, and `- name: X` env entries.
DATA_KEY = re.compile(r"^ {2}([A-Z][A-Z0-9_]*):", re.MULTILINE)
ENV_NAME = re.compile(r"^\s*- name: ([A-Z][A-Z0-9_]*)\s*$", re.MULTILINE)
SECRET_KEYS = {"POSTGRES_URL", "NATS_URL", "SECRETS_KEY"}
# Settings the chart deliberately does not expose: dev mode only (the root filesystem is read-only).
NOT_IN_CHART = {"DEV_DATA_DIR"}
# Chart defaults that deliberately differ from the application's: pods always log JSON.
CHART_OVERRIDES = {"LOG_FORMAT": "json"}


def setting_names() -> set[str]:
    return {f.name.upper() for f in fields(Settings)}


def is_setting(name: str) -> bool:
    return name in setting_names() or name.startswith("OTEL_")


def values() -> dict[str, Any]:
    loaded = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def template_texts() -> dict[str, str]:
    files = sorted(p for p in TEMPLATES.iterdir() if p.suffix in {".yaml", ".tpl", ".txt"})
    return {p.name: p.read_text() for p in files}


def referenced_paths(text: str) -> set[tuple[str, ...]]:
    return {tuple(m.group(1).lstrip(".").split(".")) for m in VALUES_PATH.finditer(text)}


def missing_paths(text: str, tree: dict[str, Any]) -> list[str]:
    """The `.Values` paths of ``text`` that do not exist in ``tree``. A key whose value is null still exists."""
    missing = []
    for path in sorted(referenced_paths(text)):
        node: Any = tree
        for part in path:
            if not isinstance(node, dict) or part not in node:
                missing.append(".".join(path))
                break
            node = node[part]
    return missing


def test_every_referenced_value_exists():
    tree = values()
    problems = [
        f"{name}: .Values.{path}" for name, text in template_texts().items() for path in missing_paths(text, tree)
    ]
    assert not problems, "referenced in a template but missing from values.yaml:\n" + "\n".join(problems)


def test_the_templates_reference_many_values():
    # Guards the regex: a pattern that silently matched nothing would make the test above pass vacuously.
    paths = set().union(*(referenced_paths(text) for text in template_texts().values()))
    assert len(paths) > 20, sorted(paths)
    assert ("api", "livenessProbe", "periodSeconds") in paths
    # From `{{- if and (eq .Values.config.AUTH_MODE "jwks") (not .Values.config.JWKS_URL) }}`: several per action.
    assert ("config", "JWKS_URL") in paths


def test_the_check_reports_a_missing_path():
    text = """
    replicas: {{ .Values.api.replicaCount }}
    {{- with .Values.worker.autoscaling }}minReplicas: {{ .minReplicas }}{{- end }}
    name: {{ $.Values.api.servcie.port | quote }}
    {{- if .Values.nosuch }}{{ end }}
    """
    assert missing_paths(text, values()) == ["api.servcie.port", "nosuch"]


def test_template_actions_are_balanced():
    # What `helm lint` would catch first, checked crudely: every action closes, every block has its end.
    for name, text in template_texts().items():
        assert text.count("{{") == text.count("}}"), f"{name}: unbalanced {{{{ }}}}"
        actions = re.findall(r"\{\{-?\s*(.*?)\s*-?\}\}", text, re.DOTALL)
        depth = 0
        for action in actions:
            keyword = action.split(maxsplit=1)[0] if action.split() else ""
            if keyword in {"if", "with", "range", "define", "block"}:
                depth += 1
            elif keyword == "end":
                depth -= 1
                assert depth >= 0, f"{name}: {{{{ end }}}} without a block"
        assert depth == 0, f"{name}: {depth} block(s) without {{{{ end }}}}"


def test_every_template_is_a_known_kind_of_file():
    for path in TEMPLATES.iterdir():
        assert path.suffix in {".yaml", ".tpl", ".txt"}, path.name


def test_config_keys_are_settings_and_exclude_what_the_chart_sets():
    config = values()["config"]
    assert config, "values.yaml has no config"
    unknown = sorted(name for name in config if not is_setting(name))
    assert not unknown, f"config keys that are not settings of shared/settings.py: {unknown}"
    # HOST and PORT come from the template (0.0.0.0, api.port); a duplicate key would be invalid YAML.
    assert not {"HOST", "PORT"} & set(config)
    # Secrets belong in the Secret, not in a ConfigMap.
    assert not SECRET_KEYS & set(config)


def test_config_values_are_strings_the_application_parses():
    config = values()["config"]
    # Helm prints an unquoted large number as 1.048576e+06: every value must be a string.
    not_strings = {name: value for name, value in config.items() if not isinstance(value, str)}
    assert not not_strings, f"quote these values: {not_strings}"
    settings = Settings.from_env({k: v for k, v in config.items() if not k.startswith("OTEL_")})
    defaults = Settings()
    for name, value in config.items():
        if not is_setting(name) or name.startswith("OTEL_") or value == "" or name in CHART_OVERRIDES:
            continue
        attribute = name.lower()
        assert getattr(settings, attribute) == getattr(defaults, attribute), (
            f"config.{name}={value!r} differs from the application's default {getattr(defaults, attribute)!r}; "
            "keep the chart in step (or list it in CHART_OVERRIDES)"
        )
    for name, value in CHART_OVERRIDES.items():
        assert config[name] == value


def test_env_names_in_templates_are_settings():
    texts = template_texts()
    data_keys = set()
    for name in ("configmap.yaml", "secret.yaml", "migrations-secret.yaml"):
        data_keys |= set(DATA_KEY.findall(texts[name]))
    env_names = set().union(*(ENV_NAME.findall(text) for text in texts.values()))
    assert {"HOST", "PORT"} <= data_keys
    assert data_keys >= SECRET_KEYS
    assert "POSTGRES_URL" in env_names
    unknown = sorted(name for name in data_keys | env_names if not is_setting(name))
    assert not unknown, f"environment variables the chart sets that are not settings: {unknown}"
    assert set(DATA_KEY.findall(texts["secret.yaml"])) == SECRET_KEYS
    for component in ("api", "worker"):
        assert not values()[component]["extraEnv"]


def test_every_setting_is_configurable_through_the_chart():
    # A new setting must reach the pods: add it to config (or the Secret) in values.yaml, or to NOT_IN_CHART.
    configurable = set(values()["config"]) | {"HOST", "PORT"} | SECRET_KEYS
    missing = sorted(setting_names() - configurable - NOT_IN_CHART)
    assert not missing, f"settings the chart cannot set: {missing}"


def test_every_values_key_is_documented():
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    previous = ""
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped:
            continue
        if re.match(r"^\s*[A-Za-z_][\w.-]*:", line) and not previous.startswith("#"):
            undocumented.append(f"{number}: {stripped}")
        previous = stripped
    assert not undocumented, "keys without a comment above them:\n" + "\n".join(undocumented)


def leaf_paths(node: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
    paths = []
    for key, value in node.items():
        if isinstance(value, dict) and value:
            paths += leaf_paths(value, (*prefix, key))
        else:
            paths.append(".".join((*prefix, key)))
    return paths


def test_the_chart_readme_lists_every_value():
    readme = (CHART / "README.md").read_text()
    missing = [path for path in leaf_paths(values()) if f"| `{path}` |" not in readme]
    assert not missing, f"values missing from the README's table: {missing}"


def test_containers_are_locked_down():
    tree = values()
    pod, container = tree["podSecurityContext"], tree["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["runAsNonRoot"] is True and container["runAsUser"] == 10001
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}
    texts = template_texts()
    for name in ("api-deployment.yaml", "worker-deployment.yaml", "migrations-job.yaml"):
        assert "toYaml .Values.podSecurityContext" in texts[name], name
        assert "toYaml .Values.securityContext" in texts[name], name
        assert "mountPath: /tmp" in texts[name], f"{name}: /tmp must be writable (emptyDir)"


def test_api_probes_use_the_health_routes():
    text = template_texts()["api-deployment.yaml"]
    assert re.search(r"livenessProbe:\s+httpGet:\s+path: /live\b", text)
    assert re.search(r"readinessProbe:\s+httpGet:\s+path: /ready\b", text)
    from api.routes.health import live, ready

    assert live.paths == {"/live"}
    assert ready.paths == {"/ready"}
    assert values()["api"]["port"] == Settings().port


def test_workers_get_time_to_shut_down():
    tree = values()
    assert tree["worker"]["terminationGracePeriodSeconds"] > float(tree["config"]["WORKER_SHUTDOWN_GRACE_SEC"])
    template = template_texts()["worker-deployment.yaml"]
    assert "terminationGracePeriodSeconds: {{ .Values.worker.terminationGracePeriodSeconds }}" in template


def test_migrations_run_as_a_hook_before_install_and_upgrade():
    texts = template_texts()
    job, secret = texts["migrations-job.yaml"], texts["migrations-secret.yaml"]
    assert '"helm.sh/hook": pre-install,pre-upgrade' in job
    assert '"helm.sh/hook": pre-install,pre-upgrade' in secret
    weight = re.compile(r'"helm.sh/hook-weight": "(-?\d+)"')
    (secret_weight,), (job_weight,) = weight.findall(secret), weight.findall(job)
    assert int(secret_weight) < int(job_weight), "the hook Secret must exist before the Job"
    assert 'args: ["shared.db.migrate"]' in job
    from shared.db import migrate

    assert callable(migrate.main)


@pytest.mark.parametrize("name", ["api", "worker"])
def test_components_run_their_module(name: str):
    assert f'args: ["{name}"]' in template_texts()[f"{name}-deployment.yaml"]


def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "scheduler"
    assert chart["appVersion"] == project["version"], "Chart.yaml appVersion must follow pyproject.toml"


def test_workers_are_scraped_and_alerts_name_the_jobs_the_chart_creates():
    texts = template_texts()
    podmonitor, servicemonitor, rule = (
        texts["worker-podmonitor.yaml"],
        texts["servicemonitor.yaml"],
        texts["prometheusrule.yaml"],
    )
    assert "kind: PodMonitor" in podmonitor and "- port: metrics" in podmonitor
    assert "app.kubernetes.io/component: worker" in podmonitor
    # The worker deployment's container port is the one the PodMonitor scrapes.
    assert "- name: metrics" in texts["worker-deployment.yaml"]
    pinned_worker_job = 'replacement: {{ include "scheduler.fullname" . }}-worker'
    assert pinned_worker_job in podmonitor
    assert 'replacement: {{ include "scheduler.fullname" . }}-api' in servicemonitor
    assert '{{- $worker := printf "%s-worker" (include "scheduler.fullname" .) }}' in rule
    standalone = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text())["groups"][0]["rules"]
    chart_alerts = re.findall(r"- alert: (\w+)", rule)
    assert chart_alerts == [r["alert"] for r in standalone]
    # Every chart alert is confined to the worker job (metrics of other apps never trigger it).
    exprs = re.findall(r"expr: (.+)", rule)
    assert len(exprs) == len(chart_alerts) and all('{job="{{ $worker }}"}' in e for e in exprs)
    # The standalone file's matcher matches the chart's default job name.
    workers_down = next(r for r in standalone if r["alert"] == "SchedulerWorkersDown")
    matcher = re.search(r'job=~"([^"]+)"', workers_down["expr"])
    assert matcher and re.fullmatch(matcher.group(1), "prod-scheduler-worker")
