"""Backups alone: install the backup tooling, the operator's public key and the schedule,
then take one backup right away so a wrong target or database URL shows up now.

    VOS_BACKUP_DATABASE_URL=postgresql://… pyinfra inventory/production.py deploys/backups.py
    vos backup drill --target vos-backup@TARGET:/srv/vos-backups   # then prove it restores

The host's inventory needs a `backups` block (roles/settings.py BackupSettings): target
host/user/path (and its pinned host key), the public key file, schedule and retention. The
first run prints the host's own SSH key: authorise it on the target, e.g. in
~vos-backup/.ssh/authorized_keys there with `command="rrsync /srv/vos-backups"`.
"""

from pyinfra import host
from pyinfra.api.exceptions import DeployError

from roles import backups
from roles.settings import settings_from_host_data

settings = settings_from_host_data(host.name, host.data.dict())
if settings.backups is None:
    raise DeployError(
        f"{host.name}: the inventory has no `backups` block (target_host, public_key_file, …); "
        "add one (see roles/settings.py BackupSettings). Nothing was changed.")

backups.scheduled(settings.backups, run_now=True)
