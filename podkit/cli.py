"""`podkit`: list the programs, or run one as `podkit <program> [options]`."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint, entry_points

GROUP = "podkit.programs"


def programs() -> dict[str, EntryPoint]:
    """Installed programs by name, podkit's own and third parties' alike."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    found = programs()
    if len(argv) > 1 and argv[0] == "help":  # podkit help PROGRAM
        argv = [argv[1], "--help"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(
            "usage: podkit <program> [options]   (podkit help <program> for details)\n"
            "       podkit validate FILE|DIR|-    (check the podkit containers of manifests)\n"
            "       podkit inject FILE|DIR|-      (add programs to workloads by annotation)\n"
        )
        width = max((len(n) for n in found), default=0)
        for name in sorted(found):
            try:
                summary = found[name].load().describe()
            except Exception as exc:  # a broken plugin must not hide the others
                summary = f"(cannot load: {exc})"
            print(f"  {name:<{width}}  {summary}")
        sys.exit(0)
    if argv[0] == "validate":
        from .validate import main as validate

        sys.exit(validate(argv[1:]))
    if argv[0] == "inject":
        from .inject import main as inject

        sys.exit(inject(argv[1:]))
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"podkit {__version__}")
        sys.exit(0)
    name = argv[0]
    if name not in found:
        print(
            f"podkit: error: unknown program {name!r} (run 'podkit' for the list)", file=sys.stderr
        )
        sys.exit(2)
    from .runner import run

    sys.exit(run(found[name].load(), argv[1:]))


if __name__ == "__main__":
    main()
