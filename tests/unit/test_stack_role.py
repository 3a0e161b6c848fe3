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
