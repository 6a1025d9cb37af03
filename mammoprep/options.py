"""Click options shared by several commands (one definition each)."""

from __future__ import annotations

import click


def _decoder_choices() -> list[str]:
    from . import decoders

    return decoders.names()


decoder_option = click.option(
    "--decoder", default=None, metavar="NAME",
    help="Preferred pixel decoder plug-in (libjpeg-turbo, charls, openjph, pydicom). Default: the "
         "fastest installed one; all give identical pixels.",
    callback=lambda ctx, param, value: _check_decoder(value))

salt_option = click.option(
    "--salt", envvar="MAMMOPREP_SALT", default=None, show_envvar=True,
    help="Pseudonymisation salt for patient/study hashes. Default: a random per-user salt "
         "kept in ~/.config/mammoprep/salt.")

jobs_option = click.option(
    "-j", "--jobs", type=click.IntRange(min=0), default=0, show_default=True,
    help="Worker processes (0 = all cores).")


def _check_decoder(value: str | None) -> str | None:
    if value is not None and value not in _decoder_choices():
        raise click.BadParameter(f"unknown decoder {value!r}; choose from "
                                 f"{', '.join(_decoder_choices())}", param_hint="--decoder")
    return value
