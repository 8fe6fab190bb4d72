"""`motex`: the command line, a thin layer over the Python API.

    motex run CAMPAIGN.yaml            run, resume or extend a campaign
    motex status STORE [--json]        how far a campaign is (STORE: the store, or the campaign file)
    motex explain STORE                steps 3-4 again on a finished or partial store
    motex report STORE                 one self-contained HTML page
    motex pdf STRUCTURE -o OUT.gr      the PDF of any structure file
    motex submit CAMPAIGN --cluster P  a batch script that runs the whole campaign in an allocation
    motex init STRUCTURE DATA          a commented campaign file to start from
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import logging
import os
import sys
import typing
from pathlib import Path

from .errors import EXIT_CODES, InputError, Interrupted, MotexError, OutOfSpaceError

log = logging.getLogger("motex_dask")


#: Write failures that are the environment's, not a bug: one line, exit 2 (3 for a full disk).
_WRITE_ERRORS = {
    errno.ENOSPC: "free some space or point the output/store elsewhere",
    errno.EDQUOT: "free some space or point the output/store elsewhere",
    errno.EFBIG: "raise the file size limit (ulimit -f) or write elsewhere",
    errno.EROFS: "point the output/store to a writable folder",
    errno.EACCES: "point the output/store to a folder you can write to",
    errno.EPERM: "point the output/store to a folder you can write to",
    errno.ENOENT: "create the folder first or choose another path",
    errno.ENOTDIR: "part of the path is a file, not a folder; choose another path",
}


#: Write failures that are a full disk or quota: a run-time condition (OutOfSpaceError's exit code).
_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
#: Help of the STORE argument (status, explain, stability, report).
STORE_HELP = "the campaign's store (folder or URL), or the campaign file that wrote it"


def _setup_logging(quiet: bool, verbose: bool) -> None:
    """One logger, `motex_dask`, to stderr: INFO by default, WARNING with -q, DEBUG with -v."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("motex: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    # Dask's own INFO lines (worker start/stop, ...) drown the progress bar; keep them for -v. The
    # variable reaches distributed when it is imported later, and the worker processes; a user's own wins.
    dask_level = "info" if verbose else "error" if quiet else "warning"
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", dask_level)
    for name in ("distributed", "dask_jobqueue"):
        logging.getLogger(name).setLevel(dask_level.upper())


def _os_error(err: BaseException) -> OSError | None:
    """The OSError behind an exception, also when it was re-raised wrapped (``raise … from``, groups).

    Not ``__context__``: a bug raised while handling an OSError must still show its traceback.
    """
    todo, seen = [err], set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError):
            return e
        todo += [e.__cause__] if e.__cause__ is not None else []
        todo += list(getattr(e, "exceptions", ()))  # ExceptionGroup
    return None


def _write_targets(args: argparse.Namespace) -> str:
    """Where the command writes, for an OSError that names no file (ENOSPC on write() names none)."""
    if getattr(args, "output", None):
        return str(args.output)
    if getattr(args, "campaign", None):
        from .campaign_file import load_campaign

        try:
            campaign = load_campaign(args.campaign)
        except InputError:
            return str(args.campaign)
        return f"{campaign.store_path} or {campaign.output}"
    return str(getattr(args, "store", "the output folder"))


def _os_error_line(err: OSError, args: argparse.Namespace) -> str:
    """One line for an OSError: the path, what happened and what to do."""
    where = err.filename if err.filename is not None else _write_targets(args)
    what = err.strerror or str(err) or type(err).__name__
    hint = _WRITE_ERRORS.get(err.errno)
    text = f"{where}: {what}" + (f"; {hint}" if hint else "")
    if hint and err.errno in _OUT_OF_SPACE and getattr(args, "campaign", None):
        text += "; finished chunks are kept, run again to resume"
    return text


