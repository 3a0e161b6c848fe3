"""`vos fake-providers` and `vos agents …` through the real CLI."""

from typer.testing import CliRunner

from cli import cli

runner = CliRunner()


def test_fake_providers_serve_then_stop():
    result = runner.invoke(cli, ["fake-providers", "--duration", "0.3",
                                 "--script", "anthropic=429:2,529"])
    assert result.exit_code == 0, result.output
    for name in ("anthropic", "openai", "openrouter", "ollama"):
        assert f"{name} " in result.output
    assert "base_url=http://127.0.0.1:" in result.output
    assert "fake providers stopped" in result.output


def test_fake_providers_reject_a_bad_script():
    result = runner.invoke(cli, ["fake-providers", "--duration", "0.1", "--script", "x=500"])
    assert result.exit_code == 2
    assert "NAME=SPEC" in result.output


def test_sanitize_reads_stdin_and_counts_redactions():
    result = runner.invoke(cli, ["agents", "sanitize"],
                           input="db postgres://vos:s3cretpass@db/vos, mail ops@example.com\n")
    assert result.exit_code == 0
    assert "s3cretpass" not in result.stdout and "ops@example.com" not in result.stdout
    assert "redacted: email=1, url_password=1" in result.stderr


def test_sanitize_unknown_pii_name_is_a_clear_error():
    result = runner.invoke(cli, ["agents", "sanitize", "--pii", "shoe_size"], input="x")
    assert result.exit_code == 2
    assert "unknown PII pattern" in result.stderr
