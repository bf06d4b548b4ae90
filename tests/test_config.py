"""config.yaml: `${VAR:-default}` interpolation, validation, and errors an analyst can act on.

Every problem names the file and line, the key as a dotted path
(`channels[0].source.port`) and what would be valid. Relative paths mean
"next to the config file", whatever the current directory.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import ConfigError, EngineConfig, interpolate, load_config

REPO = Path(__file__).resolve().parent.parent

MINIMAL = """\
store:
  url: sqlite:///./var/engine.db
channels:
  - name: ehr_inbound
    source:
      type: mllp
      port: 2575
"""


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, env: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def only_problem(path: Path, env: dict | None = None) -> str:
    found = problems(path, env)
    assert len(found) == 1, found
    return found[0]


# ---- the shipped config ----------------------------------------------------

def test_the_default_config_loads_with_its_defaults():
    config = load_config(REPO / "config.yaml", env={})
    assert isinstance(config, EngineConfig)
    assert config.data_dir == REPO / "var"
    assert config.store.url == f"sqlite:///{REPO}/var/engine.db"
    assert config.store.synchronous == "FULL"
    assert config.logging.file == REPO / "var" / "logs" / "engine.log"
    assert config.web.port == 8575
    channel = config.channel("ehr_inbound")
    assert (channel.source.host, channel.source.port) == ("127.0.0.1", 2575)
    assert channel.source.max_message_bytes == 64 * 1024 * 1024
    assert config.source_file == REPO / "config.yaml"


def test_the_environment_overrides_the_defaults():
    config = load_config(REPO / "config.yaml", env={"MLLP_PORT": "3575", "ENGINE_DATA_DIR": "/srv/engine",
                                                    "LOG_LEVEL": "debug", "WEB_PORT": "9000"})
    assert config.channels[0].source.port == 3575
    assert config.data_dir == Path("/srv/engine")
    assert config.store.url == "sqlite:////srv/engine/engine.db"     # the nested default follows the data dir
    assert config.logging.level == "DEBUG"
    assert config.web.port == 9000


def test_a_store_url_from_the_environment_replaces_the_whole_default():
    config = load_config(REPO / "config.yaml", env={"ENGINE_STORE_URL": "postgresql://engine@db/engine"})
    assert config.store.url == "postgresql://engine@db/engine"


# ---- interpolation ---------------------------------------------------------

@pytest.mark.parametrize("text, env, expected", [
    ("${A}", {"A": "1"}, "1"),
    ("${A:-x}", {}, "x"),
    ("${A:-x}", {"A": ""}, "x"),                       # empty counts as unset, as in the shell
    ("${A:-x}", {"A": "set"}, "set"),
    ("${A:-}", {}, ""),
    ("host-${A:-a}:${B:-2575}/x", {"B": "9"}, "host-a:9/x"),
    ("${A:-x${B:-y}z}", {}, "xyz"),
    ("${A:-x${B:-y}z}", {"B": "Q"}, "xQz"),
    ("${A:-x${B:-y}z}", {"A": "W"}, "W"),
    ("${A:-${B:-${C:-deep}}}", {}, "deep"),
    ("${A:-${B}}", {"A": "set"}, "set"),               # B is not needed when A is set
    ("cost $5 {not a var}", {}, "cost $5 {not a var}"),
])
def test_interpolate(text, env, expected):
    assert interpolate(text, env) == expected


@pytest.mark.parametrize("text", ["${MISSING}", "${A:-${MISSING}}", "x-${MISSING}-y"])
def test_interpolate_names_the_unset_variable(text):
    with pytest.raises(KeyError) as caught:
        interpolate(text, {})
    assert caught.value.args == ("MISSING",)


def test_an_unset_variable_without_default_names_the_variable_the_key_and_the_line(tmp_path):
    path = write(tmp_path, MINIMAL.replace("port: 2575", "port: ${MLLP_PORT}"))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:7: channels[0].source.port: ")
    assert "MLLP_PORT is not set" in problem and "${MLLP_PORT:-default}" in problem


def test_every_unset_variable_is_reported_at_once(tmp_path):
    path = write(tmp_path, "data_dir: ${DATA}\n" + MINIMAL.replace("2575", "${PORT}"))
    found = problems(path)
    assert [p.split(": ")[0] for p in found] == [f"{path}:1", f"{path}:8"]
    assert "DATA" in found[0] and "PORT" in found[1]


def test_interpolated_values_are_typed_after_substitution(tmp_path):
    config = load_config(write(tmp_path, MINIMAL.replace("2575", "${PORT:-2600}")), env={})
    assert config.channels[0].source.port == 2600


def test_quoted_scalars_stay_strings(tmp_path):
    path = write(tmp_path, MINIMAL.replace("name: ehr_inbound", "name: '2575'"))
    assert load_config(path, env={}).channels[0].name == "2575"


# ---- validation problems -----------------------------------------------------

def test_an_out_of_range_port_names_file_line_key_and_value(tmp_path):
    path = write(tmp_path, MINIMAL.replace("2575", "70000"))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:7: channels[0].source.port: ")
    assert "65535" in problem and "70000" in problem


def test_a_wrong_choice_lists_the_valid_ones(tmp_path):
    path = write(tmp_path, MINIMAL + "logging:\n  level: LOUD\n  format: xml\n")
    level, fmt = problems(path)
    assert level.startswith(f"{path}:9: logging.level: ")
    assert all(choice in level for choice in ("'DEBUG'", "'INFO'", "'WARNING'", "'ERROR'", "'LOUD'"))
    assert fmt.startswith(f"{path}:10: logging.format: ") and "'json'" in fmt and "'text'" in fmt


def test_choices_are_case_insensitive_where_analysts_expect_it(tmp_path):
    path = write(tmp_path, MINIMAL.replace("store:\n", "store:\n  synchronous: normal\n") + "logging:\n  level: warning\n")
    config = load_config(path, env={})
    assert (config.store.synchronous, config.logging.level) == ("NORMAL", "WARNING")


def test_an_unknown_key_lists_the_keys_valid_at_that_place(tmp_path):
    path = write(tmp_path, MINIMAL + "      max_conections: 10\n" + "chanels: []\n")
    found = problems(path)
    assert len(found) == 2
    source, top = sorted(found, key=lambda p: int(p.split(":")[1]))
    assert source.startswith(f"{path}:8: channels[0].source.max_conections: ")
    assert "valid keys here: host, idle_timeout_seconds, max_connections, max_message_bytes, port, type" in source
    assert top.startswith(f"{path}:9: chanels: ")
    assert "valid keys here: channels, data_dir, logging, outbound, outreach, payers, processing, referrals, schedules, store, web" in top


def test_an_unknown_key_in_a_destination_lists_that_destination_types_keys(tmp_path):
    path = write(tmp_path, MINIMAL + "    destinations:\n      - type: file\n        name: out\n"
                                     "        directory: ./out\n        port: 3\n")
    problem = only_problem(path)
    assert problem.startswith(f"{path}:12: channels[0].destinations[0].port: ")
    assert problem.endswith("valid keys here: directory, name, name_pattern, receiving_application, "
                            "receiving_facility, sending_application, sending_facility, type")


def test_an_unknown_source_type_lists_the_known_ones(tmp_path):
    path = write(tmp_path, MINIMAL.replace("type: mllp", "type: tcp"))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:6: channels[0].source: ") and "'tcp'" in problem and "'mllp'" in problem


def test_a_missing_required_key_is_named(tmp_path):
    path = write(tmp_path, MINIMAL.replace("      port: 2575\n", ""))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:6: channels[0].source.port: required key is missing")


def test_a_bad_store_url_says_what_is_expected(tmp_path):
    path = write(tmp_path, MINIMAL.replace("sqlite:///./var/engine.db", "postgres://db/engine"))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:2: store.url: ")
    assert "sqlite:///PATH" in problem and "postgresql://" in problem and "postgres://db/engine" in problem


def test_filters_check_their_path_regex_and_single_test(tmp_path):
    path = write(tmp_path, MINIMAL + """\
    filters:
      - path: pid-3
        equals: x
      - path: MSH-9.1
        matches: "(["
      - path: MSH-9.1
        in: [ORM]
        equals: ORM
