"""Conversion: a snapshot's boot disk -> a qcow2 that boots on the target's virtio hardware.

``convert(source, boot_device, work_dir)`` works on a disk file or stream; `SnapshotConverter` is the job
runner's `Converter` over the chunk store's snapshots.
"""

from __future__ import annotations

from pathlib import Path

from rehost.conversion.convert import ConvertedImage, convert
from rehost.jobs.interfaces import SnapshotRef

__all__ = ["ConvertedImage", "SnapshotConverter", "convert"]


class SnapshotConverter:
    """`rehost.jobs.interfaces.Converter` reading snapshots from the chunk store in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)

    def convert(self, snapshot: SnapshotRef, boot_device: str, work_dir: Path) -> ConvertedImage:
        """Export every disk of ``snapshot`` (sparse raw), convert ``boot_device`` and keep the others, in
        the snapshot's order, as the instance's further disks; raises ConversionError."""
        from rehost.chunkstore.snapshots import SnapshotStore
        from rehost.errors import ConversionError, RehostError

        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        export = work_dir / "snapshot.raw"
        others = [(name, work_dir / f"snapshot-{n}.raw")
                  for n, name in enumerate((d for d in snapshot.disks if d != boot_device), start=1)]
        try:
            with SnapshotStore.open(self.data_dir, create=False) as store:
                for name, path in [(boot_device, export), *others]:
                    try:
                        store.export(snapshot.source_server_id, snapshot.snapshot_id, name, path, fmt="raw")
                    except RehostError as exc:
                        raise ConversionError(f"cannot read {name} of {snapshot.snapshot_id}: {exc.message}") from exc
        except RehostError as exc:
            for _, path in [(boot_device, export), *others]:
                path.unlink(missing_ok=True)
            if isinstance(exc, ConversionError):
                raise
            raise ConversionError(f"cannot read the snapshot {snapshot.snapshot_id}: {exc.message}") from exc
        try:
            return convert(export, boot_device, work_dir, consume=True, other_disks=others)
        finally:
            for _, path in [(boot_device, export), *others]:
                path.unlink(missing_ok=True)

    def inspect(self, snapshot: SnapshotRef, boot_device: str, work_dir: Path) -> dict[str, object]:
        """Pre-flight: what converting ``snapshot`` would do, or why it would fail, read in place from the
        chunk store (nothing copied, nothing written); see `rehost.conversion.inspect`."""
        import tempfile

        from rehost.conversion.inspect import inspect_snapshot

        work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=work_dir, prefix="preflight-") as tmp:
            return inspect_snapshot(self.data_dir, snapshot.source_server_id, snapshot.snapshot_id,
                                    list(snapshot.disks), boot_device, Path(tmp)).as_dict()
