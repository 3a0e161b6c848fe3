"""Broken boots fail clearly and in bounded time; destroy leaves nothing behind."""

import time

import pytest

from staging import networks
from staging.lab import Lab, remove_state_dir
from staging.proc import StagingError
from staging.state import temporary_state_dir


@pytest.mark.staging_last
@pytest.mark.staging_extended  # a VM of its own (~2.5 min under TCG), beside the session's
def test_boot_without_ssh_key_fails_clearly_and_cleans_up(monkeypatch):
    lab = Lab(temporary_state_dir("nokey"))
    claimed = []
    claim = networks.claim_slot
    monkeypatch.setattr(networks, "claim_slot", lambda: claimed.append(claim()) or claimed[-1])
    started = time.monotonic()
    try:
        with pytest.raises(StagingError) as failure:
            lab.up(boot_timeout=150, authorized_key=None)
        elapsed = time.monotonic() - started
        message = str(failure.value)
        assert "operator key is refused" in message and "Console tail" in message, message
        assert elapsed < 240, f"the failure took {elapsed:.0f} s"
        assert not lab.exists(), "a failed up must leave no state behind"
        assert lab.leftovers(claimed[0], pids=[]) == []
    finally:
        remove_state_dir(lab.state_dir)


@pytest.mark.staging_last
def test_destroy_leaves_no_process_netns_interface_socket_or_overlay(staging_lab):
    state = staging_lab.state
    pids = [vm.pid for vm in state.vms.values()] + [state.mesh_pid]
    staging_lab.destroy()
    assert staging_lab.leftovers(state.layout, pids) == []
    staging_lab.destroy()  # a second destroy is harmless
