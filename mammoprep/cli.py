"""`mammoprep` command line. Commands live in :mod:`mammoprep.commands` and are imported
lazily, so ``mammoprep --help`` and each command start fast (no torch, no unused codecs)."""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute"; each module holds one thin click command.
COMMANDS: dict[str, str] = {
    "inspect": "mammoprep.commands.inspect:inspect_cmd",
    "synth": "mammoprep.commands.synth:synth_cmd",
    "reference": "mammoprep.commands.harmonize:reference_cmd",
    "harmonize": "mammoprep.commands.harmonize:harmonize_cmd",
    "preview": "mammoprep.commands.harmonize:preview_cmd",
    "shard": "mammoprep.commands.shard:shard_cmd",
    "verify": "mammoprep.commands.shard:verify_cmd",
}

_HELP = {
    "inspect": "Decode DICOMs and print metadata, decode status and pixel statistics.",
    "synth": "Write a deterministic synthetic multi-vendor cohort (LUMINA layout).",
    "reference": "Build a low-energy harmonisation reference (.npz) from DICOMs.",
    "harmonize": "Remove burned-in text and CDF-match DICOMs to a reference.",
    "preview": "Before/after PNG of harmonisation with histograms.",
    "shard": "Write WebDataset shards and Parquet manifests.",
    "verify": "Check shards against their manifests.",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._available(name):
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _HELP.get(name, "")) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mammoprep")
def main() -> None:
    """Turn DICOM mammograms from any vendor into training-ready data.

    \b
    Typical flow:
      mammoprep synth cohort/ --patients 20 --seed 0
      mammoprep inspect cohort/
      mammoprep reference cohort/ -o ref.npz --only-energy low
      mammoprep harmonize --ref ref.npz cohort/ -o harmonised/
    """


if __name__ == "__main__":  # pragma: no cover
    main()
