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
fails in any process that has not registered aefsql. The plugin warns when a view model does.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.events.logging import AdapterLogger
from dbt_common.events.event_manager_client import get_event_manager

from .duck.registration import install
from .duck.udfs import SessionUdfs
from .errors import AefsqlError
from .options import headers_option
from .session import open_session

# "collection": the deprecated alias of "headers".
SETTINGS = {"catalog", "cache_dir", "concurrency", "headers", "collection", "storage_options"}
AEF_CALL = re.compile(r"\baef_\w+\s*\(", re.IGNORECASE)
logger = AdapterLogger("aefsql")


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict[str, Any]) -> None:
        unknown = set(plugin_config) - SETTINGS
        if unknown:
            raise AefsqlError(
                f"aefsql.dbt: unknown config {sorted(unknown)}; known: {sorted(SETTINGS)}"
            )
        config = dict(plugin_config)
        storage_options = config.pop("storage_options", None) or {}
        headers = headers_option(config.pop("headers", None), config.pop("collection", None))
        self.session = open_session(
            config.pop("catalog", None), **config, headers=headers, storage_options=storage_options
        )
        self.udfs = SessionUdfs(self.session)  # once: dbt's cursors share its UDFs
        self._warned_views: set[str] = set()
        self._lock = threading.Lock()

    def configure_connection(self, conn) -> None:
        install(conn, self.udfs)

    def configure_cursor(self, cursor) -> None:
        # TEMP macros belong to one connection: dbt's cursors need them too.
        install(cursor, self.udfs)
        # dbt resets its event callbacks at each invocation, and one process (dbtRunner) may
        # run several with this plugin: make sure the view check listens to the current one.
        callbacks = get_event_manager().callbacks
        if self._warn_on_view not in callbacks:
            callbacks.append(self._warn_on_view)

    def _warn_on_view(self, event) -> None:
        """Warn once per view model whose SQL calls aef_*: dbt's SQLQuery events carry each
        statement with its model's materialization, which the plugin sees nowhere else."""
        if event.info.name != "SQLQuery":
            return
        node = event.data.node_info
        if node.materialized != "view" or not AEF_CALL.search(event.data.sql):
            return
        with self._lock:
            if node.unique_id in self._warned_views:
                return
            self._warned_views.add(node.unique_id)
        logger.warning(
            f"view model {node.node_name} calls aef_* functions: the view fails in any process "
            "that has not registered aefsql; materialise it as a table or incremental model"
        )
