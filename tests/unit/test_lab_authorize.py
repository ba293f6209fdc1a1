"""``lab.authorize``: a reused lab host accepts the stack's current key, and never writes through a link."""

from __future__ import annotations

import pytest

from ollastack import lab


def test_the_key_is_replaced_with_mode_0600(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "root").mkdir(parents=True)
    lab.authorize(rootfs, "ssh-ed25519 AAAAold old\n")
    lab.authorize(rootfs, "ssh-ed25519 AAAAnew new")
    keys = rootfs / "root/.ssh/authorized_keys"
    assert keys.read_text() == "ssh-ed25519 AAAAnew new\n"
    assert keys.stat().st_mode & 0o777 == 0o600 and keys.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("link", ["root/.ssh/authorized_keys", "root/.ssh"])
def test_a_link_inside_the_guest_is_refused_and_its_target_untouched(tmp_path, link):
    rootfs, target = tmp_path / "rootfs", tmp_path / "outside"
    (rootfs / "root/.ssh").mkdir(parents=True)
    target.mkdir()
    (target / "authorized_keys").write_text("mine\n")
    if link.endswith(".ssh"):
        (rootfs / "root/.ssh").rmdir()
        (rootfs / link).symlink_to(target)
    else:
        (rootfs / link).symlink_to(target / "authorized_keys")
    with pytest.raises(lab.LabError):
        lab.authorize(rootfs, "ssh-ed25519 AAAAnew new")
    assert (target / "authorized_keys").read_text() == "mine\n"
