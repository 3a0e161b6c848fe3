"""The accounts and files roles alone, as deploys/full.py runs them (default LoginSettings):
tests/integration/test_checks_accounts_files.py converges a container with it.

    pyinfra -y @docker/CONTAINER tests/integration/deploy_accounts_files.py
"""

from roles import accounts
from roles import files as file_roles
from roles.settings import LoginSettings

login = LoginSettings()
accounts.login_defs(login)
accounts.banners(login)
accounts.session_policy(login)
accounts.no_compilers(login)
accounts.no_root_keys()
file_roles.permissions()
