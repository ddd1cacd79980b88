"""dbt-duckdb plugin: every aef_* function on each connection and cursor dbt opens.

In profiles.yml::

    my_project:
      target: dev
      outputs:
        dev:
          type: duckdb
          path: warehouse.duckdb
          plugins:
            - module: aefsql.dbt
              config:
                catalog: s3://my-bucket/aef/index.parquet   # default: the public AEF index
                cache_dir: .aefsql-cache                     # optional
                storage_options: {endpoint_url: "http://127.0.0.1:9000", anon: false}

Models that call aef_* functions must be materialised as tables: a view calling a Python UDF
fails in any process that has not registered aefsql.
"""

from __future__ import annotations

from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin

from .duck import open_session
from .errors import AefsqlError

SETTINGS = {"catalog", "cache_dir", "concurrency", "collection", "storage_options"}


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        unknown = set(plugin_config) - SETTINGS
        if unknown:
            raise AefsqlError(
                f"aefsql.dbt: unknown config {sorted(unknown)}; known: {sorted(SETTINGS)}"
            )
        config = dict(plugin_config)
        storage_options = config.pop("storage_options", None) or {}
        self.session = open_session(config.pop("catalog", None), **config, **storage_options)

    def configure_connection(self, conn) -> None:
        self.session.install(conn)

    def configure_cursor(self, cursor) -> None:
        # TEMP macros belong to one connection: dbt's cursors need them too.
        self.session.install(cursor)
