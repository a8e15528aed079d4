"""One exception type for problems the user can fix: bad config, bad input files, bad requests.

The CLI prints these as one clear line (no traceback) and exits non-zero. Anything else is a bug in
londinium and keeps its traceback.
"""


class LondiniumError(Exception):
    """A problem with the user's input: the message names the file, source or field and what to do."""


class ConfigError(LondiniumError):
    """The configuration is invalid: unknown key, wrong type, bad value."""


class SourceError(LondiniumError):
    """A corpus source could not be fetched or read. The corpus build records it and goes on."""


class PathError(LondiniumError):
    """A path is the wrong kind (a file where a folder belongs, or the reverse) or cannot be written."""


class DiskFull(PathError):
    """A write ran out of space (or quota): the message names the path and the free space there."""


class Busy(LondiniumError):
    """Another process is running the same stage on the same outputs: the message names it (pid, command)."""
