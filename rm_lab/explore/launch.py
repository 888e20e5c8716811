"""How `rm_lab explore` starts the Streamlit app: bound to localhost unless an address is given."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from rm_lab.config import ConfigError
from rm_lab.explore import paths

APP = Path(__file__).resolve().parents[2] / "apps" / "landscape.py"
LOCALHOST = "127.0.0.1"


def check_address(address: str) -> str:
    """An IP address or host name to bind to (0.0.0.0 serves every interface: only when asked)."""
    a = address.strip()
    if not a:
        raise ConfigError("--address: empty; expected an IP address or host name (default 127.0.0.1)")
    try:
        ipaddress.ip_address(a)
    except ValueError:
        if a != "localhost" and not all(part.isalnum() or "-" in part for part in a.split(".")):
            raise ConfigError(f"--address '{address}': expected an IP address or host name") from None
    return a


def streamlit_argv(runs: str | Path, address: str = LOCALHOST, port: int = 8501) -> list[str]:
    """The command line that serves the explorer over `runs` (checked: an existing folder)."""
    root = paths.runs_folder(runs)
    if not 1 <= int(port) <= 65535:
        raise ConfigError(f"--port {port}: expected 1..65535")
    if not APP.is_file():
        raise ConfigError(f"the explorer app {APP} is missing (a source checkout ships apps/landscape.py)")
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", check_address(address),
            "--server.port", str(int(port)), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--client.toolbarMode", "minimal",  # no "Deploy" button or developer menu: this is a local viewer
            "--", str(root)]