def cmd_run(args: argparse.Namespace) -> int:
    if args.dry_run:  # every input is checked as a real run checks it, then nothing is started
        from .inputs import prepare
        from .cluster import job_script, load_profile
        from .campaign_file import load_campaign

        campaign = prepare(load_campaign(args.campaign)).campaign
        profile = load_profile(args.cluster or campaign.cluster, base_dir=campaign.path.parent)
        if profile.kind == "local":
            print(job_script(profile))
            return 0
        for stage in ("fit", "learn"):  # the two stages submit differently sized worker jobs
            print(f"# --- {stage} stage worker job ---\n{job_script(profile, stage)}")
        return 0
    from .campaign import run_campaign

    if args.allocation:  # one srun task of `motex submit --nodes` (scheduler, client or worker)
        from .cluster import allocation_client, load_profile

        profile = load_profile(args.cluster or "slurm")
        with allocation_client(profile, args.credentials) as client:
            if client is None:
                return 0
            run_campaign(args.campaign, cluster=args.cluster, fits_only=args.fits_only, progress=False,
                         client=client)
        return 0
    summary = run_campaign(args.campaign, cluster=args.cluster, fits_only=args.fits_only,
                           progress=not args.quiet)
    if not args.quiet:
        outputs = summary.get("outputs", {})
        for name, path in outputs.items():
            print(f"{name}: {path}")
    return 0


def _store(arg: str) -> str:
    """The store a STORE argument names: a store's folder or URL as given, or a campaign file's store
    (users type the file they ran; the store's default place is inside its output folder)."""
    if Path(arg).suffix.lower() not in (".yaml", ".yml"):
        return arg
    if not Path(arg).is_file():
        raise InputError(f"{arg}: no such campaign file; give the campaign file you ran, or its store")
    from .campaign_file import load_campaign

    return load_campaign(arg).store_path


def cmd_status(args: argparse.Namespace) -> int:
    from .store import format_status, status_report

    report = status_report(_store(args.store))
    print(json.dumps(report, indent=2) if args.json else format_status(report))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from .campaign import explain_store
    from .store import CampaignStore

    summary = explain_store(CampaignStore.open_readonly(_store(args.store)), output_dir=args.output, cluster=args.cluster)
    for name, path in summary.get("outputs", {}).items():
        print(f"{name}: {path}")
    return 0


def cmd_stability(args: argparse.Namespace) -> int:
    from .campaign import stability_store
    from .stability import format_report
    from .store import CampaignStore

    result = stability_store(CampaignStore.open_readonly(_store(args.store)), steps=args.steps, output=args.output,
                             cluster=args.cluster)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"ranking stability of {result['store']} ({result['source']}); stable: at most "
          f"{result['rule']['tolerance']:g}·N atoms crossed and tau >= {result['rule']['min_tau']:g}, "
          f"{result['rule']['patience']} times in a row")
    print(format_report(result["rows"]))
    print("the ranking is stable" if result["stable"] else "the ranking is not stable yet: fit more candidates")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .htmlreport import write_html_report

    print(write_html_report(_store(args.store), args.output, outputs=args.outputs))
    return 0


#: `motex pdf` numeric options and their defaults.
_PDF_NUMBERS = {"qmin": 0.7, "qmax": 20.0, "qdamp": 0.05, "qbroad": 0.01, "rmin": 1.0, "rmax": 20.0,
                "rstep": 0.01, "zoom": 1.0, "delta1": 0.0, "delta2": 0.0}


def cmd_pdf(args: argparse.Namespace) -> int:
    import numpy as np

    from .pdf import check_settings, pdf_from_atoms, write_gr
    from .structure import check_radiation, read_structure

    out = Path(args.output)
    if out.exists() and not args.overwrite:  # e.g. -o data.gr would replace the measured data
        raise InputError(f"{out}: already exists; choose another name, or add --overwrite to replace it")
    numbers = {name: getattr(args, name) for name in _PDF_NUMBERS}
    problems = check_settings(**numbers)
    if problems:
        name, problem = problems[0]
        raise InputError(f"option --{name}: {problem}")
    atoms = read_structure(args.structure)
    check_radiation(atoms, args.radiation, args.structure)
    uiso = _uiso_option(args.uiso, atoms.get_chemical_symbols())
    settings = {**numbers, "radiation": args.radiation}
    r, g = pdf_from_atoms(atoms.get_chemical_symbols(), atoms.get_positions(), uiso=uiso, **settings)
    if not np.isfinite(g).all():  # never write NaN; the ranges above should make this unreachable
        raise InputError(f"{args.structure}: the PDF is not finite with these settings; check the coordinates")
    shown = " ".join(f"{e}={u}" for e, u in uiso.items()) if isinstance(uiso, dict) else uiso
    write_gr(out, r, g, {"structure": str(Path(args.structure).resolve()), **settings, "uiso": shown})
    log.info("wrote %s (%d points)", out, len(r))
    return 0


