"""An analysis's output (PNG files and a JSON sidecar) and its reproduction from the sidecar (torch-free here).

The sidecar holds everything the files depend on: the resolved settings
(``model_core.analysis.requests``), the uploaded inputs by sha256, the
provenance (code and library versions, sha256 of every network's weights,
device, torch threads) and the summary numbers, plus the sha256 of each file.
``reproduce`` runs the same analysis from it and compares: the files must be
identical byte for byte and the summary equal. Runs are deterministic given
the same code, libraries, weights, device and thread count; the sidecar
records all of them, and ``reproduce`` names any that differ.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from model_core.files import atomic_write_bytes, atomic_write_text, sha256_bytes

FORMAT = "rguide-analysis/1"
INPUTS_DIR = "inputs"


@dataclass
class Output:
    kind: str
    settings: dict[str, Any]
    files: dict[str, bytes]                  # name -> bytes (PNGs, a markdown table)
    summary: dict[str, Any]
    provenance: dict[str, Any]
    inputs: list[dict[str, Any]] = field(default_factory=list)  # uploads: {"sha256", "label", "file"}
    extra: dict[str, Any] = field(default_factory=dict)          # more sidecar entries (seeds, notes)

    def sidecar(self) -> dict[str, Any]:
        from model_core.analysis import kinds

        command = kinds.get(self.kind).command
        return {"format": FORMAT, "analysis": self.kind, "command": command, "settings": self.settings,
                "inputs": self.inputs, **self.extra, "provenance": self.provenance, "summary": self.summary,
                "files": {name: sha256_bytes(data) for name, data in self.files.items()},
                "reproduce": f"rguide viz reproduce {self.kind}.json --out DIR"}


def sidecar_name(kind: str) -> str:
    return f"{kind}.json"


def write(output: Output, out_dir: str | Path, uploads: dict[str, bytes] | None = None) -> Path:
    """Write the files, the uploaded inputs (``inputs/<sha256>.png``) and ``<kind>.json``; returns the sidecar path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in output.files.items():
        atomic_write_bytes(out / name, data)
    for sha, data in (uploads or {}).items():
        atomic_write_bytes(out / INPUTS_DIR / f"{sha}.png", data)
    path = out / sidecar_name(output.kind)
    atomic_write_text(path, json.dumps(output.sidecar(), indent=2, sort_keys=False) + "\n")
    return path


def read(path: str | Path) -> dict[str, Any]:
    from model_core.errors import InputError

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable JSON sidecar ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: not an analysis sidecar (no \"format\": \"{FORMAT}\")")
    return data


@dataclass
class Comparison:
    identical: bool
    differences: list[str]
    environment: list[str]   # provenance entries that differ (why bytes may differ)


def compare(old: dict[str, Any], new: dict[str, Any]) -> Comparison:
    diffs = []
    for name, sha in old["files"].items():
        got = new["files"].get(name)
        if got != sha:
            diffs.append(f"{name}: sha256 {sha[:12]}... then, {str(got)[:12]}... now")
    for name in set(new["files"]) - set(old["files"]):
        diffs.append(f"{name}: new file")
    if old.get("summary") != new.get("summary"):
        diffs.append("summary numbers differ")
    env = sorted(k for k in set(old.get("provenance", {})) | set(new.get("provenance", {}))
                 if old.get("provenance", {}).get(k) != new.get("provenance", {}).get(k))
    return Comparison(not diffs, diffs, env)


def upload_finder(directory: str | Path) -> Callable[[str], bytes]:
    """Reads ``<directory>/<sha256>.png`` and checks its hash (inputs next to a sidecar, or any folder)."""
    from model_core.errors import InputError

    root = Path(directory)

    def find(sha: str) -> bytes:
        path = root / f"{sha}.png"
        try:
            data = path.read_bytes()
        except OSError:
            raise InputError(f"input image {sha[:12]}... not found at {path}") from None
        if sha256_bytes(data) != sha:
            raise InputError(f"{path}: its sha256 is not {sha}: the file was changed")
        return data

    return find


def run(kind: str, settings: dict[str, Any], **kwargs) -> Output:
    """Run analysis ``kind`` on resolved settings (keyword arguments: ``find_upload``, ``device``, ``progress``)."""
    from model_core.analysis import kinds

    return kinds.load(kind)(settings, **kwargs)


def reproduce(path: str | Path, *, inputs_dir: str | Path | None = None, device: str | None = None,
              progress=None) -> tuple[Output, Comparison]:
    """Run the analysis a sidecar describes again; its uploads are read from ``inputs_dir`` (default: beside it).

    The device defaults to the one the sidecar records, since another device may round differently.
    """
    path = Path(path)
    old = read(path)
    finder = upload_finder(inputs_dir or path.parent / INPUTS_DIR) if old.get("inputs") else None
    device = device or old.get("provenance", {}).get("device")
    output = run(old["analysis"], old["settings"], find_upload=finder, device=device, progress=progress)
    return output, compare(old, output.sidecar())
