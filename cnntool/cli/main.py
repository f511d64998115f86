"""The `cnntool` entry point: a lazy click group. `cnntool --help` imports neither torch nor any
command module: the one-line help of each command is kept here, next to where its module lives."""

from __future__ import annotations

import importlib
import os
import sys

import click

from cnntool import __version__
from cnntool.cli import console
from cnntool.core.allocator import keep_large_blocks
from cnntool.errors import CnnToolError, close_matches, os_error_sentence

# command name -> (module:attribute, one-line help shown by `cnntool --help`)
COMMANDS = {
    "models": (
        "cnntool.cli.models:models_command",
        "List the built-in models and torchvision architectures.",
    ),
    "layers": (
        "cnntool.cli.models:layers_command",
        "List every layer of a model: type, output shape, params, aliases.",
    ),
    "predict": (
        "cnntool.cli.predict:predict_command",
        "Classify images: top-k classes per image as JSON Lines.",
    ),
    "profile": (
        "cnntool.cli.profile:profile_command",
        "Count params, MACs/FLOPs, activation memory and receptive fields per layer.",
    ),
    "attack": (
        "cnntool.cli.attack:attack_group",
        "Adversarial examples: FGSM, BIM, PGD (ε sweeps), CW and DeepFool, in pixel space.",
    ),
    "visualize": (
        "cnntool.cli.visualize:visualize_group",
        "Filters, feature maps, top patches, deconv/guided backprop, activation maximization.",
    ),
    "gradcheck": (
        "cnntool.cli.gradcheck:gradcheck_command",
        "Check a model's gradients against finite differences; exit 1 if any is wrong.",
    ),
    "diagnose": (
        "cnntool.cli.diagnose:diagnose_command",
        "Dead, saturated and correlated units, noisy and duplicated filters: what to fix first.",
    ),
    "features": (
        "cnntool.cli.features:features_command",
        "A layer's features for a dataset, streamed to an .npz (paths, labels, features).",
    ),
    "embed": (
        "cnntool.cli.embed:embed_command",
        "Map a dataset's features to 2-D (t-SNE or PCA): scatter plot, image map, quality figures.",
    ),
    "compare": (
        "cnntool.cli.compare:compare_command",
        "CKA between the layers of two models (or of one): heat map, best matches, records.",
    ),
    "microscope": (
        "cnntool.cli.microscope:microscope_command",
        "One offline website of what a model has learned on DATA: layers, units, map, findings.",
    ),
}


class PipeClosed(BaseException):
    """The reader of stdout went away (`| head -1`). A BaseException so that click's own
    handling of EPIPE (exit code 1) does not see it: a closed pipe is a normal end."""


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use: name -> (module:attribute, one-line
    help)."""

    def __init__(self, *args, commands_table=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.table = COMMANDS if commands_table is None else commands_table

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise PipeClosed() from None
        except EOFError as exc:  # click would call it Ctrl-D/Ctrl-C ("aborted", 130)
            raise RuntimeError(f"a file ended too early ({exc or 'EOF'})") from exc

    def list_commands(self, ctx):
        return list(self.table)

    def get_command(self, ctx, name):
        if name in self.table:
            module_name, attribute = self.table[name][0].split(":")
            return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx, formatter):  # the short help above: no command module imported
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in self.table.items()])

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name and not name.startswith("-") and name not in self.table:
            matches = close_matches(name, self.table)
            hint = f" Did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
            ctx.fail(f"No such command '{name}'.{hint}")
        return super().resolve_command(ctx, args)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Example: cnntool profile alexnet --format table",
)
@click.version_option(__version__, prog_name="cnntool")
@click.option("--debug", is_flag=True, help="Show the full traceback when something fails.")
def cli(debug: bool) -> None:
    """Look inside trained convolutional networks.

    Results for pipelines go to stdout (JSON Lines by default); progress, tables and
    warnings go to stderr.
    """


def main(argv=None) -> None:
    """Run the CLI: user mistakes end in one sentence on stderr and exit code 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CNNTOOL_DEBUG") == "1"
    if not debug:
        console.warnings_as_lines()
    _file_names_as_bytes(sys.stdout)
    keep_large_blocks()  # a scan's large activations are reused, not faulted in afresh
    try:
        result = cli.main(args=argv, prog_name="cnntool", standalone_mode=False)
    except (click.exceptions.Exit, click.ClickException) as exc:
        if isinstance(
            exc, click.ClickException
        ):  # it quotes the command line: no control characters
            exc.show(file=console.PrintableStream(sys.stderr))
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        sys.stderr.write(
            "aborted\n" if isinstance(exc, click.exceptions.Abort) else "interrupted\n"
        )
        sys.exit(130)
    except (BrokenPipeError, PipeClosed):
        _quiet_stdout()
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - the one place where every failure is reported
        if debug:
            raise
        known = isinstance(exc, CnnToolError)
        if known:
            console.error(str(exc))
        elif isinstance(exc, OSError):  # a full disk, a read-only folder… wherever it happened
            console.error(os_error_sentence(exc))
        else:
            console.error(
                f"unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)"
            )
        sys.exit(exc.exit_code if known else 1)
    try:
        sys.stdout.flush()  # a pipe closed after the last write fails here, not at exit
    except BrokenPipeError:
        _quiet_stdout()
    sys.exit(result if isinstance(result, int) else 0)


def _file_names_as_bytes(stream) -> None:
    """A file name that is not valid UTF-8 (b'\\xff.jpg') reaches us as a str with escaped
    bytes (surrogateescape); print it as those bytes, as `ls` and `find` do, instead of failing
    on it. Python does so already in the C/POSIX locales; this does it in every locale."""
    if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
        stream.reconfigure(errors="surrogateescape")


def _quiet_stdout() -> None:
    """The reader of stdout went away (e.g. `| head`): not an error of ours. Point stdout at
    /dev/null so that the interpreter's last flush does not complain either."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
