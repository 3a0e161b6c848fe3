"""Break an invariant on a throwaway converged VM and see the check fail, readably."""

import pytest


@pytest.mark.staging_extended
def test_base_check_fails_when_the_deploy_user_loses_sudo(fresh_converged_vm):
    # Every drop-in that grants the deploy user sudo: the image's and the users role's.
    fresh_converged_vm.ssh("sudo sh -c 'grep -l ^deploy /etc/sudoers.d/* | xargs rm -f'")
    assert fresh_converged_vm.ssh("sudo -n true", check=False).returncode != 0
    result = fresh_converged_vm.run_checks("checks/test_base.py")
    assert result.returncode != 0
    assert "`sudo -n true` failed for the deploy user" in result.stdout


@pytest.mark.staging_extended
def test_base_check_fails_when_sshd_would_not_start_at_boot(fresh_converged_vm):
    fresh_converged_vm.ssh("sudo systemctl disable ssh.service ssh.socket 2>/dev/null; true")
    result = fresh_converged_vm.run_checks("checks/test_base.py")
    assert result.returncode != 0
    assert "will not start at boot" in result.stdout
