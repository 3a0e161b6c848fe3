"""Where the roles find their templates (absolute, so pyinfra's cwd does not matter).

Example:
    template("ssh/00-vos-hardening.conf.j2")  # -> /…/templates/ssh/00-vos-hardening.conf.j2
"""

from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def template(relative: str) -> str:
    """Absolute path of a file under templates/.

    Example:
        >>> template("ufw/after.rules.j2").endswith("templates/ufw/after.rules.j2")
        True
    """
    return str(TEMPLATES / relative)
