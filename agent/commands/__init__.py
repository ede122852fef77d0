"""Sub-commands of ``cmagent``.

Each module here defines ``register(subparsers)``, which adds one
sub-command whose parser has a ``handler`` default: a callable taking the
parsed arguments and returning the exit status. ``agent.cli`` finds the
modules by listing this package, so adding a command touches no other file.
"""