def _uiso_option(values: list[str] | None, symbols: list[str]) -> float | dict[str, float]:
    """--uiso VALUE (every atom) or one --uiso EL=VALUE per element of the structure."""
    from .pdf import check_settings

    values = values or ["0.005"]
    elements = list(dict.fromkeys(symbols))
    per_element: dict[str, float] = {}
    single = []
    for text in values:
        element, _, number = text.rpartition("=")
        try:
            value = float(number)
        except ValueError:
            raise InputError(f"option --uiso: {text!r} is not a number or EL=VALUE (e.g. --uiso 0.005 or "
                             "--uiso W=0.004 --uiso O=0.012)") from None
        problems = check_settings(uiso=value)
        if problems:
            raise InputError(f"option --uiso: {problems[0][1]}" + (f" for {element}" if element else ""))
        if not element:
            single.append(value)
        elif element not in elements:
            raise InputError(f"option --uiso: the structure holds no {element!r} (its elements: "
                             f"{', '.join(elements)})")
        elif element in per_element:
            raise InputError(f"option --uiso: {element} is given twice; give one --uiso {element}=VALUE")
        else:
            per_element[element] = value
    if single and (per_element or len(single) > 1):
        raise InputError("option --uiso: give one --uiso VALUE for every atom, or one --uiso EL=VALUE per "
                         "element, not both")
    if single:
        return single[0]
    missing = [e for e in elements if e not in per_element]
    if missing:
        raise InputError(f"option --uiso: no Uiso for element(s) {', '.join(missing)}; add "
                         + " ".join(f"--uiso {e}=VALUE" for e in missing))
    return per_element


