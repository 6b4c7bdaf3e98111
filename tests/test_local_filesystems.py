"""Which filesystem holds a path: the longest mount point above it in /proc/self/mountinfo (nested mounts, escaped
names, a mount hiding an earlier one), so that network drives are told from local disks."""

from __future__ import annotations

import sys

import pytest
from deepraster.models import local_filesystems

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the mount table is Linux's")

MOUNTS = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /data/shared rw,relatime shared:5 - nfs4 server:/export rw
31 22 0:41 / /media/usb\\040stick rw,relatime - vfat /dev/sdb1 rw
32 22 0:42 / /srv rw - ext4 /dev/sdc1 rw
33 32 0:43 / /srv rw - cifs //nas/srv rw
34 22 0:44 /@data /data rw,relatime shared:7 - btrfs /dev/sda2 rw,subvol=/@data
"""


@pytest.fixture
def mounts(tmp_path, monkeypatch):
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTS, encoding="utf-8")
    monkeypatch.setattr(local_filesystems, "MOUNTINFO", table)


@pytest.mark.parametrize(("path", "kind", "local"), [
    ("/usr/share/x.tif", "ext4", True),
    ("/data/ana/.cache/deepraster", "btrfs", True),  # a subvolume: its st_dev is not in the table
    ("/data/shared/models/w.safetensors", "nfs4", False),
    ("/data/sharedx/w.bin", "btrfs", True),  # a prefix of the name, not a folder above it
    ("/media/usb stick/scene.tif", "vfat", False),
    ("/srv/data.tif", "cifs", False),  # mounted over the ext4 one: the later mount is what is seen
])
def test_the_longest_mount_point_above_a_path_decides(mounts, path, kind, local):
    assert local_filesystems.filesystem_type(path) == kind
    assert local_filesystems.on_local_filesystem(path) is local


def test_an_unreadable_mount_table_means_not_local(tmp_path, monkeypatch):
    monkeypatch.setattr(local_filesystems, "MOUNTINFO", tmp_path / "missing")
    assert local_filesystems.filesystem_type("/") is None and not local_filesystems.on_local_filesystem("/")