""")
    bad_path, bad_regex, two_tests = problems(path)
    assert bad_path.startswith(f"{path}:9: channels[0].filters[0].path: ") and "PID-3[*].1" in bad_path
    assert bad_regex.startswith(f"{path}:12: channels[0].filters[1].matches: ") and "regular expression" in bad_regex
    assert two_tests.startswith(f"{path}:13: channels[0].filters[2]: ")
    assert "exactly one of: in, not_in, equals, matches" in two_tests


def test_duplicate_channel_names_are_refused_naming_the_name(tmp_path):
    path = write(tmp_path, MINIMAL + MINIMAL[MINIMAL.index("  - name"):].replace("2575", "2576"))
    problem = only_problem(path)
    assert problem.startswith(f"{path}:4: channels: ")
    assert "channel names must be unique; repeated: ehr_inbound" in problem


def test_two_enabled_channels_on_one_port_are_refused_unless_one_is_disabled(tmp_path):
    second = MINIMAL[MINIMAL.index("  - name"):].replace("ehr_inbound", "second")
    problem = only_problem(write(tmp_path, MINIMAL + second))
    assert problem.startswith(f"{tmp_path / 'config.yaml'}:4: channels: ") and "127.0.0.1:2575" in problem
    disabled = second.replace("    source:", "    enabled: false\n    source:")
    assert len(load_config(write(tmp_path, MINIMAL + disabled), env={}).channels) == 2


def test_invalid_yaml_names_the_line(tmp_path):
    path = write(tmp_path, MINIMAL + "web:\n  port: [8575\n  host: x\n")
    problem = only_problem(path)
    assert problem.startswith(f"{path}:") and "not valid YAML" in problem
    assert int(problem.split(":")[1]) in (10, 11)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just a string\n"])
def test_a_config_that_is_not_a_mapping_says_what_is_expected(tmp_path, text):
    assert "must be a mapping" in only_problem(write(tmp_path, text))


def test_a_missing_file_is_a_config_error(tmp_path):
    problem = only_problem(tmp_path / "nope.yaml")
    assert problem.startswith(f"{tmp_path / 'nope.yaml'}: cannot read the config file")


# ---- paths -------------------------------------------------------------------

def test_relative_paths_are_resolved_against_the_config_files_folder(tmp_path, monkeypatch):
    folder = tmp_path / "etc" / "engine"
    folder.mkdir(parents=True)
    path = write(folder, MINIMAL + """\
    transformer:
      mappings: mappings
    destinations:
      - type: file
        name: archive
        directory: ../archive
