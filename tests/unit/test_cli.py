"""The command line's start (pipeline/cli.py): a command imports only what it runs; --help lists them all."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import LAZY_COMMANDS, main

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_command_with_its_help_text():
    result = CliRunner().invoke(main, ["--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    listed = {line.split()[0]: line.split(None, 1)[1] for line in result.output.split("Commands:")[1].splitlines()
              if line.strip()}
    for name in (*LAZY_COMMANDS, "setup", "load-demo", "worker", "simulate", "watch", "demo"):
        assert listed.get(name, "").strip(), f"{name} is listed with its help text"
    assert listed["data"].startswith("Bring a city's own data in")


def test_each_lazily_loaded_command_has_the_name_it_is_listed_under():
    for name in LAZY_COMMANDS:
        assert main.get_command(None, name).name == name


def test_data_import_starts_without_the_other_commands_libraries():
    probe = ("import json, sys; from pipeline.cli import main\n"
             "try:\n    main(['data', 'import', '--help'])\nexcept SystemExit:\n    pass\n"
             "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    modules = set(json.loads(out.splitlines()[-1]))
    assert "pipeline.data.cli" in modules
    for heavy in ("geopy", "aiohttp", "shapely", "faust", "pipeline.console.cli", "pipeline.ingest.cli", "pipeline.tickets.cli"):
        assert heavy not in modules, f"`data import` imported {heavy}"


def test_the_demo_turns_the_driver_page_on_with_links_to_the_first_worker_unless_told_otherwise():
    from pipeline.cli import demo_environment

    env = demo_environment({})
    assert env["PW_DRIVER_PAGE"] == "true" and env["PW_PUBLIC_BASE_URL"] == "http://127.0.0.1:6066"
    assert demo_environment({"PW_DRIVER_PAGE": "false"})["PW_DRIVER_PAGE"] == "false"
    assert demo_environment({"PW_PUBLIC_BASE_URL": "https://p.hz.cn"})["PW_PUBLIC_BASE_URL"] == "https://p.hz.cn"
