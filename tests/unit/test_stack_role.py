"""roles/stack.py: secrets come from the operator's environment, with clear errors."""

import pytest

from roles.settings import InventoryError, StackSettings
from roles.stack import env_file_text


def test_env_file_from_the_operator_environment():
    text = env_file_text({"DATABASE_URL": "OP_URL", "VOS_DOOR_SECRETS": "OP_DOOR"},
                         {"OP_URL": "postgresql://vos_app:pw@100.64.0.1/vos", "OP_DOOR": "{}"})
    assert text == "DATABASE_URL=postgresql://vos_app:pw@100.64.0.1/vos\nVOS_DOOR_SECRETS={}\n"


def test_missing_secret_names_the_variable_and_writes_nothing():
    with pytest.raises(InventoryError, match="OP_URL are empty on the operator's machine"):
        env_file_text({"DATABASE_URL": "OP_URL"}, {})


def test_newline_in_a_secret_is_refused():
    with pytest.raises(InventoryError, match="contains a newline"):
        env_file_text({"A": "B"}, {"B": "x\nINJECTED=1"})


@pytest.mark.parametrize("field, value, message", [
    ("base_image", "Bad Image!", "is not an image reference"),
    ("memory_api", "lots", "is not a memory size"),
    ("env", {"DATABASE_URL": "postgresql://secret"}, "must be variable NAMES"),
    ("ship", "registry", "registry_image is not set"),
])
def test_stack_settings_refuse_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        StackSettings(**{field: value})


def test_acme_is_refused_with_the_working_alternatives():
    with pytest.raises(ValueError, match="not implemented yet: use 'operator'"):
        StackSettings(tls="acme")


def test_operator_tls_needs_both_files(tmp_path):
    cert = tmp_path / "door.crt"
    cert.write_text("x")
    with pytest.raises(ValueError, match="set tls_cert_file and tls_key_file"):
        StackSettings(tls="operator", tls_cert_file=cert)


def test_operator_tls_files_go_to_the_host_0600_owned_by_the_containers_user(tmp_path):
    from roles_harness import load_facts, plan_role, set_fact

    from roles import stack

    cert, key = tmp_path / "door.crt", tmp_path / "door.key"
    cert.write_text("CERT")
    key.write_text("KEY")
    settings = StackSettings(tls="operator", tls_cert_file=cert, tls_key_file=key)
    facts = set_fact(load_facts("debian13"), "files.Directory", None,
                     path="/etc/vos-stack/tls")
    for tool in ("useradd", "groupadd", "usermod", "groupmod"):
        facts = set_fact(facts, "server.Which", f"/usr/sbin/{tool}", command=tool)
    facts = set_fact(facts, "files.Directory", None, path="/nonexistent")
    for name in ("door.crt", "door.key"):
        facts = set_fact(facts, "files.File", None, path=f"/etc/vos-stack/tls/{name}")
        facts = set_fact(facts, "files.Directory", None, path=f"/etc/vos-stack/tls/{name}")
    result = plan_role(stack.door_tls, facts, settings, public_address="203.0.113.10")
    assert result.uploads.get("/etc/vos-stack/tls/door.key") == "KEY"
    commands = "\n".join(result.commands)
    assert "openssl" not in commands
    assert "chmod 600 /etc/vos-stack/tls/door.key" in commands
    assert "chown vos-app:vos-app /etc/vos-stack/tls/door.key" in commands
