"""An adapter's command line cannot make the sandbox show folders it hides (issue 12).

The local sandbox hides /tmp, /var/tmp, the data dir and folders the replica user cannot traverse;
it shows the folders of the catalog command's programs (the operator's). Before 2026-11-30 it also
showed the folder of every absolute path in the adapter's own ``command``/``args`` — the creator's
— so any creator could make e.g. another user's /tmp files visible to their replica. Now a
creator's path is shown only under the operator's ``MCPGW_LOCAL_EXPOSE`` folders, after resolving
symlinks (a link inside an allowed folder cannot lead out of it).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from gateway.app import local_runtime_config
from gateway.runtime.local import LocalRuntime
from gateway.settings import Settings
from tests.fixtures.local_runtime import record, write_catalog


def spec_expose(tmp_path: Path, args: list[str], local_expose: tuple[str, ...] = ()) -> tuple[str, ...]:
    catalog = write_catalog(tmp_path / "catalog.toml", {"srv:1": {"command": ["/usr/bin/env", "true"]}})
    runtime = LocalRuntime(
        local_runtime_config(Settings(data_dir=tmp_path / "data", image_catalog=catalog, local_expose=local_expose))
    )
    runtime._catalog.load()
    spec, issue = runtime._resolve(msgspec.structs.replace(record("a", image=("srv", "1")), args=args))
    assert issue is None and spec is not None
    return spec.expose


def test_a_creators_path_is_not_exposed_without_the_operators_leave(tmp_path: Path) -> None:
    private = tmp_path / "someone-elses"
    private.mkdir()
    assert spec_expose(tmp_path, [str(private), "/root", "/run/secrets"]) == ("/usr/bin/env",)


def test_the_operators_folders_may_be_named_but_a_symlink_cannot_lead_out(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "docs").mkdir(parents=True)
    (shared / "escape").symlink_to("/root")
    exposed = spec_expose(
        tmp_path, [str(shared / "docs"), str(shared / "escape"), str(shared / ".." / "x")], (str(shared),)
    )
    assert exposed == ("/usr/bin/env", str(shared / "docs"))
