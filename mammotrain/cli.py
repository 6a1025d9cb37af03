"""`mammotrain` command line (training commands arrive with the trainer issues)."""

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mammoprep")
def main() -> None:
    """Train and evaluate mammography models on mammoprep WebDataset shards."""


if __name__ == "__main__":  # pragma: no cover
    main()
