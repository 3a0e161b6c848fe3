"""The model providers the staging VM's worker reaches: the seed's diagram, with fakes.

The seed draws a desktop with local inference (Ollama) on the operator's side of the mesh and
cloud providers on the internet. In staging both are the fakes of `devtools.fakes` (they
speak each wire format; nothing real can be reached from here):

- desktop: a fake Ollama (native `/api/chat`) bound to the operator's MESH address
  (100.64.N.1:11434), so the VM reaches it only over the mesh, like a desktop on Tailscale;
- cloud: fake Anthropic and OpenAI on the operator's 127.0.0.1, reached by the VM through its
  egress (QEMU user networking answers 10.0.2.2 with the operator's loopback), like an API on
  the internet.

`write_agents_file` puts the tenant's agents file (the seed's org chart over those
deployments) into the lab's state dir; inventory/staging.py ships it. `start_fakes` is what
a test (or an operator trying the flow by hand) runs while the worker should succeed; with no
fakes running the worker's calls fail and its tasks back off and end Failed, visibly.

Example:
    path = write_agents_file(layout, state_dir)      # <state dir>/agents.yaml
    fleet = start_fakes(layout, api_key)             # {"desktop": …, "anthropic": …, …}
    fleet["desktop"].script("500", "500")            # the desktop fails twice
"""

from __future__ import annotations

from pathlib import Path

import yaml

from devtools.fakes import FakeProviderServer
from staging.state import SlotLayout

TENANT = "staging"  # the tenant the lab's door source feeds and the worker serves
EGRESS_GATEWAY = "10.0.2.2"  # the operator's loopback, as the VM's user networking sees it
OLLAMA_PORT = 11434
LOCAL_MODEL = "llama3.1:8b"  # priced at $0 in the built-in price list (local inference)
CLOUD_MODELS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-4.1"}
AGENTS_FILE = "agents.yaml"
PROVIDER_KEY_ENV = "VOS_STAGING_PROVIDER_KEY"  # in the lab's secrets.env; the fakes accept it


def cloud_port(layout: SlotLayout, provider: str) -> int:
    """A fixed port per slot and provider on 127.0.0.1 (parallel labs never clash).

    Example:
        >>> cloud_port(SlotLayout(slot=2), "openai")
        18409
    """
    return 18400 + 4 * layout.slot + list(CLOUD_MODELS).index(provider)


def agents_document(layout: SlotLayout) -> dict:
    """The staging tenant's agents file as data: an orchestrator over two specialists, the
    orchestrator's chain [desktop Ollama, cloud Anthropic]."""
    cloud = f"http://{EGRESS_GATEWAY}"
    return {
        "system_prompt": "You are an agent of the Agent VOS staging workforce. Answer briefly.",
        # A staging task that cannot be worked (fakes not running) ends Failed in minutes.
        "worker": {"max_attempts": 3, "backoff_base_seconds": 5, "backoff_max_seconds": 60},
        "retry": {"max_attempts": 2, "base_delay": 0.2, "max_delay": 1.0,
                  "cooldown_seconds": 5},
        "deployments": [
            {"name": "desktop", "provider": "ollama",
             "base_url": f"http://{layout.operator_mesh}:{OLLAMA_PORT}", "model": LOCAL_MODEL,
             "context_window": 32768, "max_output_tokens": 256, "timeout_seconds": 20},
            {"name": "cloud", "provider": "anthropic",
             "base_url": f"{cloud}:{cloud_port(layout, 'anthropic')}",
             "model": CLOUD_MODELS["anthropic"], "context_window": 200000,
             "max_output_tokens": 256, "api_key_env": "ANTHROPIC_API_KEY",
             "timeout_seconds": 20},
            {"name": "cloud-openai", "provider": "openai",
             "base_url": f"{cloud}:{cloud_port(layout, 'openai')}/v1",
             "model": CLOUD_MODELS["openai"], "context_window": 1000000,
             "max_output_tokens": 256, "api_key_env": "OPENAI_API_KEY",
             "timeout_seconds": 20},
        ],
        "default_chain": ["desktop", "cloud"],
        "agents": [
            {"name": "Orchestrator", "role": "Orchestrator", "orchestrator": True,
             "persona": "You triage incoming callbacks and answer what you can.",
             "chain": ["desktop", "cloud"], "budget_usd": 5, "budget_period": "month"},
            {"name": "CTO", "role": "Lead · engineering", "manager": "Orchestrator",
             "persona": "You own the platform.", "chain": ["cloud-openai", "desktop"],
             "budget_usd": 5, "budget_period": "month"},
        ],
    }


def write_agents_file(layout: SlotLayout, state_dir: Path) -> Path:
    """Write `<state dir>/agents.yaml` when its content changed; return its path."""
    path = Path(state_dir) / AGENTS_FILE
    text = ("# Written by staging/providers.py for this lab's slot; shipped by the stack role.\n"
            + yaml.safe_dump(agents_document(layout), sort_keys=False, allow_unicode=True))
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def start_fakes(layout: SlotLayout, api_key: str) -> dict[str, FakeProviderServer]:
    """Start the desktop Ollama on the mesh address and the cloud fakes on loopback.

    The caller stops them (`server.stop()` for each).
    """
    fleet = {"desktop": FakeProviderServer("ollama", name="desktop", port=OLLAMA_PORT,
                                           host=layout.operator_mesh)}
    for provider in CLOUD_MODELS:
        fleet[provider] = FakeProviderServer(provider, api_key=api_key,
                                             port=cloud_port(layout, provider))
    for server in fleet.values():
        server.start()
    return fleet
