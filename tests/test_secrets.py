"""Secrets never reach a message: presigned URLs (against the loopback S3 server) and path
parameters, in the errors of the Python API, SQL, the shell and the CLI."""

import subprocess
import sys

import pyarrow as pa
import pytest

import aefsql
from aefsql.errors import redact, redact_text


def secret_free(text: str, secrets) -> bool:
    return not any(secret in text for secret in [*secrets, "X-Amz-Signature", "X-Amz-Credential"])


def test_a_presigned_catalog_works_and_its_errors_keep_the_signature_out(presigned):
    present, missing, signatures = presigned
    with aefsql.connect(catalog=present) as con:  # the signature grants the read
        assert con.sql("SELECT count(*) FROM aef_index()").fetchall()[0][0] > 0
    with aefsql.connect(catalog=missing) as con, pytest.raises(Exception) as failure:
        con.sql("SELECT * FROM aef_index()").fetchall()
    assert "no-such-index.parquet" in str(failure.value)
    assert secret_free(str(failure.value), signatures)


def test_python_api_errors_keep_the_signature_out(presigned):
    _, missing, signatures = presigned
    points = pa.table({"lon": [12.0], "lat": [45.0]})
    with pytest.raises(Exception) as failure:
        aefsql.sample_points(points, years=2023, catalog=missing, progress=False)
    assert "no-such-index.parquet" in str(failure.value)
    assert secret_free(str(failure.value), signatures)


def test_shell_and_cli_errors_keep_the_signature_out(presigned, tmp_path):
    _, missing, signatures = presigned
    shell = subprocess.run(
        [
            sys.executable,
            "-m",
            "aefsql.cli",
            "--catalog",
            missing,
            "-c",
            "SELECT * FROM aef_index()",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shell.returncode != 0 and "no-such-index.parquet" in shell.stderr
    assert secret_free(shell.stderr + shell.stdout, signatures)
    points = tmp_path / "points.csv"
    points.write_text("lon,lat\n12.0,45.0\n")
    verb = subprocess.run(
        [
            sys.executable,
            "-m",
            "aefsql.cli",
            "sample",
            str(points),
            "--years",
            "2023",
            "--catalog",
            missing,
            "-o",
            str(tmp_path / "out.parquet"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verb.returncode != 0 and "no-such-index.parquet" in verb.stderr
    assert secret_free(verb.stderr + verb.stdout, signatures)


def test_path_parameters_and_urls_inside_messages_are_redacted(http_server):
    url = f"{http_server.base_url}app;jsessionid=SESSION1234/index.parquet?token=T0KEN"
    assert redact(url) == f"{http_server.base_url}app/index.parquet"
    assert redact("http://u:p@[::1]:8080/a;x=1/b?q#f") == "http://[::1]:8080/a/b"
    text = f"IO Error: cannot open '{url}': 404 (and https://user:pw@h.example/x?sig=S1)"
    assert redact_text(text) == (
        f"IO Error: cannot open '{http_server.base_url}app/index.parquet': 404 "
        "(and https://h.example/x)"
    )
    with aefsql.connect(catalog=url) as con, pytest.raises(Exception) as failure:
        con.sql("SELECT * FROM aef_index()").fetchall()
    assert "index.parquet" in str(failure.value)
    assert not any(s in str(failure.value) for s in ("SESSION1234", "T0KEN", "jsessionid"))
