"""The ``chordrec`` command (:func:`main`), one module per group of subcommands, each
command's parser next to its handler: :mod:`.data`, :mod:`.servers`,
:mod:`.transcription`, :mod:`.results`; :mod:`.options` holds the options they share and
:mod:`.program` the program."""

from chordrec.cli.program import build_parser, main

__all__ = ["build_parser", "main"]