logging:
  file: logs/engine.log
data_dir: data
""")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("..") / "etc" / "engine" / "config.yaml", env={})
    base = folder.resolve()
    assert config.data_dir == base / "data"
    assert config.store.url == f"sqlite:///{base}/var/engine.db"
    assert config.store_location == base / "var" / "engine.db"
    assert config.logging.file == base / "logs" / "engine.log"
    assert config.channels[0].transformer.mappings == base / "mappings"
    assert config.channels[0].destinations[0].directory == base / ".." / "archive"
    assert config.source_file == base / "config.yaml"


def test_absolute_paths_and_postgresql_urls_are_left_alone(tmp_path):
    text = MINIMAL.replace("sqlite:///./var/engine.db", "postgresql://engine@db/engine") + "data_dir: /srv/engine\n"
    config = load_config(write(tmp_path, text), env={})
    assert config.data_dir == Path("/srv/engine")
    assert config.store.url == "postgresql://engine@db/engine"


# ---- the command line ----------------------------------------------------------

def check_config(path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("ENGINE_CONFIG", "MLLP_PORT", "WEB_PORT", "LOG_LEVEL",
                                                            "ENGINE_DATA_DIR", "ENGINE_STORE_URL", "MLLP_HOST")}
    return subprocess.run([str(REPO / ".venv" / "bin" / "python"), "run_engine.py", "check-config",
                           "--config", str(path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_check_config_exits_2_and_prints_every_problem_on_stderr(tmp_path):
    bad = write(tmp_path, MINIMAL.replace("2575", "70000") + "logging:\n  level: LOUD\n")
    result = check_config(bad)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == problems(bad)
    assert sorted(line.split(": ")[:2] for line in lines) == [
        [f"{bad}:7", "channels[0].source.port"], [f"{bad}:9", "logging.level"]]


def test_check_config_accepts_the_default_config():
    result = check_config(Path("config.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config.yaml: OK (2 channels;")


def test_check_config_names_a_postgresql_store_without_its_password(tmp_path):
    path = write(tmp_path, MINIMAL.replace("sqlite:///./var/engine.db", "postgresql://engine:secret@db.invalid/engine"))
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: OK (1 channels; store postgresql://db.invalid/engine)"
    assert "secret" not in result.stdout + result.stderr


def test_an_unreachable_postgresql_store_stops_the_start_with_the_reason():
    import os
    import subprocess
    env = {**os.environ, "ENGINE_STORE_URL": "postgresql://engine:secret@db.invalid/engine"}
    result = subprocess.run([sys.executable, "run_engine.py", "run"], capture_output=True, text=True, env=env,
                            timeout=120, cwd=REPO)
    assert result.returncode == 2
    assert "postgresql://db.invalid/engine: cannot open the store" in result.stderr
    assert "secret" not in result.stderr                      # credentials stay out of the message


def test_a_destination_its_connector_refuses_is_named_by_check_config(tmp_path):
    text = (REPO / "config.yaml").read_text().replace("sender: referrals@riverbend.example",
                                                      "sender: referrals-at-riverbend")
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("./mappings", str(REPO / "mappings")))
    result = check_config(path)
    assert result.returncode == 2
    assert f"{path}: destinations.smtp_relay: sender 'referrals-at-riverbend' is not an email address" in result.stderr
