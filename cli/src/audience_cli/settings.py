"""Where the CLI looks: the gateway URL, the key, and the checkout the local scripts live in."""

import json
import os
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"  # the api's default port (services/api config.py)
SERVICE_PORTS = {"api": 8000, "evaluator": 8001, "sync": 8002}  # deploy/local/services.sh


def checkout_root() -> Path | None:
    """The source checkout holding deploy/local and bench/ (the CLI is installed editable)."""
    if explicit := os.environ.get("AUDIENCES_ROOT"):
        return Path(explicit)
    for start in (Path(__file__).resolve(), Path.cwd().resolve()):
        for candidate in (start, *start.parents):
            if (candidate / "deploy" / "local" / "up.sh").is_file():
                return candidate
    return None


def demo_key(root: Path | None) -> str | None:
    """The demo project's key that `make up` printed and kept in .local/demo/demo.json."""
    if root is None:
        return None
    local = Path(os.environ.get("AUDIENCES_LOCAL_DIR", root / ".local"))
    try:
        state = json.loads((local / "demo" / "demo.json").read_text())
    except (OSError, ValueError):
        return None
    key = state.get("key") if isinstance(state, dict) else None
    return key if isinstance(key, str) else None


def service_url(name: str) -> str:
    port = os.environ.get(f"AUDIENCES_{name.upper()}_PORT", str(SERVICE_PORTS[name]))
    return f"http://127.0.0.1:{port}"