def cmd_submit(args: argparse.Namespace) -> int:
    from .cluster import load_profile, submit_batch_script, write_batch_script
    from .campaign_file import load_campaign

    campaign = load_campaign(args.campaign)
    profile = load_profile(args.cluster, base_dir=campaign.path.parent)
    out = Path(args.output) if args.output else campaign.path.with_suffix(f".{profile.kind}.sh")
    script = write_batch_script(campaign.path, profile, out, nodes=args.nodes)
    print(script)
    if args.now:
        print(f"submitted job {submit_batch_script(script, profile)}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from .init_template import write_campaign_template

    print(write_campaign_template(args.structure, args.data, args.permute, Path(args.output)))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, ``error: …``, like every other motex error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


@functools.cache  # one parser per process: building it looks up translations on disk (slow in loops)
def build_parser() -> argparse.ArgumentParser:
    # -q/-v work before and after the command (`motex -q run x.yaml`, `motex run x.yaml -q`);
    # SUPPRESS keeps a subcommand's unset flag from overwriting the top-level one.
    common = _Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="warnings and errors only, no progress bar")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    codes = "\n".join(f"  {code:>3}  {what}" for code, what in EXIT_CODES.items())
    parser = _Parser(prog="motex", description="ML-MotEx motif extraction as a Dask campaign.",
                     epilog=f"exit codes:\n{codes}\n\n-v shows the traceback behind an error.",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", parents=[common], help="run, resume or extend a campaign")
    p.add_argument("campaign", help="campaign file (YAML)")
    p.add_argument("--cluster", help="cluster profile name or file (overrides the campaign's)")
    p.add_argument("--dry-run", action="store_true",
                   help="check every input, print the worker job script and exit (nothing is written)")
    p.add_argument("--fits-only", action="store_true", help="stop after the fit stage (steps 1-2)")
    # Written into the scripts of `motex submit --nodes`, not typed by people.
    p.add_argument("--allocation", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--credentials", type=Path, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", parents=[common], help="progress of a campaign store")
    p.add_argument("store", help=STORE_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("explain", parents=[common], help="steps 3-4 (learn, SHAP, outputs) on a store")
    p.add_argument("store", help=STORE_HELP)
    p.add_argument("-o", "--output", help="output folder (default: the campaign's; beside the store when "
                                          "it was moved or copied)")
    p.add_argument("--cluster", help="cluster profile name or file")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("stability", parents=[common], help="how much the atom ranking still moves (any store)")
    p.add_argument("store", help=STORE_HELP)
    p.add_argument("--steps", type=int, default=5, help="growing prefixes to compare (stores without rounds)")
    p.add_argument("-o", "--output", help="also plot the report into this PNG")
    p.add_argument("--cluster", help="cluster profile name or file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_stability)

    p = sub.add_parser("report", parents=[common], help="a self-contained HTML report of a store's outputs")
    p.add_argument("store", help=STORE_HELP)
    p.add_argument("-o", "--output", help="HTML file (default: report.html in the output folder)")
    p.add_argument("--outputs", help="folder `motex explain -o` wrote (default: the campaign's output folder; "
                                     "beside the store when it was moved or copied)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("pdf", parents=[common], help="the PDF G(r) of a structure file")
    p.add_argument("structure")
    p.add_argument("-o", "--output", required=True, help="two-column text file r G")
    from .settings import SETTING_RANGES  # here, not at the top: `motex --help` stays quick

    for name, default in _PDF_NUMBERS.items():
        lo, hi, lo_ok = SETTING_RANGES[name]
        p.add_argument(f"--{name}", type=float, default=default,
                       help=f"(default {default}; {'[' if lo_ok else '('}{lo:g}, {hi:g}])")
    p.add_argument("--uiso", action="append", metavar="VALUE | EL=VALUE",
                   help="Å²: one Uiso for every atom (default 0.005; (0, 1]), or repeated as --uiso EL=VALUE, "
                        "one per element of the structure")
    p.add_argument("--radiation", choices=("xray", "neutron"), default="xray")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.gr if it exists")
    p.set_defaults(func=cmd_pdf)

    p = sub.add_parser("submit", parents=[common],
                       help="write (and with --now submit) a batch script for the whole campaign")
    p.add_argument("campaign")
    p.add_argument("--cluster", required=True, help="cluster profile name or file (slurm, pbs, ...)")
    p.add_argument("-o", "--output", help="script path (default: next to the campaign file)")
    p.add_argument("--now", action="store_true", help="submit it with sbatch/qsub")
    p.add_argument("--nodes", type=int, help="one SLURM allocation of N nodes (each the size of one profile job) "
                   "that runs scheduler, client and workers; default: the whole campaign in one job")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("init", parents=[common],
                       help="write a commented campaign file for a structure and a data file")
    p.add_argument("structure")
    p.add_argument("data")
    p.add_argument("--permute", nargs="+", help="elements to permute (default: the heaviest element)")
    p.add_argument("-o", "--output", default="campaign.yaml")
    p.set_defaults(func=cmd_init)
    return parser


def _one_line(text: str) -> str:
    """A message on one line (a library's multi-line reason joined with '; ')."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or "(no details)"


def _fail(err: BaseException, prefix: str, message: str, code: int) -> int:
    """Print one `prefix: message` line (after the traceback with -v) and return the exit code."""
    log.debug("the traceback behind the error below:", exc_info=err)
    print(f"{prefix}: {_one_line(message)}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit 0, or one ``error:`` line and its kind's exit code (errors.EXIT_CODES)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a usage error already printed as one line
        return int(done.code or 0)
    _setup_logging(args.quiet, args.verbose)
    try:
        return args.func(args)
    except Interrupted as err:  # Ctrl-C while a campaign was running: what is saved, how to resume
        return _fail(err, "interrupted", str(err), err.exit_code)
    except KeyboardInterrupt as err:
        return _fail(err, "interrupted", "nothing was written", 130)
    except MotexError as err:
        return _fail(err, "error", str(err), err.exit_code)
    except Exception as err:
        os_err = _os_error(err)
        if os_err is None:
            raise  # a bug: the traceback is what a bug report needs
        code = (OutOfSpaceError.exit_code if os_err.errno in _OUT_OF_SPACE
                else InputError.exit_code if os_err.errno in _WRITE_ERRORS else 1)
        return _fail(err, "error", _os_error_line(os_err, args), code)


if __name__ == "__main__":
    sys.exit(main())
