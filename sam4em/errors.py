"""User-facing errors: the CLI prints them as one line and exits with status 2."""


class Sam4emError(Exception):
    """An error caused by the user's input (config, files, arguments), not by a bug."""


class ConfigError(Sam4emError):
    """The configuration is invalid: a key has a wrong type, value or points at nothing."""


class InputDataError(Sam4emError):
    """An input volume or label source cannot be read or does not fit the others."""


class OutputError(Sam4emError):
    """An output path cannot be written without destroying something that is not ours."""
