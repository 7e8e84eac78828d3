"""The ogx run configuration the end-to-end tests start ``ogx stack run`` with: one inference provider
(``remote::vllm`` at a fake OpenAI upstream on loopback), sqlite stores in a temporary folder, model ``llama-8b``."""

from __future__ import annotations

_CONFIG = """\
version: 2
distro_name: {distro}
apis: [inference]
providers:
  inference:
  - provider_id: vllm
    provider_type: remote::vllm
    config: {{base_url: "http://127.0.0.1:{upstream}/v1", api_token: fake}}
storage:
  backends:
    kv_default: {{type: kv_sqlite, db_path: "{store}/kvstore.db"}}
    sql_default: {{type: sql_sqlite, db_path: "{store}/sql_store.db"}}
  stores:
    metadata: {{namespace: registry, backend: kv_default}}
    inference: {{table_name: inference_store, backend: sql_default}}
    conversations: {{table_name: openai_conversations, backend: sql_default}}
    prompts: {{table_name: prompts, backend: sql_default}}
registered_resources:
  models:
  - {{metadata: {{}}, model_id: llama-8b, provider_id: vllm, provider_model_id: upstream-model, model_type: llm}}
server:
{server}
"""


def ogx_config(distro: str, *, upstream: int, store: str, server: str) -> str:
    """The YAML text; ``server`` is the indented body of its ``server:`` mapping (host, port, workers, auth)."""
    return _CONFIG.format(distro=distro, upstream=upstream, store=store, server=server)
